"""DPG-Bench VQA backends: (image, question) -> answer text."""
from metrics.base import MetricError
from metrics.vqa.base import VQA, ScriptedVQA
from metrics.vqa.blip import DEFAULT_REPO, BlipVQA
from metrics.vqa.mplug import MPLUG_MODEL, MPLUGVQA

VQA_BACKENDS = ("blip", "mplug")


def get_vqa(backend: str = "mplug", weights: str | None = None, device: str | None = None) -> VQA:
    """`mplug`: the official ModelScope model (needs modelscope); `blip`: transformers BLIP VQA (an alternative)."""
    if backend == "mplug":
        return MPLUGVQA(weights or MPLUG_MODEL, device="gpu" if device in (None, "cuda") else device)
    if backend == "blip":
        return BlipVQA(weights or DEFAULT_REPO, device)
    raise MetricError(f"unknown VQA backend {backend!r} (known: {', '.join(VQA_BACKENDS)})")


__all__ = ["VQA", "ScriptedVQA", "VQA_BACKENDS", "get_vqa"]
