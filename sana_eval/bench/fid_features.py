"""Throughput of FID feature extraction (JPEG decoding + Sana's resize/crop + FID-Inception on the GPU): is it
bound by decoding, so that DataLoader workers pay off?"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from metrics.fid import InceptionEncoder, fid_transform
from metrics.images import ImageFileDataset
from sana_eval.bench.clock import Clock, device_name, timing_device


@dataclass(frozen=True)
class FeatureThroughput:
    images: int
    source_px: int
    img_size: int
    workers: int
    decode_img_per_s: float     # JPEG decode + Sana's resize/crop alone
    features_img_per_s: float   # the same plus FID-Inception on the GPU
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def write_images(folder: Path, count: int, side: int, ext: str = "jpg") -> list[Path]:
    """Smooth random images saved like Sana's generated files (PIL defaults: JPEG quality 75, or PNG by `ext`)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        low = rng.integers(0, 256, (max(1, side // 64), max(1, side // 64), 3), dtype=np.uint8)
        path = folder / f"{i:05d}.{ext}"
        Image.fromarray(low).resize((side, side), Image.BILINEAR).save(path)
        paths.append(path)
    return paths


def random_fid_inception(resize_input: bool = True) -> torch.nn.Module:
    """pytorch-fid's FID-Inception with random weights: throughput does not depend on them. `resize_input=False`
    skips its resize to 299 px (tests feed small images)."""
    import torchvision  # heavy, optional: only this timing builds pytorch-fid's network
    from pytorch_fid import inception as pfid  # heavy, optional: only this timing needs pytorch-fid

    with mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: {}):
        return pfid.InceptionV3([pfid.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=resize_input)


@torch.no_grad()
def time_fid_features(count: int = 2000, source_px: int = 1024, img_size: int = 512,
                      workers: tuple[int, ...] = (0, 4, 8, 16)) -> list[FeatureThroughput]:
    """FID feature extraction of `count` JPEGs: is it bound by JPEG decoding (issue: use DataLoader workers)?"""
    device = timing_device("cuda")
    encode = InceptionEncoder(random_fid_inception(), device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), count, source_px)
        dataset = ImageFileDataset(paths, range(len(paths)), fid_transform(img_size))
        for n in workers:
            def passes(model: bool, *, n: int = n) -> float:
                loader = torch.utils.data.DataLoader(dataset, batch_size=50, num_workers=n, pin_memory=True)
                clock = Clock(device)
                clock.mark()
                for _, batch in loader:
                    if model:
                        encode(batch)
                clock.mark()
                return count / clock.intervals()[0]

            decode = passes(False)
            rows.append(FeatureThroughput(count, source_px, img_size, n, decode, passes(True), device_name(device)))
    return rows
