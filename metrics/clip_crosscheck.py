"""Cross-check CLIP-score column from torchmetrics (docs/protocols.md §2.2); never part of the headline.

torchmetrics' `CLIPScore` is Sana's alternate path (`--clipscore_type diffusers`): HF `CLIPModel` +
`CLIPProcessor`, prompts padded per batch and then sliced to 77 tokens, so a longer prompt loses its EOS
and is pooled at the wrong token; the mean over images is clamped at 0. The two definitions agree
(up to the image resize) only on prompts of at most 77 tokens, so the column reports how many exceed it.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms as T
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from metrics.base import MetricError, package_versions, sha256_file
from metrics.images import ImageFileDataset, ImageSet

CROSS_CHECKS = ("torchmetrics",)
HF_CLIP_REPO = "openai/clip-vit-large-patch14"  # torchmetrics' default model; Sana's alternate path uses it too
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def find_hf_clip(name_or_path: str) -> Path:
    """A local HF CLIP folder, else the repo's snapshot in the HF cache; never the network."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        folder = path
    else:
        try:
            folder = Path(snapshot_download(name_or_path, local_files_only=True))
        except (LocalEntryNotFoundError, HFValidationError):
            raise MetricError(f"HF CLIP {name_or_path!r} is neither a folder nor in the HF cache; get it with "
                              f"`huggingface-cli download {HF_CLIP_REPO}` (or pass its local folder)") from None
    missing = [n for n in ("config.json", "preprocessor_config.json|processor_config.json", "vocab.json")
               if not any((folder / alt).is_file() for alt in n.split("|"))]
    if not any((folder / n).is_file() for n in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if missing:
        raise MetricError(f"HF CLIP folder {folder} lacks {', '.join(missing)}; re-download {name_or_path}")
    return folder


def locate_cross_checks(names: tuple[str, ...], hf_clip: str) -> dict[str, Path]:
    """Model folder of each requested column; called before scoring so a missing piece fails fast."""
    unknown = [n for n in names if n not in CROSS_CHECKS]
    if unknown:
        raise MetricError(f"unknown CLIP cross-check {unknown[0]!r} (expected one of {CROSS_CHECKS})")
    if names:
        try:
            import torchmetrics.multimodal  # noqa: F401  (heavy, optional column: only checks it imports)
        except ImportError as e:
            raise MetricError(f"CLIP cross-check torchmetrics: cannot import it ({e}); "
                              "pip install torchmetrics") from None
    return {name: find_hf_clip(hf_clip) for name in names}


class _ProjectedFeatures(torch.nn.Module):
    """The HF model as torchmetrics calls it: get_*_features -> (B, D) tensor.

    transformers >= 5 returns a ModelOutput whose pooler_output is the projection; torchmetrics 1.9.0
    calls .norm() on it (Lightning-AI/torchmetrics#3407, fixed upstream by #3408, unreleased).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config  # torchmetrics reads text_config.max_position_embeddings for its slice

    @staticmethod
    def _tensor(out: Any) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))  # (B, D)

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))  # (B, D)


def _as_list(batch: list) -> tuple[list[int], list[torch.Tensor]]:
    return [i for i, _ in batch], [t for _, t in batch]


def long_prompt_indices(tokenizer: Any, prompts: list[str], limit: int) -> list[int]:
    """Prompts whose token count (with BOS and EOS) exceeds `limit`: torchmetrics slices their EOS away."""
    lengths = [len(ids) for ids in tokenizer(prompts, truncation=False)["input_ids"]]
    return [i for i, n in enumerate(lengths) if n > limit]


@torch.no_grad()
def torchmetrics_clip_score(images: ImageSet, model_dir: Path, *, device: torch.device, batch_size: int,
                            num_workers: int, model_name: str | None = None) -> dict[str, Any]:
    """torchmetrics `CLIPScore` over the image files and their prompts, with its own protocol description."""
    # heavy: torchmetrics and transformers load only when this cross-check column is asked for
    from torchmetrics.multimodal import CLIPScore as TorchmetricsCLIPScore
    from transformers import CLIPModel, CLIPProcessor
    from transformers.image_utils import PILImageResampling

    try:
        model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise MetricError(f"cannot load HF CLIP from {model_dir}: {str(e).splitlines()[0]}") from None
    limit = model.config.text_config.max_position_embeddings
    prompts = [i.prompt for i in images.items]
    long_idx = long_prompt_indices(processor.tokenizer, prompts, limit)
    # A callable keeps torchmetrics offline and lets it take a local folder (it only accepts "openai/..." names).
    metric = TorchmetricsCLIPScore(model_name_or_path=lambda: (_ProjectedFeatures(model), processor)).to(device)
    paths = [i.path for i in images.items]
    loader = torch.utils.data.DataLoader(ImageFileDataset(paths, range(len(paths)), T.PILToTensor()),
                                         batch_size=batch_size, num_workers=num_workers, collate_fn=_as_list)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered caption longer")  # counted in long_idx instead
        for idx, batch in loader:
            metric.update([t.to(device) for t in batch], [prompts[i] for i in idx])  # list of (3, H, W) uint8
    weights = next(model_dir / n for n in _WEIGHT_FILES if (model_dir / n).is_file())
    ip = processor.image_processor
    pooling = ("argmax(input_ids) (legacy eos_token_id == 2)" if model.config.text_config.eos_token_id == 2
               else f"first eos_token_id {model.config.text_config.eos_token_id}")
    return {
        "clip_score": float(metric.compute()),
        "mean_before_clamp": float(metric.score / metric.n_samples),
        "n": int(metric.n_samples),
        f"n_prompts_over_{limit}_tokens": len(long_idx),
        f"ids_over_{limit}_tokens": [images.items[i].id for i in long_idx[:20]],
        "protocol": {
            "implementation": "torchmetrics.multimodal.CLIPScore (Sana --clipscore_type diffusers)",
            "model": model_name or str(model_dir), "weights": weights.name, "weights_sha256": sha256_file(weights),
            "precision": "fp32",
            "image_input": "uint8 (3, H, W) tensors of the image files, RGB; resized by the HF processor",
            "image_processor": f"{type(ip).__name__} resize shortest_edge {ip.size.get('shortest_edge')} "
                               f"({PILImageResampling(ip.resample).name}), center crop {dict(ip.crop_size)}",
            "text": f"{type(processor.tokenizer).__name__} padded per batch, input_ids sliced to {limit} "
                    f"(EOS cut off for longer prompts); pooled at {pooling}",
            "score": "100 * cos(image, text) per image, sum / n, then max(mean, 0)",
            "adapter": "get_*_features ModelOutput -> pooler_output (torchmetrics#3407)",
            "versions": package_versions("torchmetrics", "transformers", "torch", "torchvision", "pillow"),
        },
    }


def cross_check_clip(clip: Any, images: ImageSet) -> dict[str, Any]:
    """{column: {"clip_score": value, ..., "protocol": {...}}} for each of clip.config.cross_checks."""
    c = clip.config
    return {name: torchmetrics_clip_score(images, clip.cross_check_dirs[name], device=clip.device,
                                          batch_size=c.batch_size, num_workers=c.num_workers, model_name=c.hf_clip)
            for name in c.cross_checks}
