"""BLIP VQA through transformers — an ALTERNATIVE DPG-Bench scorer, not the official mPLUG-large
(docs/protocols.md §4.2).

Numbers made with it carry its protocol and are never merged with mPLUG numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from PIL import Image

from metrics.base import MetricError, package_versions, sha256_file
from metrics.vqa.base import VQA

DEFAULT_REPO = "Salesforce/blip-vqa-base"


class BlipVQA(VQA):
    name = "transformers BLIP VQA"

    def __init__(self, weights: str = DEFAULT_REPO, device: str | None = None, max_new_tokens: int = 10,
                 model=None, processor=None):
        """`weights`: a local folder or an HF repo id already in the HF cache (blip-vqa-base / blip-vqa-capfilt-large).

        `model`/`processor`: already built BlipForQuestionAnswering + BlipProcessor (tests build tiny ones).
        """
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_new_tokens = max_new_tokens
        if model is None:
            from transformers import BlipForQuestionAnswering, BlipProcessor  # heavy: only a built BLIP needs it
            folder = _local_folder(weights)
            model, processor = BlipForQuestionAnswering.from_pretrained(folder), BlipProcessor.from_pretrained(folder)
            files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
            self.weights = {"source": weights, "files": {p.name: sha256_file(p) for p in files}}
        else:
            self.weights = {"source": "injected (tests)", "files": {}}
        self.model, self.processor = model.to(self.device).eval(), processor

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "transformers-blip-vqa", "official": False,
                "note": "not the official DPG-Bench VQA (ModelScope mPLUG-large)", "weights": self.weights,
                "decoding": f"greedy, max_new_tokens={self.max_new_tokens}, fp32, answer stripped",
                "versions": package_versions("transformers", "torch")}

    @torch.no_grad()
    def answer(self, image: Image.Image, question: str) -> str:
        inputs = self.processor(images=image.convert("RGB"), text=question, return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.decode(out[0], skip_special_tokens=True).strip()


def _local_folder(weights: str) -> Path:
    if Path(weights).is_dir():
        return Path(weights)
    try:
        return Path(snapshot_download(weights, local_files_only=True))
    except Exception as err:  # the hub raises several types for "not in the cache"
        raise MetricError(f"BLIP VQA weights {weights!r} not found offline ({type(err).__name__}); fetch them with "
                          f"`huggingface-cli download {weights}` or pass a local folder") from None
