"""Sana-compatible FID on MJHQ-30K (docs/protocols.md §1.2): pytorch-fid's InceptionV3 and Frechet distance,
with the Resize(img_size) + CenterCrop(img_size) PIL pre-step of NVlabs/Sana `compute_fid.py`.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torchvision.transforms as T
from pytorch_fid import inception as pfid_inception
from pytorch_fid.fid_score import calculate_frechet_distance

from metrics.base import (
    ONE_PROCESS,
    FeatureCache,
    Metric,
    MetricError,
    ProtocolMismatchError,
    Result,
    WorkShare,
    atomic_path,
    canonical_json,
    package_versions,
    protocol_id,
    sha256_file,
)
from metrics.fid_crosscheck import cross_check_fid
from metrics.images import ImageSet, extract_features

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FID_WEIGHTS_URL = pfid_inception.FID_WEIGHTS_URL
FID_DIMS = 2048
# Below the feature dimension the covariance is rank-deficient (pytorch-fid#13): FID is meaningless.
MIN_FID_IMAGES = FID_DIMS


class FIDWeightsError(MetricError):
    """The FID Inception weights file is missing or is not the pinned one."""


class ReferenceStatsMismatch(ProtocolMismatchError):
    """A cached reference-statistics file was made for another dataset, size, N or implementation."""


@dataclass(frozen=True)
class FIDConfig:
    img_size: int = 512                  # Sana's launchers' default, 1024-px models too (docs/protocols.md §1.2 step 3)
    weights_path: str | None = None      # default: torch hub cache checkpoints/<FID_WEIGHTS_FILE>
    weights_sha256: str = FID_WEIGHTS_SHA256
    batch_size: int = 50                 # Sana/pytorch-fid default; numbers do not depend on it
    num_workers: int = 4
    device: str | None = None            # default: cuda if available
    allow_few_images: bool = False       # < 2048 images: warn instead of refusing
    cache_dir: str | None = None         # per-image features and reference statistics
    key_mode: str = "stat"               # feature-cache key: "stat" (path+size+mtime) or "sha256"
    cross_checks: tuple[str, ...] = ()   # extra columns, see metrics.fid_crosscheck.CROSS_CHECKS


def find_fid_weights(path: str | os.PathLike | None = None) -> Path:
    """The FID Inception weights: an explicit path, else the torch hub cache where pytorch-fid puts them."""
    cand = Path(path) if path is not None else Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
    if not cand.is_file():
        raise FIDWeightsError(f"FID Inception weights {FID_WEIGHTS_FILE} not found at {cand}; "
                              f"fetch it from {FID_WEIGHTS_URL}")
    return cand


def load_fid_inception(path: Path, sha256: str) -> pfid_inception.InceptionV3:
    """pytorch-fid's FID InceptionV3 (pool3, 2048-d) built by the library, weights from a checked local file."""
    digest = sha256_file(path)
    if digest != sha256:
        raise FIDWeightsError(f"{path}: sha256 {digest} is not the pinned {sha256}")

    def local_weights(url, *args, **kwargs):
        # pytorch-fid fetches by URL; serve the verified file instead so nothing is downloaded.
        if os.path.basename(url) != FID_WEIGHTS_FILE:
            raise FIDWeightsError(f"pytorch-fid asked for unexpected weights {url}")
        return torch.load(path, map_location="cpu", weights_only=True)

    with mock.patch.object(pfid_inception, "load_state_dict_from_url", local_weights):
        model = pfid_inception.InceptionV3([pfid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[FID_DIMS]])
    return model.eval()


def fid_transform(img_size: int) -> T.Compose:
    """Sana's pre-step: PIL Resize (torchvision default bilinear, antialiased on PIL) + CenterCrop + ToTensor."""
    return T.Compose([T.Resize(img_size), T.CenterCrop(img_size), T.ToTensor()])


class InceptionEncoder:
    """Batch (B, 3, H, W) in [0, 1] -> pool3 features (B, 2048) float32, as pytorch-fid's get_activations."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model, self.device = model.to(device).eval(), device

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        # BatchNorm in train mode silently changes every feature (pytorch-fid#118).
        assert not self.model.training, "FID Inception must be in eval mode"
        pred = self.model(batch.to(self.device))[0]  # (B, 2048, 1, 1)
        return pred.squeeze(3).squeeze(2).float().cpu().numpy()  # (B, 2048)


def feature_stats(feats: np.ndarray, *, what: str, allow_few: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """mu and sigma as pytorch-fid: float64, np.mean and np.cov(rowvar=False) (N-1 denominator)."""
    feats = np.asarray(feats, dtype=np.float64)
    if not np.isfinite(feats).all():
        bad = int((~np.isfinite(feats)).any(axis=1).sum())
        raise MetricError(f"{what}: {bad} images have non-finite Inception features")
    if feats.shape[0] < MIN_FID_IMAGES:
        msg = f"{what}: {feats.shape[0]} images, FID needs at least {MIN_FID_IMAGES}"
        if not allow_few:
            raise MetricError(msg + " (allow_few_images=True to compute it anyway)")
        warnings.warn(msg + "; the value is biased and not comparable", stacklevel=2)
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """pytorch-fid's Frechet distance itself (scipy sqrtm, eps retry, imaginary-part check)."""
    return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


