"""ReLU linear attention, Sana's defining operation (paper Eq. 1–2, model_spec §1.5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

FP16_MAX = 65504.0


def relu_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                          eps: float) -> torch.Tensor:
    """out_i = Σ_j v_j (φ(k_j)·φ(q_i)) / (Σ_j φ(k_j)·φ(q_i) + eps) per head, φ = ReLU, in fp32.

    q, k, v: (B, N, D) token-major, heads of D/heads contiguous channels. Returns (B, N, D) in fp32 (a
    transposed view). Cost is O(N·d²) instead of O(N²·d): the (d+1)×d matrix V'·φ(K)ᵀ is shared by all queries
    (paper Eq. 2). Channel-major per head, (B, h, d, N), so the normaliser is a contiguous row, not a stride-(d+1)
    column.
    """
    B, N, D = q.shape
    per_head = lambda z: z.transpose(1, 2).unflatten(1, (heads, D // heads))  # noqa: E731  (B, h, d, N)
    q = F.relu(per_head(q)).float()
    k = F.relu(per_head(k)).float()
    # A row of ones appended to V makes the same product also yield the normaliser Σ_j φ(k_j)·φ(q_i).
    v = F.pad(per_head(v).float(), (0, 0, 0, 1), value=1.0)         # (B, h, d+1, N)
    vk = torch.matmul(v, k.transpose(-1, -2))                        # (B, h, d+1, d)
    out = torch.matmul(vk, q)                                        # (B, h, d+1, N)
    out = out[:, :, :-1] / (out[:, :, -1:] + eps)                    # (B, h, d, N)
    return out.flatten(1, 2).transpose(1, 2)                         # (B, N, D)
