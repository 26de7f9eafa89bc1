"""DPG-Bench's official VQA (benchmarks.md §4.2): ModelScope mPLUG-large, used only if `modelscope` imports."""
from __future__ import annotations

import importlib

from typing import Any

from PIL import Image

from metrics.base import MetricError, package_versions
from metrics.vqa.base import VQA

MPLUG_MODEL = "damo/mplug_visual-question-answering_coco_large_en"


def modelscope_available() -> bool:
    try:
        importlib.import_module("modelscope")
    except ImportError:
        return False
    return True


class MPLUGVQA(VQA):
    name = "ModelScope mPLUG-large VQA (official DPG-Bench scorer)"

    def __init__(self, model: str = MPLUG_MODEL, device: str = "gpu"):
        """`model`: the ModelScope id (downloaded into ModelScope's cache on first use) or a local model folder."""
        if not modelscope_available():
            raise MetricError("the mPLUG backend needs `modelscope[multi-modal]` (benchmarks.md §4.4-4.5); "
                              "use the BLIP backend otherwise")
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks
        self.model = model
        self.pipeline = pipeline(Tasks.visual_question_answering, model=model, device=device)

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "modelscope-mplug", "official": True, "model": self.model,
                "versions": package_versions("modelscope", "torch", "transformers")}

    def answer(self, image: Image.Image, question: str) -> str:
        return self.pipeline({"image": image, "question": question})["text"]