# ----------------------------------------------------------------------------------------------
# Reference statistics on disk, keyed by (dataset, revision, subset, img_size, N, implementation).

@dataclass(frozen=True, eq=False)
class FIDStats:
    mu: np.ndarray
    sigma: np.ndarray
    key: Mapping[str, Any] = field(default_factory=dict)
    sha256: str | None = None            # of the file it was saved to / loaded from


def save_stats(path: str | os.PathLike, stats: FIDStats) -> FIDStats:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mu=stats.mu, sigma=stats.sigma, key=np.array(canonical_json(dict(stats.key))))
    digest = sha256_file(path)
    with atomic_path(path.with_name(path.name + ".sha256")) as tmp:
        tmp.write_text(f"{digest}  {path.name}\n")
    return FIDStats(stats.mu, stats.sigma, stats.key, digest)


def load_stats(path: str | os.PathLike, key: Mapping[str, Any]) -> FIDStats:
    """Load cached statistics; refuse a file whose key or checksum does not match."""
    path = Path(path)
    digest = sha256_file(path)
    side = path.with_name(path.name + ".sha256")
    if side.is_file() and side.read_text().split()[0] != digest:
        raise MetricError(f"{path}: sha256 {digest} differs from {side.name}; delete both to recompute")
    with np.load(path, allow_pickle=False) as z:
        if "key" not in z:
            raise ReferenceStatsMismatch(f"{path}: no key stored; cannot tell how it was made")
        stored = str(z["key"])
        mu, sigma = z["mu"], z["sigma"]
    if stored != canonical_json(dict(key)):
        raise ReferenceStatsMismatch(f"{path}: made for {stored}, requested {canonical_json(dict(key))}")
    return FIDStats(mu, sigma, dict(key), digest)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[-60:]


