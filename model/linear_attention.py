"""ReLU linear attention, Sana's defining operation (paper Eq. 1–2, docs/model.md §1.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.kernel_choice import use_triton

# Triton ships with torch's CUDA builds; without it use_triton() is False and only the eager code runs.
try:
    from model.kernels.linear_attention import fused_relu_linear_attention, supported
except ImportError:
    fused_relu_linear_attention = supported = None

FP16_MAX = 65504.0


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, eps: float,
                          out_dtype: torch.dtype) -> torch.Tensor:
    """out_i = Σ_j v_j (φ(k_j)·φ(q_i)) / (Σ_j φ(k_j)·φ(q_i) + eps) per head, φ = ReLU, accumulated in fp32.

    q, k, v: (B, N, D) token-major, heads of D/heads contiguous channels. Returns (B, N, D) in `out_dtype`.
    Cost is O(N·d²) instead of O(N²·d): the d×(d+1) matrix φ(K)ᵀ·V' is shared by all queries (paper Eq. 2).
    """
    B, N, D = q.shape
    per_head = lambda z: z.unflatten(-1, (heads, D // heads)).transpose(1, 2)  # noqa: E731  (B, h, N, d)
    # Head-major contiguous copies let both products run as one batched GEMM each (measured fastest on H100).
    q = F.relu(per_head(q)).float().contiguous()
    k = F.relu(per_head(k)).float().contiguous()
    # A column of ones appended to V makes the same product also yield the normaliser Σ_j φ(k_j)·φ(q_i).
    v = F.pad(per_head(v).float(), (0, 1), value=1.0)               # (B, h, N, d+1)
    kv = torch.matmul(k.transpose(-1, -2), v)                        # (B, h, d, d+1)
    out = torch.matmul(q, kv)                                        # (B, h, N, d+1)
    out = (out[..., :-1] / (out[..., -1:] + eps)).to(out_dtype)      # (B, h, N, d)
    return out.transpose(1, 2).reshape(B, N, D)



def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, eps: float,
                     out_dtype: torch.dtype, kernels: str = "auto") -> torch.Tensor:
    """relu_linear_attention, through the fused Triton kernels (paper §2.2) when `kernels` selects them
    (model/kernel_choice.py); the same result up to fp32 summation order."""
    if not use_triton(kernels, q):
        return relu_linear_attention(q, k, v, heads, eps, out_dtype)
    if not supported(q, heads):
        if kernels == "triton":
            raise ValueError(f"the fused linear attention needs a power-of-two head width of 16-128, got "
                             f"{q.shape[-1] // heads}")
        return relu_linear_attention(q, k, v, heads, eps, out_dtype)
    return fused_relu_linear_attention(q, k, v, heads, eps, out_dtype)
