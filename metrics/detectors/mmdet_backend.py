"""GenEval's official detector (docs/protocols.md §3.2): mmdetection 2.x Mask2Former Swin-S, used only if `mmdet`
imports. Building that environment (mmcv-full 1.x with compiled ops, mmdet 2.x) is §3.6.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from metrics.base import MetricError, package_versions, sha256_file
from metrics.detectors.base import OBJECT_NAMES, Detection, Detections, Detector

CONFIG = "configs/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"
CHECKPOINT = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth"
CHECKPOINT_URL = ("https://download.openmmlab.com/mmdetection/v2.0/mask2former/"
                  "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
                  "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth")


def official_config() -> Path:
    """GenEval's config as mmdet ships it: in the source checkout (`pip install -e .`) or packed in a wheel/sdist
    install under mmdet/.mim/ (the path `mim` reads)."""
    import mmdet  # optional: mmdet lives in its own environment (§3.6)
    package = Path(mmdet.__file__).parent
    for config in (package.parent / CONFIG, package / ".mim" / CONFIG):
        if config.is_file():
            return config
    raise MetricError(f"mmdet config {CONFIG} not found beside {package} nor in its .mim/ folder; pass config_path")


def mmdet_available() -> bool:
    try:
        importlib.import_module("mmdet")
    except ImportError:
        return False
    return True


class MMDetMask2Former(Detector):
    name = "mmdet Mask2Former Swin-S COCO (official GenEval detector)"

    def __init__(self, model_path: str, config_path: str | None = None, device: str = "cuda"):
        """`model_path`: the checkpoint file, or the folder holding CHECKPOINT (as evaluate_images.py --model-path)."""
        if not mmdet_available():
            raise MetricError("the mmdet backend needs mmdetection 2.x and mmcv-full 1.x (docs/protocols.md §3.6); "
                              "use the transformers backend otherwise")
        from mmdet.apis import init_detector  # optional: mmdet lives in its own environment (§3.6)
        ckpt = Path(model_path)
        ckpt = ckpt / CHECKPOINT if ckpt.is_dir() else ckpt
        if not ckpt.is_file():
            raise MetricError(f"mmdet checkpoint {ckpt} not found; "
                              f"download {CHECKPOINT_URL} and save it as {CHECKPOINT}")
        config = Path(config_path) if config_path else official_config()
        if not config.is_file():
            raise MetricError(f"mmdet config {config} not found")
        self.weights = {"file": ckpt.name, "sha256": sha256_file(ckpt), "config": config.name}
        self.model = init_detector(str(config), str(ckpt), device=device)

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "mmdet-mask2former", "official": True, "weights": self.weights,
                "versions": package_versions("mmdet", "mmcv-full", "mmcv", "torch")}

    def detect(self, image: Image.Image) -> Detections:
        from mmdet.apis import inference_detector  # optional: mmdet lives in its own environment (§3.6)
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # mmcv.imread order
        result = inference_detector(self.model, bgr)
        if isinstance(result, dict):
            result = result["ins_results"]
        bbox, segm = ((result[0], result[1] if len(result) > 1 else None) if isinstance(result, tuple)
                      else (result, None))
        out: Detections = {}
        for i, name in enumerate(OBJECT_NAMES):
            rows = bbox[i]
            dets = [Detection(tuple(float(v) for v in r[:4]), float(r[4]),
                              None if segm is None else np.asarray(segm[i][k], dtype=bool)) for k, r in enumerate(rows)]
            if dets:
                out[name] = dets
        return out
