"""ImageReward-v1.0 (docs/protocols.md §5): BLIP ViT-L image tokens -> BERT with cross-attention -> CLS -> MLP reward.

The official weights `ImageReward.pt` are mapped onto transformers' `BlipVisionModel` / `BlipTextModel`
(`metrics.image_reward_model`), so the `image-reward` package and its old pins are not needed.
Benchmark (§5.1): 100 prompts x 10 images `<id>_<j>.<ext>`; score = mean of per-prompt means.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torchvision.transforms as T
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from PIL import Image
from tqdm.auto import tqdm
from transformers import BertTokenizer

from metrics.base import (
    ONE_PROCESS,
    FeatureCache,
    Metric,
    MetricError,
    Result,
    WorkShare,
    image_key,
    package_versions,
    sha256_file,
)
from metrics.image_reward_model import REWARD_MEAN, REWARD_STD, ImageRewardWeightsError, RewardArch, load_model
from metrics.images import IMAGE_EXTENSIONS, ImageFileDataset, ImageItem, ImageSet

HF_REPO = "THUDM/ImageReward"
WEIGHTS_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
OFFICIAL_DOWNLOAD_ROOT = Path("~/.cache/ImageReward")      # where `ImageReward.load()` puts both files
TOKENIZER_REPOS = ("bert-base-uncased", "google-bert/bert-base-uncased")
MAX_LENGTH = 35                                             # ImageReward.py tokenizer call (§5.2)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_ARCH = RewardArch()                                 # ImageReward-v1.0 (frozen, so one shared default is safe)
# med_config.json fields that decide the text tower; `encoder_width` is overridden by BLIP_Pretrain (= ViT width).
_MED_FIELDS = {"hidden_size": "text_width", "num_hidden_layers": "text_depth", "num_attention_heads": "text_heads",
               "intermediate_size": "text_intermediate", "vocab_size": "vocab_size",
               "max_position_embeddings": "max_positions", "layer_norm_eps": "text_eps"}


@dataclass(frozen=True)
class ImageRewardConfig:
    weights_path: str | None = None      # ImageReward.pt (default: ~/.cache/ImageReward, the HF cache, download)
    med_config_path: str | None = None   # med_config.json (same places); checked against the architecture
    tokenizer_path: str | None = None    # folder with bert-base-uncased vocab.txt (default: the HF cache)
    download: bool = True                # fetch from the HF hub when not found and HF_HUB_OFFLINE is unset
    precision: str = "fp32"              # the official scorer runs fp32; "bf16"/"fp16" for speed (head stays fp32)
    batch_size: int = 32
    num_workers: int = 4
    device: str | None = None
    cache_dir: str | None = None         # per-image rewards are cached here so interrupted runs resume
    key_mode: str = "stat"


# ----------------------------------------------------------------------------------------------
# Files: weights, med_config, tokenizer.

def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def find_file(name: str, explicit: str | None, download: bool) -> Path:
    """`explicit`, else ~/.cache/ImageReward/<name>, else the HF cache of THUDM/ImageReward, else a download."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ImageRewardWeightsError(f"{name} not found at {path}")
        return path
    local = OFFICIAL_DOWNLOAD_ROOT.expanduser() / name
    if local.is_file():
        return local
    hit = try_to_load_from_cache(HF_REPO, name)
    if isinstance(hit, str):
        return Path(hit)
    why = "HF_HUB_OFFLINE is set" if _offline() else "download disabled"
    if download and not _offline():
        try:
            return Path(hf_hub_download(HF_REPO, name))
        except Exception as e:  # no network, gated, ...
            why = f"download failed: {str(e).splitlines()[0]}"
    raise ImageRewardWeightsError(
        f"{name} (HF {HF_REPO}) not found in {local} or the HF cache ({why}); pass its path, or run "
        f"`hf download {HF_REPO} {WEIGHTS_FILE} {MED_CONFIG_FILE}` once, then HF_HUB_OFFLINE=1 reads the cache")


