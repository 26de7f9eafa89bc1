"""GenEval's colour classifier (docs/protocols.md §3.2): CLIP zero-shot over the 10 colours on mask-composited crops.

open_clip ViT-L-14 "openai"; per object class, a classifier of 10 colour embeddings, each the renormalised mean
of the three templates' normalised text embeddings (clip_benchmark `zero_shot_classifier`); prediction = argmax of
100 * normalised image embedding @ classifier (`run_classification`). clip_benchmark runs both under fp16
autocast by default (amp=True); we do the same on CUDA and record it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from metrics.base import package_versions, sha256_file
from metrics.clip_score import CLIPScoreConfig, find_clip_weights, load_clip
from metrics.detectors.base import COLORS, CROP_BACKGROUND, ColorClassifier, Detection, mask_composite_crop

TEMPLATES = ("a photo of a {{c}} {classname}", "a photo of a {{c}}-colored {classname}", "a photo of a {{c}} object")


def color_prompts(classname: str) -> list[list[str]]:
    """For each colour, its three prompts (evaluate_images.py `color_classification`)."""
    return [[t.format(classname=classname).format(c=c) for t in TEMPLATES] for c in COLORS]


class CLIPColorClassifier(ColorClassifier):
    name = "open_clip ViT-L-14 openai zero-shot"

    def __init__(self, weights_path: str | None = None, device: str | None = None, batch_size: int = 16,
                 model=None, preprocess=None, tokenizer=None):
        """Weights: an explicit file, else open_clip's "openai" file in the local caches (never downloaded).

        `model`/`preprocess`/`tokenizer` inject an already built open_clip model (tests build a tiny one).
        """
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        if model is None:
            config = CLIPScoreConfig(model="ViT-L-14", pretrained="openai", weights_path=weights_path)
            self.weights_path = find_clip_weights(config)
            self.weights = {"file": self.weights_path.name, "sha256": sha256_file(self.weights_path)}
            model, preprocess, tokenizer = load_clip(config, self.weights_path, self.device, "fp32")
        else:
            self.weights = {"file": "injected (tests)", "sha256": None}
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.amp = self.device.type == "cuda"
        self._classifiers: dict[str, torch.Tensor] = {}

    @property
    def protocol(self) -> dict[str, Any]:
        return {"backend": "open_clip", "model": "ViT-L-14", "pretrained": "openai", "weights": self.weights,
                "templates": [t.replace("{{c}}", "{c}") for t in TEMPLATES], "colors": list(COLORS),
                "crop": f"mask composited over {CROP_BACKGROUND}, cropped to box", "amp_fp16": self.amp,
                "versions": package_versions("open_clip_torch", "torch")}

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()

    @torch.no_grad()
    def classifier(self, classname: str) -> torch.Tensor:
        """(D, 10) zero-shot weights for one object class, cached."""
        if classname not in self._classifiers:
            columns = []
            with self._autocast():
                for texts in color_prompts(classname):
                    emb = F.normalize(self.model.encode_text(self.tokenizer(texts).to(self.device)), dim=-1)  # (3, D)
                    mean = emb.mean(dim=0)  # (D,)
                    columns.append(mean / mean.norm())
            self._classifiers[classname] = torch.stack(columns, dim=1)  # (D, 10)
        return self._classifiers[classname]

    @torch.no_grad()
    def logits(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> torch.Tensor:
        clf = self.classifier(classname)
        out = []
        for i in range(0, len(objects), self.batch_size):
            crops = [self.preprocess(mask_composite_crop(image, o)) for o in objects[i:i + self.batch_size]]
            batch = torch.stack(crops)
            with self._autocast():
                feats = F.normalize(self.model.encode_image(batch.to(self.device)), dim=-1)  # (B, D)
                out.append((100.0 * feats @ clf).float())  # (B, 10)
        return torch.cat(out)

    def classify(self, image: Image.Image, objects: Sequence[Detection], classname: str) -> list[str]:
        if not objects:
            return []
        return [COLORS[i] for i in self.logits(image, objects, classname).argmax(1).tolist()]
