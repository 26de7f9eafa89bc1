"""Kernel-level views of the transformer's speed (paper §2.2 kernel fusion): the linear attention alone, eager
against the fused Triton kernels, and where one forward of the whole model spends its GPU time."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from model.config import get_preset
from model.linear_attention import linear_attention
from model.transformer import build_transformer
from sana_eval.bench.transformer import DTYPES, _inputs, _median_seconds


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
    if not torch.cuda.is_available():
        raise RuntimeError("time_linear_attention needs a CUDA GPU")
    heads, torch_dtype = width // head_dim, DTYPES[dtype]
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = torch.randn(rows, tokens, 3 * width, device="cuda", generator=gen).to(torch_dtype).chunk(3, dim=-1)
    run = lambda: linear_attention(q, k, v, heads, 1e-8, torch_dtype, kernels)  # noqa: E731
    ref = linear_attention(q, k, v, heads, 1e-8, torch_dtype, "eager").float()
    err = ((run().float() - ref).norm() / ref.norm()).item()
    seconds = _median_seconds(run, repeats, warmup=3)
    gb = 4 * rows * tokens * width * q.element_size() / 1e9
    return AttentionTiming(kernels, rows, tokens, width, heads, dtype, 1000 * seconds, gb, gb / seconds, err,
                           torch.cuda.get_device_name())


@torch.no_grad()
def profile_transformer(preset: str, resolution: int, batch: int, dtype: str = "bf16", kernels: str = "auto",
                        top: int = 25) -> str:
    """The GPU kernels of one CFG forward, by total device time: the table torch.profiler prints."""
    from torch.profiler import ProfilerActivity, profile

    device, torch_dtype = torch.device("cuda"), DTYPES[dtype]
    cfg = get_preset(preset).replace(kernels=kernels)
    model = build_transformer(cfg, device=device, dtype=torch_dtype).eval()
    x, t, y, mask = _inputs(cfg, resolution, 2 * batch, device, torch_dtype)
    for _ in range(2):
        model(x, t, y, mask)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(x, t, y, mask)
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=70)
