"""Test support: FID Inception weights with random values, built without any download.

Both our FID and pytorch-fid's own pipeline load this one file, so the tests compare the two
pipelines on identical networks.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from metrics.base import sha256_file
from metrics.fid import FID_WEIGHTS_FILE
from sana_eval.smoke.tiny import write_random_fid_weights


def make_random_fid_weights(hub_dir: Path, seed: int = 0) -> tuple[Path, str]:
    """A randomly initialised FID-Inception state dict where pytorch-fid looks for its weights."""
    path = write_random_fid_weights(hub_dir / "checkpoints" / FID_WEIGHTS_FILE, seed)
    return path, sha256_file(path)


def write_images(folder: Path, n: int, size: tuple[int, int], seed: int, ext: str = ".png",
                 names: list[str] | None = None) -> list[Path]:
    """n smooth random RGB images (w, h) = size; smooth so that resizing changes them a little, not all."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        low = torch.rand(1, 3, 8, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(size[1], size[0]), mode="bilinear", align_corners=False)
        img = img + 0.1 * torch.rand(img.shape, generator=g)
        arr = (img[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        p = folder / f"{names[i] if names else f'{i:04d}'}{ext}"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths
