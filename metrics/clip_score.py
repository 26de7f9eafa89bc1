"""Sana's CLIP Score on MJHQ-30K (docs/protocols.md §2.1): OpenAI ViT-L/14 through open_clip, text cut to 77
tokens with EOT kept, mean over images of 100 * cos(image, text), no clamp; fp16 weights on GPU.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from metrics.base import (
    ONE_PROCESS,
    FeatureCache,
    Metric,
    MetricError,
    Result,
    WorkShare,
    package_versions,
    sha256_file,
)
from metrics.clip_crosscheck import HF_CLIP_REPO, cross_check_clip, locate_cross_checks
from metrics.images import ImageSet, extract_features

CLIP_MODEL = "ViT-L-14"
CLIP_PRETRAINED = "openai"
# OpenAI publishes ViT-L-14.pt under its sha256 (the URL's path segment); open_clip checks the same way.
OPENAI_VITL14_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
# Keys of OpenAI's TorchScript archive that are not parameters.
_NON_PARAMS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class CLIPScoreConfig:
    model: str = CLIP_MODEL               # open_clip model config name
    pretrained: str | None = CLIP_PRETRAINED  # open_clip tag, used to find weights in the caches
    weights_path: str | None = None       # explicit weights file (.safetensors, state dict, or OpenAI .pt)
    precision: str | None = None          # "fp16" | "fp32"; default fp16 on CUDA (as OpenAI clip), fp32 on CPU
    scale: float = 100.0                  # Sana uses logit_scale.exp(), which is ln(100) clamped -> 100
    batch_size: int = 50
    num_workers: int = 4
    device: str | None = None
    cache_dir: str | None = None
    key_mode: str = "stat"
    cross_checks: tuple[str, ...] = ()    # extra columns, see metrics.clip_crosscheck.CROSS_CHECKS
    hf_clip: str = HF_CLIP_REPO           # cross-check model: HF repo id (HF cache only) or folder


def find_clip_weights(config: CLIPScoreConfig) -> Path:
    """An explicit file, else the open_clip tag's HF-hub file in the HF cache, else OpenAI's file in ~/.cache/clip."""
    if config.weights_path is not None:
        path = Path(config.weights_path)
        if not path.is_file():
            raise MetricError(f"CLIP weights {path} not found")
        return path
    import open_clip  # heavy (about 1 s to import): loaded only when a CLIP model is needed

    cfg = open_clip.get_pretrained_cfg(config.model, config.pretrained or "")
    if not cfg:
        raise MetricError(f"open_clip has no pretrained tag {config.model}/{config.pretrained}; pass weights_path")
    looked = []
    if cfg.get("hf_hub"):
        repo = cfg["hf_hub"].rstrip("/")
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            hit = huggingface_hub.try_to_load_from_cache(repo, name)  # module attribute: tests patch it
            if isinstance(hit, str):
                return Path(hit)
        looked.append(f"HF cache {repo}")
    if cfg.get("url"):
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if path.is_file():
            return path
        looked.append(str(path))
    where = cfg.get("url") or cfg.get("hf_hub")
    raise MetricError(f"CLIP weights {config.model}/{config.pretrained} not found offline "
                      f"(looked in {'; '.join(looked)}); fetch {where}")


def read_clip_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Parameters from safetensors, a torch state dict, or (pinned sha256 only) OpenAI's TorchScript archive."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as e:
        if "TorchScript" not in str(e):
            raise MetricError(f"cannot read CLIP weights {path}: {str(e).splitlines()[0]}") from None
        if sha256_file(path) != OPENAI_VITL14_SHA256:
            raise MetricError(f"{path}: TorchScript archive that is not OpenAI's pinned ViT-L-14.pt") from None
        sd = torch.jit.load(str(path), map_location="cpu").state_dict()
    sd = sd.get("state_dict", sd)
    return {k.removeprefix("module."): v for k, v in sd.items() if k not in _NON_PARAMS}


def load_clip(config: CLIPScoreConfig, path: Path, device: torch.device, precision: str):
    """(model, preprocess, tokenizer): open_clip architecture + eval transform, weights loaded strictly."""
    import open_clip  # heavy (about 1 s to import): loaded only when a CLIP model is needed

    tag = open_clip.get_pretrained_cfg(config.model, config.pretrained or "") or {}
    model, _, preprocess = open_clip.create_model_and_transforms(
        config.model, pretrained=None, precision=precision, device=device,
        force_quick_gelu=bool(tag.get("quick_gelu", False)))
    sd = read_clip_state_dict(path)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise MetricError(f"CLIP weights {path} do not fit {config.model}: {str(e).splitlines()[0]}") from None
    return model.eval(), preprocess, open_clip.get_tokenizer(config.model)


class CLIPScore(Metric):
    """Per image 100 * cos(image, its prompt); aggregate = mean over images (Sana `clip_score.py`)."""

    name = "clip_score"
    higher_is_better = True

    def __init__(self, config: CLIPScoreConfig = CLIPScoreConfig(), share: WorkShare = ONE_PROCESS):
        self.config, self.share = config, share
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = config.precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if self.precision not in ("fp16", "fp32"):
            raise MetricError(f"CLIP precision {self.precision!r}: expected 'fp16' or 'fp32'")
        self.weights_path = find_clip_weights(config)
        self.weights_sha256 = sha256_file(self.weights_path)
        self.model, self.preprocess, self.tokenizer = load_clip(config, self.weights_path, self.device,
                                                                self.precision)
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.cross_check_dirs: dict[str, Path] = {}
        if config.cross_checks:  # located now so a missing model fails before the long run, not after it
            self.cross_check_dirs = locate_cross_checks(config.cross_checks, config.hf_clip)

    @property
    def protocol(self) -> dict[str, Any]:
        c = self.config
        return {
            "metric": "clip_score", "model": c.model, "pretrained": c.pretrained,
            "weights": self.weights_path.name, "weights_sha256": self.weights_sha256,
            "precision": self.precision,
            "preprocess": re.sub(r" at 0x[0-9a-f]+", "", " ".join(repr(self.preprocess).split())),
            "tokenizer": f"open_clip {type(self.tokenizer).__name__}, context {self.tokenizer.context_length}, "
                         "truncate keeping EOT",
            "score": f"{c.scale} * cos(image, text) per image (fp32 normalisation), mean, no clamp",
            "versions": package_versions("open_clip_torch", "torch", "torchvision", "pillow"),
        }

    @torch.no_grad()
    def _encode_images(self, batch: torch.Tensor) -> np.ndarray:
        feats = self.model.encode_image(batch.to(self.device, self.dtype))  # (B, D)
        return feats.float().cpu().numpy()

    @torch.no_grad()
    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), self.config.batch_size):
            tokens = self.tokenizer(prompts[i:i + self.config.batch_size]).to(self.device)  # (B, 77)
            out.append(self.model.encode_text(tokens).float())  # (B, D)
        return torch.cat(out)

    def score(self, images: ImageSet) -> Result:
        """CLIP score of each image against its item's prompt."""
        missing = [i.id for i in images.items if i.prompt is None]
        if missing:
            raise MetricError(f"CLIP score: item {missing[0]!r} has no prompt ({len(missing)} without)")
        c = self.config
        cache = (FeatureCache(Path(c.cache_dir) / "features", self.name, self.protocol)
                 if c.cache_dir is not None else None)
        img = torch.from_numpy(extract_features(
            [i.path for i in images.items], self.preprocess, self._encode_images, cache,
            batch_size=c.batch_size, num_workers=c.num_workers, desc="CLIP image features", key_mode=c.key_mode,
            pin_memory=self.device.type == "cuda", share=self.share)).to(self.device)
        txt = self.encode_texts([i.prompt for i in images.items])
        per = (c.scale * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)).cpu().double().numpy()
        per_item = {i.id: {"clip_score": float(s)} for i, s in zip(images.items, per)}
        provenance = {"images": images.name, "n": len(images), "device": str(self.device),
                      "weights_path": str(self.weights_path)}
        if c.cross_checks:
            provenance["cross_checks"] = cross_check_clip(self, images)
        return Result(self.name, self.protocol, {"clip_score": float(per.mean())}, per_item, provenance)
