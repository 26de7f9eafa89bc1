"""GenEval scoring backends: detectors (image -> {class: [Detection]}) and colour classifiers."""
from metrics.base import MetricError
from metrics.detectors.base import (
    COLORS,
    OBJECT_NAMES,
    ColorClassifier,
    Detection,
    Detections,
    Detector,
    ScriptedColorClassifier,
    ScriptedDetector,
    mask_composite_crop,
)
from metrics.detectors.clip_color import CLIPColorClassifier
from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
from metrics.detectors.mmdet_backend import MMDetMask2Former

DETECTOR_BACKENDS = ("transformers", "mmdet")


def get_detector(backend: str = "transformers", weights: str | None = None, device: str | None = None) -> Detector:
    """`transformers`: Mask2Former Swin-S from HF (an alternative); `mmdet`: the official checkpoint (needs mmdet)."""
    if backend == "transformers":
        return Mask2FormerHF(weights, Mask2FormerConfig(device=device))
    if backend == "mmdet":
        if weights is None:
            raise MetricError("the mmdet backend needs --detector-weights (checkpoint file or its folder)")
        return MMDetMask2Former(weights, device=device or "cuda")
    raise MetricError(f"unknown detector backend {backend!r} (known: {', '.join(DETECTOR_BACKENDS)})")


def get_color_classifier(weights: str | None = None, device: str | None = None) -> ColorClassifier:
    return CLIPColorClassifier(weights, device)


__all__ = ["COLORS", "OBJECT_NAMES", "ColorClassifier", "Detection", "Detections", "Detector", "DETECTOR_BACKENDS",
           "ScriptedColorClassifier", "ScriptedDetector", "get_color_classifier", "get_detector", "mask_composite_crop"]