def check_med_config(path: Path, arch: RewardArch) -> None:
    """med_config.json must describe the text tower we build (it is only read, never trusted blindly)."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ImageRewardWeightsError(f"cannot read {path}: {e}") from None
    for key, attr in _MED_FIELDS.items():
        if key in cfg and cfg[key] != getattr(arch, attr):
            raise ImageRewardWeightsError(f"{path}: {key}={cfg[key]!r}, ImageReward-v1.0 has {getattr(arch, attr)!r}")
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ImageRewardWeightsError(f"{path}: hidden_act/position_embedding_type differ from ImageReward-v1.0")
    if not cfg.get("add_cross_attention", False):
        raise ImageRewardWeightsError(f"{path}: add_cross_attention is not true")


def read_vocab(path: Path) -> dict[str, int]:
    """A BERT vocab.txt: one token per line, id = line number (what the WordPiece tokenizers load)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ImageRewardWeightsError(f"cannot read tokenizer vocab {path}: {e}") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab = {tok: i for i, tok in enumerate(lines)}
    if len(vocab) != len(lines) or vocab.get("[PAD]") != 0 or "[UNK]" not in vocab:
        raise ImageRewardWeightsError(f"{path}: not a BERT vocab.txt (duplicate lines, or [PAD] not first / no [UNK])")
    return vocab


def blip_tokenizer(vocab_file: Path) -> BertTokenizer:
    """bert-base-uncased WordPiece + BLIP's `init_tokenizer` additions: bos_token [DEC], extra special token [ENC].

    ImageReward feeds the tokenizer's ids unchanged ([CLS] first); [ENC] is never substituted for it.
    """
    vocab = read_vocab(vocab_file)
    tok = BertTokenizer(vocab=vocab, do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tok) != len(vocab) + 2:  # a transformers whose BertTokenizer ignores `vocab=` would land here
        raise ImageRewardWeightsError(f"{vocab_file}: tokenizer has {len(tok)} tokens, expected {len(vocab) + 2}")
    return tok


def find_vocab(config: ImageRewardConfig) -> Path:
    """bert-base-uncased vocab.txt: `tokenizer_path` (file or folder), else the HF cache, else a download."""
    if config.tokenizer_path is not None:
        path = Path(config.tokenizer_path)
        path = path / "vocab.txt" if path.is_dir() else path
        if not path.is_file():
            raise ImageRewardWeightsError(f"tokenizer vocab {path} not found (bert-base-uncased vocab.txt)")
        return path
    for repo in TOKENIZER_REPOS:
        hit = try_to_load_from_cache(repo, "vocab.txt")
        if isinstance(hit, str):
            return Path(hit)
    why = "HF_HUB_OFFLINE is set" if _offline() else "download disabled"
    if config.download and not _offline():
        try:
            return Path(hf_hub_download(TOKENIZER_REPOS[1], "vocab.txt"))
        except Exception as e:  # no network, ...
            why = f"download failed: {str(e).splitlines()[0]}"
    raise ImageRewardWeightsError(
        f"bert-base-uncased vocab.txt not in the HF cache ({why}); pass tokenizer_path=FILE_OR_FOLDER, or run "
        f"`hf download {TOKENIZER_REPOS[1]} vocab.txt` once, then HF_HUB_OFFLINE=1 reads the cache")


# ----------------------------------------------------------------------------------------------
# Images.

def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def reward_transform(size: int = 224) -> T.Compose:
    """ImageReward.py `_transform`: bicubic resize and crop run on the file's own mode, RGB conversion after."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), _to_rgb,
                      T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


class PromptItem(Protocol):
    id: str
    prompt: str
    n_images: int


def benchmark_image_set(folder: str | os.PathLike, items: Iterable[PromptItem]) -> ImageSet:
    """`<id>_<j>.<ext>` for j < n_images of each prompt (layouts 'imagereward' / 'imagereward-png',
    docs/protocols.md §5.3).

    Each image's `category` is its prompt id, which `score(by_prompt=True)` groups by.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MetricError(f"image folder {folder} does not exist")
    by_stem: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            by_stem.setdefault(p.stem, []).append(p)
    out, missing = [], []
    for it in items:
        for j in range(it.n_images):
            found = by_stem.get(f"{it.id}_{j}", [])
            if len(found) > 1:
                raise MetricError(f"{folder}: image {it.id}_{j} exists as {sorted(p.name for p in found)}")
            if not found:
                missing.append(f"{it.id}_{j}")
                continue
            out.append(ImageItem(f"{it.id}_{j}", found[0], it.id, it.prompt))
    if missing:
        raise MetricError(f"{folder}: {len(missing)} images missing, first {missing[0]}.<jpg|png>")
    return ImageSet(str(folder.resolve()), "imagereward-benchmark", tuple(out))


