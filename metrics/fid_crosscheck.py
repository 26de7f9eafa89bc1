"""Cross-check FID columns from other implementations (docs/protocols.md §6); never part of the headline.

Each column is made by the named library on the same images, so its number differs from the
Sana-compatible FID by that library's resize/normalisation choices. A column that cannot be made
(library or weights absent) is reported as skipped, with the reason.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision.transforms as T

from metrics.base import MetricError, package_versions
from metrics.images import ImageFileDataset, ImageSet

if TYPE_CHECKING:  # only annotated here: metrics.fid calls this module
    from metrics.fid import FID

CROSS_CHECKS = ("torchmetrics", "torchmetrics-noantialias", "clean-fid")
CLEANFID_WEIGHTS = Path("/tmp/inception-2015-12-05.pt")  # where clean-fid itself looks (Linux)
CLEANFID_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


class SkipCrossCheck(Exception):
    """This column cannot be made here; the message says why."""


def _uint8_batches(fid: FID, images: ImageSet):
    """The Sana pre-step (Resize + CenterCrop to img_size) as uint8 batches, for uint8-input libraries."""
    c = fid.config
    tf = T.Compose([T.Resize(c.img_size), T.CenterCrop(c.img_size), T.PILToTensor()])
    paths = [i.path for i in images.items]
    loader = torch.utils.data.DataLoader(ImageFileDataset(paths, range(len(paths)), tf),
                                         batch_size=c.batch_size, num_workers=c.num_workers)
    for _, batch in loader:
        yield batch.to(fid.device)


def _torchmetrics(fid: FID, generated: ImageSet, reference: ImageSet, antialias: bool) -> dict[str, Any]:
    try:  # heavy, optional: without torchmetrics this cross-check is skipped
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as e:
        raise SkipCrossCheck(f"torchmetrics not importable: {e}") from None
    if not _TORCH_FIDELITY_AVAILABLE:
        raise SkipCrossCheck("torchmetrics' FID extractor needs torch-fidelity, which is not installed")
    if "antialias" not in inspect.signature(FrechetInceptionDistance.__init__).parameters:
        raise SkipCrossCheck("this torchmetrics version has no antialias option")
    # torch-fidelity's weights file is byte-identical to pytorch-fid's (same sha256), so reuse the checked one.
    metric = FrechetInceptionDistance(feature=2048, normalize=False, antialias=antialias,
                                      feature_extractor_weights_path=str(fid.weights_path)).to(fid.device)
    for real, images in ((True, reference), (False, generated)):
        for batch in _uint8_batches(fid, images):
            metric.update(batch, real=real)
    return {"fid": float(metric.compute()), "antialias": antialias,
            "input": f"uint8 after Resize/CenterCrop({fid.config.img_size})",
            "versions": package_versions("torchmetrics", "torch-fidelity")}


def _cleanfid(fid: FID, generated: ImageSet, reference: ImageSet) -> dict[str, Any]:
    try:  # optional: without clean-fid this cross-check is skipped
        from cleanfid import fid as cfid
    except ImportError as e:
        raise SkipCrossCheck(f"clean-fid not installed: {e}") from None
    if not CLEANFID_WEIGHTS.is_file():
        raise SkipCrossCheck(f"clean-fid weights {CLEANFID_WEIGHTS} absent; fetch from {CLEANFID_URL}")
    model = cfid.build_feature_extractor("clean", fid.device, use_dataparallel=False)
    stats = []
    for images in (generated, reference):
        feats = cfid.get_files_features([str(i.path) for i in images.items], model, num_workers=fid.config.num_workers,
                                        batch_size=fid.config.batch_size, device=fid.device, mode="clean",
                                        verbose=False)
        stats += [np.mean(feats, axis=0), np.cov(feats, rowvar=False)]
    return {"fid": float(cfid.frechet_distance(*stats)), "mode": "clean", "input": "original files",
            "versions": package_versions("clean-fid")}


def cross_check_fid(fid: FID, generated: ImageSet, reference: ImageSet, names: Sequence[str]) -> dict[str, Any]:
    """{column: {"fid": value, ...} or {"skipped": reason}} for each requested implementation."""
    out: dict[str, Any] = {}
    for name in names:
        try:
            if name == "torchmetrics":
                out[name] = _torchmetrics(fid, generated, reference, antialias=True)
            elif name == "torchmetrics-noantialias":
                out[name] = _torchmetrics(fid, generated, reference, antialias=False)
            elif name == "clean-fid":
                out[name] = _cleanfid(fid, generated, reference)
            else:
                raise MetricError(f"unknown FID cross-check {name!r} (expected one of {CROSS_CHECKS})")
        except SkipCrossCheck as e:
            out[name] = {"skipped": str(e)}
    return out
