"""Mask2Former Swin-S COCO instance segmentation through transformers — an ALTERNATIVE to GenEval's detector.

GenEval's detector is the mmdetection 2.x checkpoint (docs/protocols.md §3.2);
`facebook/mask2former-swin-small-coco-instance`
is a different training of the same architecture (converted from facebookresearch/Mask2Former), so its numbers
are labelled with this backend and never merged with official-backend numbers. Around the network we follow
mmdet 2.x so that only the weights differ: LSJ test pipeline (keep-ratio resize into 1333x800 by OpenCV's bilinear
on uint8; pad to /32 with 128; ImageNet normalisation), and `MaskFormerFusionHead.instance_postprocess` — top-100
(query, class) pairs, score = class prob x mean foreground mask prob, mask logits resized to the padded input,
cropped, resized to the image (bilinear), mask = logit > 0, box = tight box of the mask with exclusive max
(`mask2bbox`). With GenEval's converted weights the input tensor is mmdet's bit for bit (make test-mmdet).
transformers' own `post_process_instance_segmentation` differs (binarises at 384x384, nearest upsampling, drops
empty masks), so it is not used; with a 384x384 unpadded input the two coincide, which the test checks.
GenEval's own weights run here too once `sana-eval convert-detector` has rewritten them (mmdet_convert.py); the
protocol then names the converted file and its sha256.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import snapshot_download
from PIL import Image

from metrics.base import MetricError, package_versions, sha256_file
from metrics.detectors.base import OBJECT_NAMES, Detection, Detections, Detector

HF_REPO = "facebook/mask2former-swin-small-coco-instance"
OFFICIAL_CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth (mmdet 2.x)"
_MEAN = (123.675, 116.28, 103.53)
_STD = (58.395, 57.12, 57.375)
CONVERSION_FILE = "conversion.json"  # written by mmdet_convert beside converted official weights
# Keys transformers may report that hold no learned weight: the loss's class weights, the final norm of Swin (the
# backbone never applies it) and the relative-position index buffers that older checkpoints stored.
_NOT_WEIGHTS = re.compile(r"^criterion\.|\.swin\.layernorm\.|\.relative_position_index$")


@dataclass(frozen=True)
class Mask2FormerConfig:
    scale: tuple[int, int] = (1333, 800)  # mmdet img_scale: (long edge max, short edge max), keep ratio
    size_divisor: int = 32
    pad_value: int = 128                  # mmdet's LSJ pad_cfg img=(128, 128, 128)
    max_per_image: int = 100              # mmdet test_cfg.max_per_image
    device: str | None = None
    dtype: str = "fp32"


def resize_scale(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv `imrescale`: one factor that fits the long edge to max(scale) and the short edge to min(scale)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def preprocess(image: Image.Image, config: Mask2FormerConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 3, Hp, Wp) normalised, padded input and the unpadded resized size (h, w): mmdet's LSJ test pipeline."""
    import cv2  # heavy: OpenCV loads only when the detector runs
    rgb = np.asarray(image.convert("RGB"))
    h, w = resize_scale(*rgb.shape[:2], config.scale)
    if (h, w) != rgb.shape[:2]:
        # mmcv.imrescale's call; OpenCV's fixed-point bilinear on uint8 differs from a float resize by +-1 levels
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    d = config.size_divisor
    # the pipeline pads (with pad_value) before it normalises
    rgb = np.pad(rgb, ((0, -h % d), (0, -w % d), (0, 0)), constant_values=config.pad_value)
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]  # (1, 3, Hp, Wp)
    x = (x - torch.tensor(_MEAN).view(1, 3, 1, 1)) / torch.tensor(_STD).view(1, 3, 1, 1)
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
            model = load_model(folder)
            files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
            self.weights = {"source": weights or HF_REPO, "files": {p.name: sha256_file(p) for p in files}}
            if (folder / CONVERSION_FILE).is_file():
                self.weights["converted_from"] = json.loads((folder / CONVERSION_FILE).read_text())["source"]
        else:
            self.weights = {"source": "injected (tests)", "files": {}}
        self.model = model.to(self.device, self.dtype).eval()
        self._warned_window = False

    @property
    def protocol(self) -> dict[str, Any]:
        source = self.weights.get("converted_from")
        note = (f"GenEval's detector weights ({source['file']}, converted from mmdet) run by transformers"
                if source else f"not the official GenEval detector {OFFICIAL_CHECKPOINT}")
        return {"backend": "transformers-mask2former", "official": False, "note": note, "weights": self.weights,
                "config": {k: v for k, v in asdict(self.config).items() if k != "device"},
                "preprocess": "mmdet 2.x LSJ test pipeline (keep-ratio resize by cv2 bilinear on uint8, pad/32 "
                              "with 128, ImageNet norm)",
                "postprocess": "mmdet 2.x instance_postprocess; boxes from masks (mask2bbox)",
                "versions": {**package_versions("transformers", "torch"), "opencv": _cv2_version()}}

    @torch.no_grad()
    def detect(self, image: Image.Image) -> Detections:
        x, input_hw = preprocess(image, self.config)
        self._warn_if_window_shrinks(x.shape[-2:])
        out = self.model(pixel_values=x.to(self.device, self.dtype))
        return instance_postprocess(out.class_queries_logits[0], out.masks_queries_logits[0],
                                    tuple(x.shape[-2:]), input_hw,
                                    (image.height, image.width), self.config.max_per_image)

    def _warn_if_window_shrinks(self, padded_hw) -> None:
        """transformers' Swin shrinks a window to a stage no larger than it where mmdet and detectron2 pad."""
        window = getattr(getattr(self.model.config, "backbone_config", None), "window_size", None)
        if window and min(padded_hw) // 32 <= window and not self._warned_window:
            self._warned_window = True
            warnings.warn(f"Mask2Former input {tuple(padded_hw)}: Swin's last stage is no larger than its window "
                          f"({window}); transformers shrinks the window there, unlike mmdet, so detections may differ "
                          "from the official detector's", stacklevel=4)


def _cv2_version() -> str:
    import cv2  # heavy: OpenCV loads only when the detector runs
    return cv2.__version__


def load_model(folder: Path):
    """A Mask2FormerForUniversalSegmentation whose every weight came from `folder`, else MetricError."""
    # heavy: transformers loads only when a detector is built
    from transformers import Mask2FormerForUniversalSegmentation
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report is checked below instead of printed
    try:
        model, info = Mask2FormerForUniversalSegmentation.from_pretrained(folder, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = [f"missing {k}" for k in sorted(info["missing_keys"]) if not _NOT_WEIGHTS.search(k)]
    problems += [f"unused {k}" for k in sorted(info["unexpected_keys"]) if not _NOT_WEIGHTS.search(k)]
    problems += [f"mismatched {k}" for k in info["mismatched_keys"]]
    if problems:
        raise MetricError(f"Mask2Former weights in {folder} do not fill the model one to one: {problems[0]} "
                          f"({len(problems)} problems)")
    return model


def _local_model_folder(weights: str) -> Path:
    path = Path(weights)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MetricError(f"Mask2Former folder {path} has no config.json")
        return path
    try:
        return Path(snapshot_download(weights, local_files_only=True))
    except Exception as err:  # the hub raises several types for "not in the cache"
        raise MetricError(f"Mask2Former weights {weights!r} not found offline ({type(err).__name__}); fetch them "
                          f"with `huggingface-cli download {weights}`, or pass a local folder, e.g. GenEval's own "
                          f"checkpoint after `sana-eval convert-detector`") from None