class FID(Metric):
    """Sana-compatible FID; `score` gives overall and per-category FID (one protocol for all cells)."""

    name = "fid"
    higher_is_better = False             # a distance to the reference images

    def __init__(self, config: FIDConfig = FIDConfig(), share: WorkShare = ONE_PROCESS):
        self.config, self.share = config, share
        self.weights_path = find_fid_weights(config.weights_path)
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self._encoder: InceptionEncoder | None = None
        self._cache: FeatureCache | None = None

    @property
    def protocol(self) -> dict[str, Any]:
        c = self.config
        return {
            "metric": "fid", "network": "pytorch_fid.inception.InceptionV3 pool3", "dims": FID_DIMS,
            "weights": FID_WEIGHTS_FILE, "weights_sha256": c.weights_sha256,
            "preprocess": "PIL RGB; Resize(img_size) bilinear+antialias; CenterCrop(img_size); ToTensor",
            "img_size": c.img_size,
            "network_resize": "F.interpolate(299, bilinear, align_corners=False, no antialias); 2x-1",
            "features": "float32 -> float64", "stats": "np.mean, np.cov(rowvar=False)",
            "distance": "pytorch_fid.fid_score.calculate_frechet_distance",
            "versions": package_versions("pytorch-fid", "torch", "torchvision", "scipy", "numpy", "pillow"),
        }

    @property
    def encoder(self) -> InceptionEncoder:
        if self._encoder is None:
            self._encoder = InceptionEncoder(load_fid_inception(self.weights_path, self.config.weights_sha256),
                                             self.device)
        return self._encoder

    @property
    def cache(self) -> FeatureCache | None:
        if self._cache is None and self.config.cache_dir is not None:
            self._cache = FeatureCache(Path(self.config.cache_dir) / "features", self.name, self.protocol)
        return self._cache

    def features(self, images: ImageSet) -> np.ndarray:
        """(N, 2048) float64 Inception features in `images` order."""
        c = self.config
        # A lambda, so the network is loaded only when some feature is not cached.
        feats = extract_features([i.path for i in images.items], fid_transform(c.img_size),
                                 lambda batch: self.encoder(batch), self.cache,
                                 batch_size=c.batch_size, num_workers=c.num_workers,
                                 desc=f"FID features {_slug(images.name)[-30:]}", key_mode=c.key_mode,
                                 pin_memory=self.device.type == "cuda", share=self.share)
        return feats.astype(np.float64)

    def stats_key(self, images: ImageSet, subset: str) -> dict[str, Any]:
        return {"dataset": images.name, "revision": images.revision, "subset": subset,
                "img_size": self.config.img_size, "n": len(images), "implementation": self.protocol}

    def _stats_path(self, images: ImageSet, subset: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        name = f"{_slug(images.name)}-{_slug(subset)}-{self.config.img_size}px-n{len(images)}.npz"
        return Path(self.config.cache_dir) / "fid-stats" / name

    def _save_features(self, images: ImageSet, feats: np.ndarray) -> dict[str, str]:
        """The generated features and reference statistics behind the number, so `sana-eval compare` can
        bootstrap FID over images; only with a cache_dir."""
        if self.config.cache_dir is None:
            return {}
        path = Path(self.config.cache_dir) / "fid-features" / (
            f"{_slug(images.name)}-{self.config.img_size}px-n{len(images)}-{protocol_id(self.protocol)}.npy")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, feats)
        return {"features": str(path.resolve()), "features_sha256": sha256_file(path)}

    def reference_stats(self, images: ImageSet, subset: str = "all",
                        feats: np.ndarray | None = None) -> FIDStats:
        """Statistics of a reference set, read from / written to the stats cache when cache_dir is set."""
        key = self.stats_key(images, subset)
        path = self._stats_path(images, subset)
        if path is not None and path.is_file():
            return load_stats(path, key)
        mu, sigma = feature_stats(self.features(images) if feats is None else feats,
                                  what=f"{images.name} [{subset}]", allow_few=self.config.allow_few_images)
        stats = FIDStats(mu, sigma, key)
        return save_stats(path, stats) if path is not None and self.share.is_main else stats

    def _distance(self, mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
        """The Fréchet distance; across processes only the main one takes the matrix square root (tens of seconds
        at 2048 dimensions on a CPU), the others' results being replaced by its (sana_eval/scoring/dispatch.py)."""
        return frechet_distance(mu1, sigma1, mu2, sigma2) if self.share.is_main else math.nan

    def score(self, generated: ImageSet, reference: ImageSet, *, by_category: bool = True) -> Result:
        """FID of `generated` against `reference` (overall, and per category when items carry one)."""
        # Fail before hours of feature extraction, not after.
        sets = [(generated.name, generated), (reference.name, reference)]
        if by_category:
            sets += [(f"{reference.name} [{c}]", reference.subset(c)) for c in reference.categories]
        for what, s in sets:
            if len(s) < MIN_FID_IMAGES and not self.config.allow_few_images:
                raise MetricError(f"{what}: {len(s)} images, FID needs at least {MIN_FID_IMAGES} "
                                  "(allow_few_images=True to compute it anyway)")
        if len(generated) != len(reference):
            warnings.warn(f"FID: {len(generated)} generated vs {len(reference)} reference images", stacklevel=2)
        allow = self.config.allow_few_images
        gen_feats = self.features(generated)
        ref_stats = self.reference_stats(reference)
        aggregate = {"fid": self._distance(*feature_stats(gen_feats, what=generated.name, allow_few=allow),
                                             ref_stats.mu, ref_stats.sigma)}
        ref_sha = {"all": ref_stats.sha256}
        if by_category and reference.categories:
            gen_cat = np.array([i.category for i in generated.items], dtype=object)
            for cat in reference.categories:
                sub = reference.subset(cat)
                cstats = self.reference_stats(sub, cat)
                cfeats = gen_feats[gen_cat == cat]
                aggregate[f"fid/{cat}"] = self._distance(
                    *feature_stats(cfeats, what=f"{generated.name} [{cat}]", allow_few=allow),
                    cstats.mu, cstats.sigma)
                ref_sha[cat] = cstats.sha256
        provenance: dict[str, Any] = {
            "generated": generated.name, "n_generated": len(generated),
            "reference": reference.name, "reference_revision": reference.revision,
            "n_reference": len(reference), "reference_stats_sha256": ref_sha,
            "weights_path": str(self.weights_path), "device": str(self.device),
        }
        if not self.share.is_main:   # its result is the main process's (docs/architecture.md §4.7)
            return Result(self.name, self.protocol, aggregate, {}, provenance)
        saved = self._save_features(generated, gen_feats)
        if saved:
            provenance.update(saved, reference_stats=str(self._stats_path(reference, "all").resolve()))
        if self.config.cross_checks:
            provenance["cross_checks"] = cross_check_fid(self, generated, reference, self.config.cross_checks)
        return Result(self.name, self.protocol, aggregate, {}, provenance)

