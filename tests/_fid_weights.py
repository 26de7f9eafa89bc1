"""Test support: FID Inception weights with random values, built without any download.

Both our FID and pytorch-fid's own pipeline load this one file, so the tests compare the two
pipelines on identical networks.
"""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import torch
import torchvision
from PIL import Image
from pytorch_fid import inception as pfid_inception

from metrics.base import sha256_file
from metrics.fid import FID_WEIGHTS_FILE


def make_random_fid_weights(hub_dir: Path, seed: int = 0) -> tuple[Path, str]:
    """Write a randomly initialised FID-Inception state dict where pytorch-fid looks for its weights."""
    torch.manual_seed(seed)
    # fid_inception_v3 builds the patched network and then loads the official file; skip only the load.
    with mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(pfid_inception, "load_state_dict_from_url", lambda *a, **k: {}):
        net = pfid_inception.fid_inception_v3()
    # He-normal convolutions keep the input's signal alive through ~90 layers (PyTorch's default init
    # shrinks it to ~1e-8 of the output, making every image's features equal); random BatchNorm
    # statistics make eval mode matter.
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.05)
            m.running_var.uniform_(0.8, 1.2)
    sd = net.state_dict()
    path = hub_dir / "checkpoints" / FID_WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
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
