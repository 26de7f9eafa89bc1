"""Flow-matching ODE samplers for Sana: Flow-DPM-Solver (paper Algorithm 1) and Flow-Euler (docs/model.md §5).

Convention (docs/model.md §5): sigma in [0, 1], x_sigma = (1 - sigma) x0 + sigma eps, the model predicts the velocity
v = eps - x0 and is called as ``velocity(x, t)`` with t = 1000 sigma as a (B,) tensor. Guidance (CFG, PAG) is a
composition around ``velocity`` (see ``classifier_free_guidance``), never part of a sampler.

Precision: latents are kept in fp32 (float64 stays float64), as diffusers' schedulers upcast them; the grid and the
per-step scalar coefficients are computed in float64 from the exact grid.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, ...), t (B,) on 0-1000) -> v (B, ...)
Callback = Callable[[dict[str, Any]], None]
X0Formula = Literal["diffusers", "nvlabs"]

NUM_TRAIN_TIMESTEPS = 1000  # model time t = 1000 sigma (docs/model.md §5)


def _check_schedule_args(steps: int, shift: float) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")


def _shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    # SD3-style time shift, paper Algorithm 1 line 1: s sigma / (1 + (s - 1) sigma).
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


# ----------------------------------------------------------------------------------------------------------------
# Schedules (pure functions). Sigmas are float64, decreasing, with a final 0 appended: shape (steps + 1,).

def flow_dpm_sigmas(steps: int, shift: float) -> torch.Tensor:
    """The ``time_uniform_flow`` grid of Flow-DPM-Solver (docs/model.md §5.1): 1 - linspace(1, 1/1000, N + 1), shifted,
    reversed, so sigma_0 = shift(0.999) and sigma_N = 0. Computed in float64 as diffusers does."""
    _check_schedule_args(steps, shift)
    unshifted = 1.0 - np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1, dtype=np.float64)
    return torch.from_numpy(np.flip(_shift_sigmas(unshifted, shift)).copy())


def dpm_timesteps(sigmas: torch.Tensor) -> torch.Tensor:
    """Integer model timesteps floor(1000 sigma_i) for every step (all but the final 0), as diffusers'
    DPMSolverMultistepScheduler stores them and NVlabs' ``.long()`` computes them (docs/model.md §5.1)."""
    return torch.floor(sigmas[:-1].double() * NUM_TRAIN_TIMESTEPS).to(torch.int64)


def flow_euler_sigmas(steps: int, shift: float) -> torch.Tensor:
    """Flow-Euler grid with diffusers' FlowMatchEulerDiscreteScheduler semantics (docs/model.md §5.2): the bounds
    sigma_max = 1 and sigma_min = shift(1/1000) are already shifted, and linspace(sigma_max, sigma_min, N) is shifted
    a second time. Model timesteps are the fractional 1000 sigma_i."""
    _check_schedule_args(steps, shift)
    sigma_min = float(_shift_sigmas(np.float64(1.0 / NUM_TRAIN_TIMESTEPS), shift))
    grid = np.linspace(1.0, sigma_min, steps, dtype=np.float64)
    return torch.from_numpy(np.append(_shift_sigmas(grid, shift), 0.0))


# ----------------------------------------------------------------------------------------------------------------
# Guidance compositions: each wraps a velocity fn that evaluates all branches as one stacked batch.

def _upcast(v: torch.Tensor) -> torch.Tensor:
    # Guidance is combined in at least fp32, as diffusers' Sana pipelines upcast the model output first.
    return v.to(torch.promote_types(v.dtype, torch.float32))


def classifier_free_guidance(velocity_batched: Velocity, scale: float) -> Velocity:
    """CFG on the velocity (docs/model.md §5): v = v_u + w (v_c - v_u).

    ``velocity_batched`` receives the batch [uncond; cond] (2B, ...) with t repeated, and must route the null and
    the prompt conditioning to the two halves itself (NVlabs and diffusers both order them uncond first).
    """
    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_uncond, v_cond = _upcast(velocity_batched(torch.cat([x, x]), torch.cat([t, t]))).chunk(2)  # (B, ...) x2
        return v_uncond + scale * (v_cond - v_uncond)

    return guided


def perturbed_attention_guidance(velocity_batched: Velocity, cfg_scale: float, pag_scale: float) -> Velocity:
    """CFG + PAG on the velocity (docs/model.md §5.3): v = v_u + w_cfg (v_c - v_u) + w_pag (v_c - v_ptb).

    ``velocity_batched`` receives [uncond; cond; cond] (3B, ...) and must run the third copy with identity
    self-attention in the PAG layers (NVlabs and diffusers use this branch order).
    """
    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_uncond, v_cond, v_perturbed = _upcast(velocity_batched(torch.cat([x, x, x]), torch.cat([t, t, t]))).chunk(3)
        return v_uncond + cfg_scale * (v_cond - v_uncond) + pag_scale * (v_cond - v_perturbed)

    return guided


# ----------------------------------------------------------------------------------------------------------------
# Samplers.

def _work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _evaluate(velocity: Velocity, x: torch.Tensor, t: float) -> torch.Tensor:
    t_batch = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)  # (B,)
    v = velocity(x, t_batch)
    if v.shape != x.shape:
        raise ValueError(f"velocity returned shape {tuple(v.shape)} for input shape {tuple(x.shape)}")
    return v.to(x.dtype)


