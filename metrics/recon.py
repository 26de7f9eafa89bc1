"""Autoencoder reconstruction metrics of the paper's Table 1: rFID, PSNR, SSIM, LPIPS on MJHQ-30K images.

`reconstruction_metrics(autoencode, images)` runs every image through `autoencode` once and scores the
uint8-quantized reconstruction against the original; which autoencoder is wired in is the caller's job.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import torchvision.transforms as T
from tqdm.auto import tqdm

from metrics.base import Metric, MetricError, Result, package_versions, sha256_file
from metrics.fid import FID, FIDConfig, feature_stats, fid_transform, frechet_distance
from metrics.images import ImageFileDataset, ImageSet

# torchmetrics' LPIPS backbone per net type (torchvision ImageNet weights, fetched into the torch hub cache).
LPIPS_BACKBONES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}


@dataclass(frozen=True)
class ReconConfig:
    resolution: int = 1024                # images are Resize+CenterCrop'ed to this before encoding
    n: int | None = None                  # first n images of the set; None = all
    batch_size: int = 8
    num_workers: int = 4
    device: str | None = None
    data_range: float = 1.0               # PSNR/SSIM on [0, 1] floats of uint8 images
    ssim_kernel_size: int = 11
    ssim_sigma: float = 1.5
    lpips_net: str = "alex"               # torchmetrics' default; the Table 1 net is not stated in the paper
    fid: FIDConfig = field(default_factory=lambda: FIDConfig(img_size=1024))


def lpips_backbone_file(net: str) -> Path:
    """The torchvision ImageNet weights LPIPS needs; a one-line error naming file and URL when absent."""
    if net not in LPIPS_BACKBONES:
        raise MetricError(f"unknown LPIPS net {net!r} (expected one of {sorted(LPIPS_BACKBONES)})")
    url = torchvision.models.get_model_weights(LPIPS_BACKBONES[net]).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        raise MetricError(f"LPIPS backbone weights {path.name} not found at {path}; fetch it from {url}")
    return path


def lpips_linear_file(net: str) -> Path:
    """The LPIPS linear-layer weights torchmetrics ships in its package."""
    import torchmetrics.functional.image.lpips as tm_lpips  # heavy (about 1 s): only Table 1 needs torchmetrics

    return Path(inspect.getfile(tm_lpips)).parent / "lpips_models" / f"{net}.pth"


def quantize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float -> uint8 as torchvision.utils.save_image does (x*255 + 0.5, clamped, truncated)."""
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