# ----------------------------------------------------------------------------------------------
# The metric.

class ImageRewardScore(Metric):
    """Per image the ImageReward-v1.0 reward of (image, its prompt); see `score` for the aggregates."""

    name = "image_reward"
    higher_is_better = True

    def __init__(self, config: ImageRewardConfig = ImageRewardConfig(), arch: RewardArch = DEFAULT_ARCH,
                 share: WorkShare = ONE_PROCESS):
        self.config, self.arch, self.share = config, arch, share
        if config.precision not in ("fp32", "bf16", "fp16"):
            raise MetricError(f"ImageReward precision {config.precision!r}: expected fp32, bf16 or fp16")
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[config.precision]
        self.weights_path = find_file(WEIGHTS_FILE, config.weights_path, config.download)
        try:
            self.med_config_path: Path | None = find_file(MED_CONFIG_FILE, config.med_config_path, config.download)
        except ImageRewardWeightsError:
            if config.med_config_path is not None:
                raise
            self.med_config_path = None  # it only restates the architecture; its values are built in
        if self.med_config_path is not None:
            check_med_config(self.med_config_path, arch)
        self.vocab_path = find_vocab(config)
        self.tokenizer = blip_tokenizer(self.vocab_path)
        if len(self.tokenizer) != arch.vocab_size:
            raise ImageRewardWeightsError(f"{self.vocab_path}: {len(self.tokenizer)} tokens with [DEC] and [ENC], "
                                          f"the model's word embeddings have {arch.vocab_size}")
        self.weights_sha256 = sha256_file(self.weights_path)
        self.model = load_model(self.weights_path, arch, self.device, self.dtype)
        self.transform = reward_transform(arch.image_size)

    @property
    def protocol(self) -> dict[str, Any]:
        return {
            "metric": "image_reward", "model": "ImageReward-v1.0", "arch": asdict(self.arch),
            "weights": self.weights_path.name, "weights_sha256": self.weights_sha256,
            "med_config_sha256": sha256_file(self.med_config_path) if self.med_config_path else "built-in",
            "tokenizer": "BertTokenizer bert-base-uncased + bos [DEC] + additional [ENC]; [CLS] kept first",
            "tokenizer_vocab_sha256": sha256_file(self.vocab_path),
            "text": {"padding": "max_length", "truncation": True, "max_length": MAX_LENGTH},
            "preprocess": f"Resize({self.arch.image_size}, bicubic, PIL) -> CenterCrop({self.arch.image_size}) "
                          "-> RGB -> ToTensor -> Normalize",
            "normalize": {"mean": CLIP_MEAN, "std": CLIP_STD},
            "dtype": self.config.precision,
            "reward": f"(mlp(text CLS) - {REWARD_MEAN}) / {REWARD_STD}",
            "versions": package_versions("torch", "torchvision", "transformers", "tokenizers", "pillow"),
        }

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                             return_tensors="pt")
        return enc.input_ids, enc.attention_mask  # (B, 35) each

    @torch.no_grad()
    def rewards(self, pixels: torch.Tensor, prompts: list[str]) -> np.ndarray:
        """Rewards of a preprocessed batch (B, 3, S, S) against one prompt each."""
        ids, mask = self.tokenize(prompts)
        out = self.model(pixels.to(self.device), ids.to(self.device), mask.to(self.device))  # (B,)
        return out.double().cpu().numpy()

    def _per_image(self, images: ImageSet) -> np.ndarray:
        c = self.config
        cache = (FeatureCache(Path(c.cache_dir) / "features", self.name, self.protocol)
                 if c.cache_dir is not None else None)
        paths = [i.path for i in images.items]
        prompts = [i.prompt for i in images.items]
        keys = [f"{image_key(p, c.key_mode)}|prompt-sha256:{hashlib.sha256(t.encode()).hexdigest()}"
                for p, t in zip(paths, prompts)]
        self.share.require_cache(cache, "ImageReward")
        have = [cache.get(k) if cache is not None else None for k in keys]
        todo = [i for i, v in enumerate(have) if v is None and self.share.owns(i, c.batch_size)]
        if todo:
            loader = torch.utils.data.DataLoader(ImageFileDataset(paths, todo, self.transform, convert_rgb=False),
                                                 batch_size=c.batch_size, num_workers=c.num_workers,
                                                 pin_memory=self.device.type == "cuda")
            with tqdm(total=len(todo), desc="ImageReward", unit="img", dynamic_ncols=True) as bar:
                for step, (idx, pixels) in enumerate(loader):
                    idx = idx.tolist()
                    r = self.rewards(pixels, [prompts[i] for i in idx])
                    for i, v in zip(idx, r):
                        have[i] = np.array([v])
                    if cache is not None:
                        cache.put([keys[i] for i in idx], r[:, None])
                        if (step + 1) % 10 == 0:
                            cache.flush()
                    bar.update(len(idx))
            if cache is not None:
                cache.flush()
        if self.share.split:
            have = self.share.gather(cache, keys, "ImageReward")
        return np.array([float(v[0]) for v in have])

    def score(self, images: ImageSet, *, by_prompt: bool = False) -> Result:
        """Rewards per image; aggregate 'image_reward' = mean over images, or with `by_prompt` the mean of
        per-prompt means (ImageReward `test-benchmark.py`; prompt = item.category, see `benchmark_image_set`).

        Also 'image_reward_over_images' (SANA's `compute_image_reward.py` number) and, by prompt,
        'image_reward/<prompt id>'; per_item holds each image's reward.
        """
        if not images.items:
            raise MetricError(f"ImageReward: image set {images.name} is empty")
        no_prompt = [i.id for i in images.items if not i.prompt]
        if no_prompt:
            raise MetricError(f"ImageReward: image {no_prompt[0]!r} has no prompt ({len(no_prompt)} without)")
        if by_prompt and any(i.category is None for i in images.items):
            raise MetricError("ImageReward by_prompt: images need their prompt id as category (benchmark_image_set)")
        r = self._per_image(images)
        agg: dict[str, float] = {"image_reward_over_images": float(r.mean())}
        if by_prompt:
            groups: dict[str, list[float]] = {}
            for item, v in zip(images.items, r):
                groups.setdefault(item.category, []).append(float(v))
            means = {g: float(np.mean(v)) for g, v in groups.items()}
            agg["image_reward"] = float(np.mean(list(means.values())))
            agg.update({f"image_reward/{g}": m for g, m in means.items()})
        else:
            agg["image_reward"] = agg["image_reward_over_images"]
        protocol = {**self.protocol, "aggregate": "mean of per-prompt means" if by_prompt else "mean over images"}
        per_item = {i.id: {"image_reward": float(v)} for i, v in zip(images.items, r)}
        provenance = {"images": images.name, "n_images": len(images), "device": str(self.device),
                      "weights_path": str(self.weights_path),
                      "n_prompts": len({i.category for i in images.items}) if by_prompt else None}
        return Result(self.name, protocol, agg, per_item, provenance)


def score_benchmark(images_dir: str | os.PathLike, items: Iterable[PromptItem],
                    config: ImageRewardConfig = ImageRewardConfig(), share: WorkShare = ONE_PROCESS) -> Result:
    """The ImageReward benchmark (§5.1) on `<id>_<j>.<ext>` files: mean of per-prompt mean rewards."""
    images = benchmark_image_set(images_dir, items)
    return ImageRewardScore(config, share=share).score(images, by_prompt=True)