def _data_prediction(x: torch.Tensor, v: torch.Tensor, sigma: float, formula: X0Formula) -> torch.Tensor:
    # Paper Algorithm 1 line 2: x_theta = x - sigma v (diffusers). NVlabs goes through the noise prediction
    # eps_hat = x + (1 - sigma) v and divides by alpha = 1 - sigma (~3e-4 at the first step), which differs in fp32.
    if formula == "diffusers":
        return x - sigma * v
    eps_hat = x + (1.0 - sigma) * v
    return (x - sigma * eps_hat) / (1.0 - sigma)


def _half_log_snr(sigma: float) -> float:
    # lambda = log(alpha / sigma) with alpha = 1 - sigma (paper Algorithm 1; DPM-Solver++ in lambda).
    return math.log1p(-sigma) - math.log(sigma)


@torch.no_grad()
def flow_dpm_solver(
    velocity: Velocity,
    x: torch.Tensor,
    steps: int = 20,
    shift: float = 3.0,
    *,
    x0_formula: X0Formula = "diffusers",
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Flow-DPM-Solver: Algorithm 1 of the Sana paper, i.e. DPM-Solver++ 2M (multistep, order 2, midpoint form) in
    lambda = log((1 - sigma) / sigma) on the shifted ``flow_dpm_sigmas`` grid, with v converted to x0-hat.

    The first step is first order; steps 1..N-2 are second order; the last step (sigma_N = 0) is first order and
    reduces exactly to x0-hat at sigma_{N-1} (lower_order_final, no denoise-to-zero call). NFE = ``steps``. The model
    sees the integer timesteps ``dpm_timesteps`` (as float). Matches diffusers' DPMSolverMultistepScheduler with
    use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift (docs/model.md §5.1).

    x: the initial noise at sigma_0 (B, ...). ``x0_formula``: "diffusers" (x - sigma v) or "nvlabs"
    ((x - sigma eps_hat) / (1 - sigma)). ``callback`` gets a dict after every step: i, x (the new state), sigma,
    sigma_next, t, denoised (x0-hat). Returns x0 in fp32 (float64 if x is float64).
    """
    if x0_formula not in ("diffusers", "nvlabs"):
        raise ValueError(f"x0_formula must be 'diffusers' or 'nvlabs', got {x0_formula!r}")
    sigma_grid = flow_dpm_sigmas(steps, shift)
    sigmas, timesteps = sigma_grid.tolist(), dpm_timesteps(sigma_grid).tolist()
    x = x.to(_work_dtype(x))
    x0_prev = None
    for i in tqdm(range(steps), desc="Flow-DPM-Solver", disable=not progress):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0 = _data_prediction(x, _evaluate(velocity, x, float(timesteps[i])), sigma, x0_formula)
        if sigma_next == 0.0:
            # First-order step to lambda = +inf: sigma_next / sigma -> 0, alpha_next (1 - e^{-h}) -> 1.
            x = x0
        else:
            h = _half_log_snr(sigma_next) - _half_log_snr(sigma)
            x0_weight = -(1.0 - sigma_next) * math.expm1(-h)  # alpha_{i+1} (1 - e^{-h})
            x_next = (sigma_next / sigma) * x + x0_weight * x0
            if x0_prev is not None:
                # 2M correction: D1 = (x0_i - x0_{i-1}) / r with r = h_{i-1} / h_i, weighted by alpha (1 - e^{-h}) / 2.
                r = (_half_log_snr(sigma) - _half_log_snr(sigmas[i - 1])) / h
                x_next = x_next + (0.5 * x0_weight / r) * (x0 - x0_prev)
            x = x_next
        x0_prev = x0
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "t": timesteps[i], "denoised": x0})
    return x


@torch.no_grad()
def flow_euler(
    velocity: Velocity,
    x: torch.Tensor,
    steps: int = 28,
    shift: float = 3.0,
    *,
    callback: Callback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Flow-Euler (docs/model.md §5.2): x <- x + (sigma_{i+1} - sigma_i) v(x, 1000 sigma_i) on the doubly shifted
    ``flow_euler_sigmas`` grid, with fractional timesteps, as diffusers' FlowMatchEulerDiscreteScheduler(shift).
    NVlabs' FlowEuler always runs shift 3.0 and floors t inside its model; that is the caller's and model's concern.

    ``callback`` gets a dict after every step: i, x (the new state), sigma, sigma_next, t, denoised (x - sigma v).
    Returns x0 in fp32 (float64 if x is float64).
    """
    sigmas = flow_euler_sigmas(steps, shift).tolist()
    x = x.to(_work_dtype(x))
    for i in tqdm(range(steps), desc="Flow-Euler", disable=not progress):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        # diffusers stores fp32 sigmas and scales them in fp32; the model sees exactly that fractional t.
        t = float(torch.tensor(sigma, dtype=torch.float32) * NUM_TRAIN_TIMESTEPS)
        v = _evaluate(velocity, x, t)
        x_next = x + (sigma_next - sigma) * v
        if callback is not None:
            callback({"i": i, "x": x_next, "sigma": sigma, "sigma_next": sigma_next, "t": t, "denoised": x - sigma * v})
        x = x_next
    return x
