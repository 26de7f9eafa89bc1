"""Kernel-level views of the transformer's speed (paper §2.2 kernel fusion): the linear attention alone, eager
against the fused Triton kernels, and where one forward of the whole model spends its GPU time."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from model.config import get_preset
from model.linear_attention import linear_attention
from model.transformer import build_transformer
from sana_eval.bench.clock import device_name, median_seconds, timing_device, torch_dtype
from sana_eval.bench.transformer import random_inputs


@dataclass(frozen=True)
class AttentionTiming:
    kernels: str
    rows: int
    tokens: int
    width: int
    heads: int
    dtype: str
    ms: float
    min_gb: float           # q, k, v read once and the output written once: the fewest bytes any version moves
    gb_per_s: float         # min_gb / time: how close the op runs to a pure copy of its inputs and output
    rel_err: float          # against the eager path on the same inputs
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def time_linear_attention(rows: int, tokens: int, width: int = 1152, head_dim: int = 32, dtype: str = "fp16",
                          kernels: str = "triton", repeats: int = 50) -> AttentionTiming:
    """ReLU linear attention of one block on q, k, v views of a (rows, tokens, 3·width) qkv projection."""
    device, heads, dt = timing_device("cuda"), width // head_dim, torch_dtype(dtype)
    gen = torch.Generator(device).manual_seed(0)
    q, k, v = torch.randn(rows, tokens, 3 * width, device=device, generator=gen).to(dt).chunk(3, dim=-1)
    run = lambda: linear_attention(q, k, v, heads, 1e-8, dt, kernels)  # noqa: E731
    ref = linear_attention(q, k, v, heads, 1e-8, dt, "eager").float()
    err = ((run().float() - ref).norm() / ref.norm()).item()
    seconds = median_seconds(run, device, repeats, warmup=3)
    gb = 4 * rows * tokens * width * q.element_size() / 1e9
    return AttentionTiming(kernels, rows, tokens, width, heads, dtype, 1000 * seconds, gb, gb / seconds, err,
                           device_name(device))


@torch.no_grad()
def profile_transformer(preset: str, resolution: int, batch: int, dtype: str = "bf16", kernels: str = "auto",
                        top: int = 25) -> str:
    """The GPU kernels of one CFG forward, by total device time: the table torch.profiler prints."""
    device, dt = timing_device("cuda"), torch_dtype(dtype)
    cfg = get_preset(preset).replace(kernels=kernels)
    model = build_transformer(cfg, device=device, dtype=dt).eval()
    x, t, y, mask = random_inputs(cfg, resolution, 2 * batch, device, dt)
    for _ in range(2):
        model(x, t, y, mask)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(x, t, y, mask)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=70)
