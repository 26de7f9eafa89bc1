"""How far the quantised DiT (model/quantize.py; paper §4, Table 5) lands from the unquantised one, on random
weights (issue #16): the relative error of the velocity at t = 0.5 and the PSNR of a 20-step CFG latent sampled from
the same noise. Table 5's quality cells need the released weights; this is the part that runs without them."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch

from model.config import get_preset
from model.quantize import check_mode, quantize_transformer
from model.samplers import classifier_free_guidance, flow_dpm_solver
from model.transformer import build_transformer
from sana_eval.bench.clock import device_name, timing_device, torch_dtype
from sana_eval.bench.transformer import random_inputs

CFG_SCALE = 4.5     # Sana's metric scripts' guidance (docs/model.md §5.3)


@dataclass(frozen=True)
class QuantizationError:
    preset: str
    resolution: int
    batch: int
    dtype: str                  # the unquantised reference's precision, which the quantised model also runs in
    quantize: str
    velocity_rel_err: float     # ‖v_q − v‖ / ‖v‖ of one CFG forward at t = 500 (sigma 0.5)
    latent_psnr_db: float       # 10 log10(range² / MSE) of the sampled latent, range = max − min of the reference's
    steps: int
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def psnr_db(out: torch.Tensor, ref: torch.Tensor) -> float:
    mse = (out.double() - ref.double()).pow(2).mean().item()
    span = (ref.max() - ref.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(span * span / mse)


@torch.no_grad()
def quantization_errors(preset: str, resolution: int, batch: int, dtype: str, modes: list[str], steps: int = 20,
                        device: str = "cuda", seed: int = 0) -> list[QuantizationError]:
    """One row per quantised mode, each against the same randomly initialised model unquantised."""
    modes = [check_mode(mode) for mode in modes if mode != "none"]
    dev, dt = timing_device(device), torch_dtype(dtype)
    cfg = get_preset(preset)
    torch.manual_seed(seed)
    model = build_transformer(cfg, device=dev, dtype=dt).eval()
    x, _, y, mask = random_inputs(cfg, resolution, 2 * batch, dev, dt)
    noise = x[:batch].float()
    t_half = torch.full((2 * batch,), 500.0, device=dev)

    def outputs(net: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        velocity = classifier_free_guidance(lambda z, t: net(z.to(dt), t, y, mask).float(), CFG_SCALE)
        return net(x, t_half, y, mask).float(), flow_dpm_solver(velocity, noise, steps, cfg.flow_shift)

    v_ref, latent_ref = outputs(model)
    rows = []
    for mode in modes:
        v, latent = outputs(quantize_transformer(copy.deepcopy(model), mode))
        rows.append(QuantizationError(preset=preset, resolution=resolution, batch=batch, dtype=dtype, quantize=mode,
                                      velocity_rel_err=relative_error(v, v_ref),
                                      latent_psnr_db=psnr_db(latent, latent_ref), steps=steps,
                                      gpu=device_name(dev)))
    return rows
