"""Speed of the denoising transformer, ours against the peer (diffusers), on one GPU (paper Tables 7, 14).

Protocol of ../shared/bench/diffusers_baseline.py so numbers compare: random weights (speed does not depend on
them), classifier-free guidance doubles the batch, a 300-token caption, one forward timed as the median of
repeats after warm-up, and 20 forwards back to back for the denoising time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from model.checkpoints import diffusers_config
from model.config import PRESETS, TransformerConfig, get_preset
from model.cuda_graph import CudaGraphs, GraphedModule, use_graphs
from model.kernel_choice import resolve
from model.quantize import quantize_transformer
from model.transformer import build_transformer
from sana_eval.bench.clock import (
    device_name,
    median_seconds,
    peak_memory_gib,
    reset_peak_memory,
    timing_device,
    torch_dtype,
)


@dataclass(frozen=True)
class TransformerTiming:
    impl: str
    kernels: str                # ours: "eager" or "triton" (paper §2.2 kernel fusion); the peer: "diffusers"
    cuda_graphs: bool           # ours: forwards replayed from a CUDA graph (model/cuda_graph.py)
    quantize: str               # ours: "none", "w8a8" (paper §4, Table 5) or "fp8" (model/quantize.py)
    preset: str
    resolution: int
    batch: int
    dtype: str
    step_s: float
    denoise20_s: float
    img_per_s: float
    peak_mem_gib: float
    gpu: str

    def to_dict(self) -> dict:
        return asdict(self)


def named_config(preset: str | TransformerConfig) -> tuple[str, TransformerConfig]:
    """A preset name or config -> (the name a record carries, the config); a config equal to a preset keeps its
    name ("custom" otherwise: `blocks` and `kernels` then say what differs)."""
    if isinstance(preset, str):
        return preset, get_preset(preset)
    named = [name for name, config in PRESETS.items() if config == preset.replace(kernels="auto")]
    return (named[0] if named else "custom"), preset


def peer_transformer(config: TransformerConfig) -> torch.nn.Module:
    """The peer's SanaTransformer2DModel of the same architecture, randomly initialised."""
    from diffusers import SanaTransformer2DModel  # heavy, optional: only the peer's timing needs diffusers

    return SanaTransformer2DModel.from_config(diffusers_config(config))


def random_inputs(cfg: TransformerConfig, resolution: int, rows: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Random latents and caption embeddings of a CFG batch, a full caption mask and t = 999."""
    side = resolution // 32                                   # the DC-AE f32 latent
    gen = torch.Generator(device).manual_seed(0)
    x = torch.randn(rows, cfg.in_channels, side, side, device=device, dtype=dtype, generator=gen)
    y = torch.randn(rows, cfg.model_max_length, cfg.caption_channels, device=device, dtype=dtype, generator=gen)
    mask = torch.ones(rows, cfg.model_max_length, device=device, dtype=torch.long)
    return x, torch.full((rows,), 999, device=device, dtype=torch.long), y, mask


@torch.no_grad()
def time_transformer(preset: str | TransformerConfig, resolution: int, batch: int, dtype: str = "bf16",
                     impl: str = "ours", steps: int = 20, repeats: int = 5, kernels: str = "auto",
                     cuda_graphs: CudaGraphs = "auto", quantize: str = "none",
                     device: str | torch.device = "cuda") -> TransformerTiming:
    """One forward and `steps` forwards of a 2·batch CFG pass at `resolution` px. `cuda_graphs` and `quantize`
    apply to ours ("auto": graphs at small batch x resolution, as the pipeline does)."""
    device, dt = timing_device(device), torch_dtype(dtype)
    name, cfg = named_config(preset)
    cfg = cfg.replace(kernels=kernels)
    if impl == "ours":
        model = quantize_transformer(build_transformer(cfg, device=device, dtype=dt).eval(), quantize)
    elif impl == "diffusers" and quantize == "none":
        model = peer_transformer(cfg).to(device, dt).eval()
    else:
        raise ValueError(f"impl {impl!r} with quantize {quantize!r}: expected 'ours', or 'diffusers' unquantised")
    x, t, y, mask = random_inputs(cfg, resolution, 2 * batch, device, dt)
    graphed = impl == "ours" and use_graphs(cuda_graphs, model, x)
    if impl == "ours":
        run = GraphedModule(model) if graphed else model
        forward = lambda: run(x, t, y, mask)  # noqa: E731
    else:
        forward = lambda: model(x, y, t, encoder_attention_mask=mask, return_dict=False)  # noqa: E731

    def denoise() -> None:
        for _ in range(steps):
            forward()

    reset_peak_memory(device)
    step_s = median_seconds(forward, device, repeats)
    denoise_s = median_seconds(denoise, device, max(1, repeats // 2), warmup=1)
    return TransformerTiming(impl=impl, kernels=resolve(cfg.kernels, device) if impl == "ours" else impl,
                             cuda_graphs=graphed, quantize=quantize, preset=name, resolution=resolution, batch=batch,
                             dtype=dtype, step_s=step_s, denoise20_s=denoise_s, img_per_s=batch / denoise_s,
                             peak_mem_gib=peak_memory_gib(device), gpu=device_name(device))
