"""DPG-Bench's VQA interface (docs/architecture.md §3.5): (image, question) -> answer text; DPG counts exactly 'yes'.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from metrics.base import MetricError


class VQA(ABC):
    name: str

    @property
    @abstractmethod
    def protocol(self) -> dict[str, Any]:
        """Backend, weights (+sha256), decoding; recorded in every DPG-Bench score."""

    @abstractmethod
    def answer(self, image: Image.Image, question: str) -> str:
        """The model's answer to one question about an RGB image."""


class ScriptedVQA(VQA):
    """Answer = `script(image, question)` or `script[question]`; every call is logged in `calls`."""

    name = "scripted"

    def __init__(self, script: Mapping[str, str] | Callable[[Image.Image, str], str]):
        self.script = script
        self.calls: list[str] = []

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "scripted (tests only)"}

    def answer(self, image: Image.Image, question: str) -> str:
        self.calls.append(question)
        if callable(self.script):
            return self.script(image, question)
        if question not in self.script:
            raise MetricError(f"scripted VQA has no answer for {question!r}")
        return self.script[question]
