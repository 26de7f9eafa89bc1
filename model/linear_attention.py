"""ReLU linear attention, Sana's defining operation (paper Eq. 1–2, model_spec §1.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

FP16_MAX = 65504.0


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """out_i = Σ_j v_j (φ(k_j)·φ(q_i)) / (Σ_j φ(k_j)·φ(q_i) + eps) with φ = ReLU, in fp32.

    q, k, v: (B, heads, N, d). Returns (B, heads, N, d) in fp32. Cost is O(N·d²) instead of O(N²·d):
    the (d+1)×d matrix Σ_j v'_j φ(k_j)ᵀ is shared by all queries (paper Eq. 2).
    """
    q = F.relu(q).float()
    k = F.relu(k).float()
    # A row of ones appended to V makes the same product also yield the normaliser Σ_j φ(k_j)·φ(q_i).
    v = F.pad(v.float(), (0, 1), value=1.0)                     # (B, h, N, d+1)
    vk = torch.matmul(k.transpose(-1, -2), v)                     # (B, h, d, d+1)
    out = torch.matmul(q, vk)                                     # (B, h, N, d+1)
    return out[..., :-1] / (out[..., -1:] + eps)
