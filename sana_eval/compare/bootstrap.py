"""Bootstrap statistics for checkpoint comparison: block-stratified resampling, percentile intervals, and the
Fréchet distance recomputed on resampled Inception features (FID, docs/protocols.md §1.2).

Pure numerics: no file formats and no metric names; `sana_eval.compare.deltas` decides what is resampled.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# Upper bound on index entries (and feature rows x dims) held at once; keeps 30K-item metrics in ~100 MB.
_CHUNK_ENTRIES = 4_000_000


def block_resample(bounds: Sequence[tuple[int, int]], k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, n) indices: columns start:end of each block are drawn with replacement from start:end only.

    One block is the plain bootstrap; several blocks keep each stratum's size fixed (stratified bootstrap).
    """
    n = bounds[-1][1] if bounds else 0
    idx = np.empty((k, n), dtype=np.int64)
    for start, end in bounds:
        idx[:, start:end] = start + rng.integers(0, end - start, size=(k, end - start))
    return idx


def bootstrap(stat: Callable[[np.ndarray], np.ndarray], bounds: Sequence[tuple[int, int]], n_boot: int,
              rng: np.random.Generator) -> np.ndarray:
    """(n_boot, m): `stat` of `n_boot` resamples; `stat` maps (k, n) indices to (k, m) statistics."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = bounds[-1][1] if bounds else 0
    if n == 0 or any(end <= start for start, end in bounds):
        raise ValueError("bootstrap needs at least one item in every block")
    step = max(1, _CHUNK_ENTRIES // n)
    parts = [stat(block_resample(bounds, min(step, n_boot - done), rng)) for done in range(0, n_boot, step)]
    return np.concatenate(parts, axis=0)


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Equal-tailed percentile interval of bootstrap replicates (Efron & Tibshirani 1993, §13.3)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    samples = np.asarray(samples, dtype=np.float64)
    if not np.isfinite(samples).all():
        raise ValueError(f"{int((~np.isfinite(samples)).sum())} bootstrap replicates are not finite")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------------
# Fréchet distance, ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017, Eq. 6).
#
# Why a second implementation beside `metrics.fid.frechet_distance`: that one is pytorch-fid's own (scipy `sqrtm`
# of the non-symmetric S1 S2 in float64 numpy, with an eps retry), so reported FIDs are Sana's numbers to the bit;
# but it takes seconds per call at D = 2048 on the CPU and cannot batch. A bootstrap needs thousands of them, so
# here tr((S1 S2)^(1/2)) = tr((S2^(1/2) S1 S2^(1/2))^(1/2)) is taken from symmetric eigendecompositions in float64
# torch, batched over resamples and runnable on a GPU, with S2^(1/2) computed once. Both are exact in exact
# arithmetic; on full-rank statistics they agree within 1e-9 relative (tests/test_compare.py; ~1e-14 is typical),
# and where they may differ more (ill-conditioned covariances) only the interval is ours: reported FIDs stay
# pytorch-fid's, and `compare` refuses features whose recomputed FID is off by more than 1e-3 relative.

def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(sigma)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def _trace_sqrt_product(cov: torch.Tensor, ref_root: torch.Tensor) -> torch.Tensor:
    """tr((C S)^(1/2)) = tr((S^(1/2) C S^(1/2))^(1/2)): a symmetric eigenproblem, batched over leading dims."""
    inner = ref_root @ cov @ ref_root                         # (..., D, D)
    inner = (inner + inner.transpose(-1, -2)) / 2             # exact symmetry for eigvalsh
    return torch.linalg.eigvalsh(inner).clamp_min(0).sqrt().sum(-1)  # (...)


def frechet_distance_eigh(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians through symmetric eigendecompositions (float64 torch): the numerics
    of `bootstrap_frechet`, used to check a result's features against its reported FID before resampling them."""
    m1, s1, m2, s2 = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (mu1, sigma1, mu2, sigma2))
    trace = _trace_sqrt_product(s1, _psd_sqrt(s2))
    return float(((m1 - m2) ** 2).sum() + s1.trace() + s2.trace() - 2 * trace)


def bootstrap_frechet(feats: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, n_boot: int,
                      rng: np.random.Generator, device: str | torch.device = "cpu") -> np.ndarray:
    """(n_boot,) Fréchet distances of row-resampled `feats` (N, D) to fixed reference statistics.

    The reference side is not resampled: both checkpoints are measured against the same reference, so its
    sampling error is common to them and cancels out of their difference to first order.
    """
    x = torch.as_tensor(np.asarray(feats), dtype=torch.float64, device=device)  # (N, D)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"bootstrap FID needs at least 2 feature rows, got {n}")
    mu_r = torch.as_tensor(np.asarray(ref_mu), dtype=torch.float64, device=device)      # (D,)
    sigma_r = torch.as_tensor(np.asarray(ref_sigma), dtype=torch.float64, device=device)  # (D, D)
    root_r, const = _psd_sqrt(sigma_r), sigma_r.trace()
    step = max(1, _CHUNK_ENTRIES // (n * d))
    out = []
    for done in range(0, n_boot, step):
        idx = torch.from_numpy(block_resample([(0, n)], min(step, n_boot - done), rng)).to(device)
        xs = x[idx]                                           # (k, N, D)
        mu = xs.mean(1)                                       # (k, D)
        xc = xs - mu[:, None]                                 # (k, N, D)
        cov = xc.transpose(1, 2) @ xc / (n - 1)               # (k, D, D), np.cov's N-1 denominator
        trace = _trace_sqrt_product(cov, root_r)              # (k,)
        fid = ((mu - mu_r) ** 2).sum(-1) + cov.diagonal(dim1=1, dim2=2).sum(-1) + const - 2 * trace
        out.append(fid.cpu().numpy())
    return np.concatenate(out)