class Reconstruction(Metric):
    """rFID / PSNR / SSIM / LPIPS of an autoencoder on one image set."""

    name = "recon"
    # Four numbers, two directions: rFID and LPIPS are distances to the originals, PSNR and SSIM similarities.
    higher_is_better = {"rfid": False, "psnr": True, "ssim": True, "lpips": False}

    def __init__(self, config: ReconConfig = ReconConfig()):
        self.config = config
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backbone = lpips_backbone_file(config.lpips_net)
        self.fid = FID(config.fid)

    @property
    def protocol(self) -> dict[str, Any]:
        c = self.config
        return {
            "metric": "recon", "resolution": c.resolution, "n": c.n,
            "preprocess": "PIL RGB; Resize(resolution) bilinear+antialias; CenterCrop(resolution); uint8",
            "autoencoder_io": "float32 [0,1] NCHW in; output clamped to [0,1], quantized like save_image",
            "psnr": {"impl": "torchmetrics.functional.peak_signal_noise_ratio", "data_range": c.data_range,
                     "per": "image", "aggregate": "mean over images"},
            "ssim": {"impl": "torchmetrics.functional.structural_similarity_index_measure",
                     "gaussian_kernel": True, "kernel_size": c.ssim_kernel_size, "sigma": c.ssim_sigma,
                     "k1": 0.01, "k2": 0.03, "data_range": c.data_range, "aggregate": "mean over images"},
            "lpips": {"impl": "torchmetrics LearnedPerceptualImagePatchSimilarity", "net": c.lpips_net,
                      "normalize": True, "linear_weights_sha256": sha256_file(lpips_linear_file(c.lpips_net)),
                      "backbone": self.backbone.name, "aggregate": "mean over images"},
            "rfid": self.fid.protocol,
            "versions": package_versions("torchmetrics", "torch", "torchvision"),
        }

    def _inception(self, batch_u8: torch.Tensor) -> np.ndarray:
        """Inception features of uint8 images through the FID protocol's own pre-step."""
        size = self.config.fid.img_size
        if batch_u8.shape[-1] == size and batch_u8.shape[-2] == size:
            x = batch_u8.float().div(255)  # Resize/CenterCrop to the current size are identities
        else:
            tf = fid_transform(size)
            x = torch.stack([tf(T.functional.to_pil_image(img.cpu())) for img in batch_u8])
        return self.fid.encoder(x)

    @torch.no_grad()
    def score(self, autoencode: Callable[[torch.Tensor], torch.Tensor], images: ImageSet) -> Result:
        # heavy (about 1 s to import): only Table 1's scoring needs torchmetrics
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        c = self.config
        items = images.items if c.n is None else images.first(c.n).items
        tf = T.Compose([T.Resize(c.resolution), T.CenterCrop(c.resolution), T.PILToTensor()])
        loader = torch.utils.data.DataLoader(
            ImageFileDataset([i.path for i in items], range(len(items)), tf), batch_size=c.batch_size,
            num_workers=c.num_workers, pin_memory=self.device.type == "cuda")
        lpips = LearnedPerceptualImagePatchSimilarity(net_type=c.lpips_net, normalize=True).to(self.device)
        per_item: dict[str, dict[str, float]] = {}
        feats_orig, feats_rec = [], []
        for idx, x_u8 in tqdm(loader, desc="recon", unit="batch", dynamic_ncols=True):
            x_u8 = x_u8.to(self.device)
            x = x_u8.float().div(255)                                 # (B, 3, R, R)
            y = autoencode(x)
            if y.shape != x.shape:
                raise MetricError(f"autoencode returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
            y_u8 = quantize(y.float().clamp(0, 1))
            y = y_u8.float().div(255)
            psnr = peak_signal_noise_ratio(y, x, data_range=c.data_range, reduction="none", dim=(1, 2, 3))
            ssim = structural_similarity_index_measure(
                y, x, gaussian_kernel=True, sigma=c.ssim_sigma, kernel_size=c.ssim_kernel_size,
                data_range=c.data_range, reduction="none")
            lp = lpips.net(y, x, normalize=True).reshape(-1)          # per-image LPIPS
            for k, i in enumerate(idx.tolist()):
                per_item[items[i].id] = {"psnr": float(psnr[k]), "ssim": float(ssim[k]), "lpips": float(lp[k])}
            feats_orig.append(self._inception(x_u8))
            feats_rec.append(self._inception(y_u8))
        allow = c.fid.allow_few_images
        rfid = frechet_distance(*feature_stats(np.concatenate(feats_orig), what="originals", allow_few=allow),
                                *feature_stats(np.concatenate(feats_rec), what="reconstructions", allow_few=allow))
        aggregate = {k: float(np.mean([v[k] for v in per_item.values()])) for k in ("psnr", "ssim", "lpips")}
        aggregate["rfid"] = rfid
        provenance = {"images": images.name, "revision": images.revision, "n": len(items),
                      "device": str(self.device), "lpips_backbone_path": str(self.backbone)}
        return Result(self.name, self.protocol, aggregate, per_item, provenance)


def reconstruction_metrics(autoencode: Callable[[torch.Tensor], torch.Tensor], images: ImageSet,
                           config: ReconConfig = ReconConfig()) -> Result:
    """Table 1 row for one autoencoder: {"rfid", "psnr", "ssim", "lpips"} plus per-image values."""
    return Reconstruction(config).score(autoencode, images)
