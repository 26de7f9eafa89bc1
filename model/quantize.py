"""Quantised DiT GEMMs: the paper's W8A8 engine (§4, Table 5) and FP8 e4m3 beyond it.

Both modes quantise symmetrically, activations per token (one scale per row of the GEMM input, computed on the fly)
and weights per output channel (one scale per row of the weight, computed once), in fp32:

    s_x = max|x_row| · fl(1/Q),  x_q = q(x · fl(1/s_x));   s_w likewise per weight row, w_q = q(w · fl(1/s_w));
    y = (x_q · w_qᵀ) s_x s_wᵀ + b

with Q = 127 and q = round-half-even then clamp to ±127 for "w8a8", Q = 448 and q = the cast to float8_e4m3fn for
"fp8". fl(·) is rounding to fp32: the scale is a multiply and the row a multiply by its scale's IEEE reciprocal, so
that the CPU, CUDA and Triton paths agree to the bit. The product runs on the GPU's integer / FP8 tensor cores;
elsewhere, or with `emulate=True`, it is emulated in float64, where the integer products and their sums are exact
(|Σ| < 2^53). With the model's `kernels` resolving to Triton (model/kernel_choice.py), activations are quantised in
one pass, or by their producer (`QuantizedRows`: the modulated LayerNorm quantises the qkv and Mix-FFN inputs), and
both modes run our Triton GEMM with the rescale, the bias and an optional SiLU in its epilogue
(model/kernels/gemm.py, the eager path's operations in its order). Eager: PyTorch quantisation and `torch._int_mm`
/ `torch._scaled_mm` (cuBLAS), then the bias and the SiLU as passes of their own.

Which layers (paper §4): the Linear and 1×1-conv GEMMs of the transformer blocks, except the cross-attention K/V
projection; normalisation layers, the linear attention itself (its matmuls are not Linear layers) and the depth-wise
3×3 conv stay in the model dtype, as do the timestep/caption embedders and the final projection outside the blocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from model.kernel_choice import use_triton

# Triton ships with torch's CUDA builds; without it use_triton() is False and only the eager code runs.
try:
    from model.kernels.gemm import scaled_gemm
    from model.kernels.row_quant import quantize_rows as fused_quantize_rows
except ImportError:
    fused_quantize_rows = scaled_gemm = None

Quantize = Literal["none", "w8a8", "fp8"]
MODES: tuple[str, ...] = Quantize.__args__
QMAX = {"w8a8": 127.0, "fp8": 448.0}      # INT8 symmetric range; float8_e4m3fn's largest finite value
QDTYPE = {"w8a8": torch.int8, "fp8": torch.float8_e4m3fn}
ACTIVATIONS = ("none", "silu")               # what a QuantizedLinear may apply to its output
AMAX_FLOOR = 1e-12                          # an all-zero row gets this amax, so its scale is not zero
KEPT_IN_MODEL_DTYPE = ("cross_attn.kv_linear",)  # paper §4: the cross-attention K/V projection stays fp16
# Raised whenever the same inputs give other 8-bit values, so that a run folder never mixes images of two: 1 divided
# each row by its scale (before 13c5d23); 2 multiplied by the scale's reciprocal, the fused GPU quantiser one step
# off in ~1e-4 of the values (before 21e859b); 3: every path gives the eager code's bits.
SCHEME_VERSION = 3


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown quantize mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def quantize_rows(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantisation of each row of a 2-D tensor: (int8 or float8_e4m3fn values, (rows, 1) fp32 scales)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp_min(AMAX_FLOOR)
    scale = amax * (1.0 / QMAX[mode])
    y = x.float() * scale.reciprocal()
    if mode == "w8a8":
        return y.round().clamp_(-127, 127).to(torch.int8), scale
    return y.to(torch.float8_e4m3fn), scale   # |y| <= 448 up to fp32 rounding, which the cast rounds back to 448


def has_fp8_units(x: torch.Tensor) -> bool:
    """Whether `x` lives on a GPU with FP8 tensor cores (compute capability 8.9 and up: Ada, Hopper)."""
    return x.is_cuda and torch.cuda.get_device_capability(x.device) >= (8, 9)


def _fast_path(x: torch.Tensor, n: int, mode: str) -> bool:
    """Whether the GPU kernels take these shapes: cuBLASLt wants M > 16 and K, N multiples of 16 (and FP8 units)."""
    if not x.is_cuda or x.shape[0] <= 16 or x.shape[1] % 16 or n % 16:
        return False
    return mode == "w8a8" or has_fp8_units(x)


def quantized_matmul(qx: torch.Tensor, sx: torch.Tensor, qw: torch.Tensor, sw: torch.Tensor,
                     bias: torch.Tensor | None, out_dtype: torch.dtype, mode: str,
                     emulate: bool = False) -> torch.Tensor:
    """y = (qx · qwᵀ) ⊙ (sx · swᵀ) + bias in `out_dtype`: qx (M, K), sx (M, 1), qw (N, K), sw (N,)."""
    fast = not emulate and _fast_path(qx, qw.shape[0], mode)
    if mode == "fp8" and fast:
        # cuBLASLt's row-wise scaled FP8 GEMM: the rescale is its epilogue; the bias is added after, in out_dtype.
        y = torch._scaled_mm(qx, qw.t(), scale_a=sx, scale_b=sw.float()[None], out_dtype=out_dtype)
        return y if bias is None else y + bias.to(out_dtype)
    if mode == "w8a8":
        # int32 accumulation; the float64 emulation is exact (products < 2^14, K < 2^39 terms) and the same integer
        acc = torch._int_mm(qx, qw.t()) if fast else (qx.double() @ qw.double().t()).to(torch.int32)
        y = acc * sx
    else:
        y = (qx.double() @ qw.double().t()) * sx.double()
    y = y * sw.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.to(out_dtype)


@dataclass(frozen=True)
class QuantizedRows:
    """A GEMM input its producer has quantised already (model/kernels/block_ops.py): the (rows, K) 8-bit `values` and
    (rows, 1) fp32 `scales` of a tensor of `shape` and `dtype`, which a QuantizedLinear takes in its place."""
    values: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype


class QuantizedLinear(nn.Module):
    """A Linear (or 1×1 conv) whose GEMM runs quantised; it holds the quantised weight, never the float one.

    FP8 weights are kept as their int8 bit pattern, so that a later `.to(dtype)` of the model leaves them alone.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, mode: str, conv1x1: bool = False,
                 kernels: str = "auto") -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.kernels = kernels      # TransformerConfig.kernels: the fused Triton path or the eager one
        self.conv1x1 = conv1x1      # takes the (B, C, H, W) input of the eager Mix-FFN path as well as tokens
        self.emulate = False        # True: the float64 emulation even on the GPU (parity tests)
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        qw, sw = quantize_rows(weight.detach().flatten(1), mode)
        self.register_buffer("qweight", qw.view(torch.int8))
        self.register_buffer("weight_scale", sw[:, 0])
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_module(cls, module: nn.Linear | nn.Conv2d, mode: str, kernels: str = "auto") -> QuantizedLinear:
        return cls(module.weight, module.bias, mode, conv1x1=isinstance(module, nn.Conv2d), kernels=kernels)

    @property
    def weight_values(self) -> torch.Tensor:
        return self.qweight if self.mode == "w8a8" else self.qweight.view(torch.float8_e4m3fn)

    def forward(self, x: torch.Tensor | QuantizedRows, activation: str = "none") -> torch.Tensor:
        """y = act(x Wᵀ + b) with `activation` "none" or "silu" (fused into the GEMM's epilogue on the fast path)."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        if isinstance(x, torch.Tensor) and x.ndim == 4 and self.conv1x1:  # NCHW: a channels-last view, no copy
            return self.tokens(x.permute(0, 2, 3, 1), activation).permute(0, 3, 1, 2)
        return self.tokens(x, activation)

    def tokens(self, x: torch.Tensor | QuantizedRows, activation: str = "none") -> torch.Tensor:
        """The GEMM over the last dimension of `x`."""
        fused = self.fused(x)
        if isinstance(x, QuantizedRows):
            qx, sx = x.values, x.scales
        elif fused:
            qx, sx = fused_quantize_rows(x.reshape(-1, self.in_features), QMAX[self.mode], AMAX_FLOOR,
                                         QDTYPE[self.mode])
        else:
            qx, sx = quantize_rows(x.reshape(-1, self.in_features), self.mode)
        if fused:
            y = scaled_gemm(qx, sx, self.weight_values, self.weight_scale, self.bias, x.dtype,
                            silu=activation == "silu")
        else:
            y = quantized_matmul(qx, sx, self.weight_values, self.weight_scale, self.bias, x.dtype, self.mode,
                                 self.emulate)
            y = F.silu(y) if activation == "silu" else y
        return y.reshape(*x.shape[:-1], self.out_features)

    def fused(self, x: torch.Tensor | QuantizedRows) -> bool:
        """Whether `x` runs the Triton path (quantised in one pass or by its producer, GEMM with its epilogue)."""
        values = x.values if isinstance(x, QuantizedRows) else x
        # The interpreter's float8 cast is not the GPU's, so fused FP8 runs on GPUs with FP8 tensor cores only.
        return (not self.emulate and use_triton(self.kernels, values)
                and (self.mode == "w8a8" or has_fp8_units(values)))

    def quantizes_in_producer(self, x: torch.Tensor) -> tuple[float, float, torch.dtype] | None:
        """What a producer kernel needs to hand this layer QuantizedRows of `x` (None: give it `x` itself)."""
        return (QMAX[self.mode], AMAX_FLOOR, QDTYPE[self.mode]) if self.fused(x) else None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"


def quantized_layer_names(model: nn.Module) -> list[str]:
    """The layers paper §4 quantises: every Linear and dense 1×1 conv inside `model.blocks` but the cross-attention
    K/V projection (module names as in the NVlabs checkpoints)."""
    names = []
    for name, module in model.blocks.named_modules(prefix="blocks"):
        dense_1x1 = isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.groups == 1
        if (isinstance(module, nn.Linear) or dense_1x1) and not name.endswith(KEPT_IN_MODEL_DTYPE):
            names.append(name)
    return names


def quantize_transformer(model: nn.Module, mode: str) -> nn.Module:
    """Swap the layers of `quantized_layer_names` for QuantizedLinear, in place; call it after the dtype cast.
    "none" leaves the model as it is."""
    if check_mode(mode) == "none":
        return model
    for name in quantized_layer_names(model):
        parent, _, child = name.rpartition(".")
        layer = QuantizedLinear.from_module(model.get_submodule(name), mode, model.config.kernels)
        setattr(model.get_submodule(parent), child, layer)
    return model
