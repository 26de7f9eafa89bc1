"""Mask2Former Swin-S COCO instance segmentation through transformers — an ALTERNATIVE to GenEval's detector.

GenEval's detector is the mmdetection 2.x checkpoint (benchmarks.md §3.2); `facebook/mask2former-swin-small-coco-instance`
is a different training of the same architecture (converted from facebookresearch/Mask2Former), so its numbers
are labelled with this backend and never merged with official-backend numbers. Around the network we follow
mmdet 2.x so that only the weights differ: LSJ test pipeline (keep-ratio resize into 1333x800, bilinear, uint8;
ImageNet normalisation; zero pad to /32), and `MaskFormerFusionHead.instance_postprocess` — top-100 (query, class)
pairs, score = class prob x mean foreground mask prob, mask logits resized to the padded input, cropped, resized
to the image (bilinear), mask = logit > 0, box = tight box of the mask with exclusive max (`mask2bbox`).
transformers' own `post_process_instance_segmentation` differs (binarises at 384x384, nearest upsampling, drops
empty masks), so it is not used; with a 384x384 unpadded input the two coincide, which the test checks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from metrics.base import MetricError, package_versions, sha256_file
from metrics.detectors.base import OBJECT_NAMES, Detection, Detections, Detector

HF_REPO = "facebook/mask2former-swin-small-coco-instance"
OFFICIAL_CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth (mmdet 2.x)"
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Mask2FormerConfig:
    scale: tuple[int, int] = (1333, 800)  # mmdet img_scale: (long edge max, short edge max), keep ratio
    size_divisor: int = 32
    max_per_image: int = 100              # mmdet test_cfg.max_per_image
    device: str | None = None
    dtype: str = "fp32"


def resize_scale(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv `imrescale`: one factor that fits the long edge to max(scale) and the short edge to min(scale)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def preprocess(image: Image.Image, config: Mask2FormerConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 3, Hp, Wp) normalised, zero-padded input and the unpadded resized size (h, w)."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    h, w = resize_scale(x.shape[2], x.shape[3], config.scale)
    if (h, w) != tuple(x.shape[2:]):
        # cv2 INTER_LINEAR on uint8: half-pixel bilinear without antialiasing, rounded back to uint8.
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).round().clamp(0, 255)
    x = (x - torch.tensor(_MEAN).view(1, 3, 1, 1)) / torch.tensor(_STD).view(1, 3, 1, 1)
    d = config.size_divisor
    x = F.pad(x, (0, -w % d, 0, -h % d))  # (1, 3, Hp, Wp)
    return x, (h, w)


def mask_to_box(mask: torch.Tensor) -> tuple[float, float, float, float]:
    """mmdet `mask2bbox`: (x_min, y_min, x_max + 1, y_max + 1); all zeros for an empty mask."""
    xs = torch.where(mask.any(dim=0))[0]
    ys = torch.where(mask.any(dim=1))[0]
    if len(xs) == 0 or len(ys) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))


def instance_postprocess(class_logits: torch.Tensor, mask_logits: torch.Tensor, padded_hw: tuple[int, int],
                         input_hw: tuple[int, int], image_hw: tuple[int, int], max_per_image: int = 100) -> Detections:
    """One image's (Q, C+1) class logits and (Q, h, w) mask logits -> detections on the image grid.

    padded_hw: the network input's size; input_hw: the resized image inside it; image_hw: the original image.
    """
    masks = F.interpolate(mask_logits[None].float(), size=padded_hw, mode="bilinear", align_corners=False)[0]
    masks = masks[:, :input_hw[0], :input_hw[1]]
    masks = F.interpolate(masks[None], size=image_hw, mode="bilinear", align_corners=False)[0]  # (Q, H, W)
    n_cls = class_logits.shape[-1] - 1
    if n_cls != len(OBJECT_NAMES):
        raise MetricError(f"Mask2Former has {n_cls} classes; GenEval needs the {len(OBJECT_NAMES)} COCO classes")
    scores = class_logits.float().softmax(-1)[:, :-1].flatten()  # (Q * C,)
    top, idx = scores.topk(min(max_per_image, scores.numel()), sorted=False)
    out: Detections = {}
    for s, i in zip(top.tolist(), idx.tolist()):
        logit = masks[i // n_cls]
        binary = logit > 0
        mask_score = float((logit.sigmoid() * binary).sum() / (binary.sum() + 1e-6))
        out.setdefault(OBJECT_NAMES[i % n_cls], []).append(
            Detection(mask_to_box(binary), s * mask_score, binary.cpu().numpy()))
    return out


class Mask2FormerHF(Detector):
    name = "transformers Mask2Former Swin-S COCO instance"

    def __init__(self, weights: str | None = None, config: Mask2FormerConfig = Mask2FormerConfig(), model=None):
        """`weights`: a local model folder or an HF repo id already in the HF cache (default HF_REPO).

        `model`: an already built Mask2FormerForUniversalSegmentation (tests build a tiny one).
        """
        self.config = config
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.dtype]
        if model is None:
            folder = _local_model_folder(weights or HF_REPO)
            from transformers import Mask2FormerForUniversalSegmentation
            model = Mask2FormerForUniversalSegmentation.from_pretrained(folder)
            files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
            self.weights = {"source": weights or HF_REPO, "files": {p.name: sha256_file(p) for p in files}}
        else:
            self.weights = {"source": "injected (tests)", "files": {}}
        self.model = model.to(self.device, self.dtype).eval()

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "transformers-mask2former", "official": False,
                "note": f"not the official GenEval detector {OFFICIAL_CHECKPOINT}", "weights": self.weights,
                "config": {k: v for k, v in asdict(self.config).items() if k != "device"},
                "preprocess": "mmdet 2.x LSJ test pipeline (keep-ratio resize, bilinear, uint8, ImageNet norm, pad/32)",
                "postprocess": "mmdet 2.x instance_postprocess; boxes from masks (mask2bbox)",
                "versions": package_versions("transformers", "torch")}

    @torch.no_grad()
    def detect(self, image: Image.Image) -> Detections:
        x, input_hw = preprocess(image, self.config)
        out = self.model(pixel_values=x.to(self.device, self.dtype))
        return instance_postprocess(out.class_queries_logits[0], out.masks_queries_logits[0],
                                    tuple(x.shape[-2:]), input_hw,
                                    (image.height, image.width), self.config.max_per_image)


def _local_model_folder(weights: str) -> Path:
    path = Path(weights)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MetricError(f"Mask2Former folder {path} has no config.json")
        return path
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(weights, local_files_only=True))
    except Exception as err:  # the hub raises several types for "not in the cache"
        raise MetricError(f"Mask2Former weights {weights!r} not found offline ({type(err).__name__}); fetch them "
                          f"with `huggingface-cli download {weights}` or pass a local folder") from None
