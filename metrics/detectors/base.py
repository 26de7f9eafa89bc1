"""GenEval's two scoring models behind small interfaces (docs/architecture.md §3.4).

Detector: image -> {class: [Detection(box, score, mask)]}, every detection the model returns (the GenEval rules
threshold, sort and truncate; docs/protocols.md §3.3). ColorClassifier: (image, objects, class) -> one colour per
object (§3.4). The scripted backends return fixed outputs; they are how the rules are tested.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metrics.base import MetricError

# GenEval's colour vocabulary, in its order (evaluate_images.py COLORS); the order breaks CLIP argmax ties.
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
# Background of the colour crops (evaluate_images.py option `bgcolor`, default "#999").
CROP_BACKGROUND = "#999"
# evaluation/object_names.txt: detector class index i <-> name i.
OBJECT_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush")


@dataclass(frozen=True)
class Detection:
    """One instance: box (x1, y1, x2, y2) in pixels, confidence, and an (H, W) bool mask (None: box only)."""
    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None

    def row(self) -> list[float]:
        """mmdet's bbox row [x1, y1, x2, y2, score], the form GenEval writes into `details`."""
        return [float(v) for v in self.box] + [float(self.score)]


Detections = dict[str, list[Detection]]


class Detector(ABC):
    """An instance-segmentation model over the 80 COCO classes of GenEval's `object_names.txt`."""

    name: str

    @property
    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """Backend, weights (+sha256), preprocessing; recorded in every GenEval score."""

    @abstractmethod
    def detect(self, image: Image.Image) -> Detections:
        """All detections of an RGB image, any order, unthresholded."""


class ColorClassifier(ABC):
    name: str

    @property
    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """Model, weights, templates, colours; recorded in every GenEval score."""

    @abstractmethod
    def classify(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        """One colour from COLORS per object, in order."""


# ----------------------------------------------------------------------------------------------
# The crop the colour classifier sees (docs/protocols.md §3.4; evaluate_images.py `ImageCrops`).

def mask_composite_crop(image: Image.Image, obj: Detection, background: str = CROP_BACKGROUND) -> Image.Image:
    """The object's mask pixels over a flat background, then cropped to its box.

    PIL's crop rounds each box coordinate with Python `round` (half to even), exactly as upstream's
    `image.crop(box[:4])` does, so the same pixels reach CLIP.
    """
    image = image.convert("RGB")
    if obj.mask is not None:
        if tuple(obj.mask.shape) != (image.height, image.width):
            raise MetricError(f"mask shape {tuple(obj.mask.shape)} does not match image size "
                              f"{(image.height, image.width)}")
        blank = Image.new("RGB", image.size, color=background)
        image = Image.composite(image, blank, Image.fromarray(np.asarray(obj.mask, dtype=bool)))
    return image.crop(tuple(obj.box))


# ----------------------------------------------------------------------------------------------
# Scripted backends: outputs fixed in advance, keyed by image file name (PIL's `filename`) or by a callable.

class ScriptedDetector(Detector):
    """Returns `script[key]` for an image, key = the image's file name (or `key_fn(image)`)."""

    name = "scripted"

    def __init__(self, script: Mapping[str, Detections], key_fn: Callable[[Image.Image], str] | None = None):
        self.script = script
        self.key_fn = key_fn or (lambda im: Path(getattr(im, "filename", "") or "").name)

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "scripted (tests only)"}

    def detect(self, image: Image.Image) -> Detections:
        key = self.key_fn(image)
        if key not in self.script:
            raise MetricError(f"scripted detector has no output for {key!r}")
        return {c: list(v) for c, v in self.script[key].items()}


class ScriptedColorClassifier(ColorClassifier):
    """Colour of an object = `colors[(classname, box)]`; every call is logged in `calls`."""

    name = "scripted"

    def __init__(self, colors: Mapping[tuple[str, tuple[float, ...]], str]):
        self.colors = colors
        self.calls: list[tuple[str, int]] = []

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "scripted (tests only)"}

    def classify(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        self.calls.append((classname, len(objects)))
        return [self.colors[(classname, tuple(o.box))] for o in objects]
