"""The DiT/PixArt block parts that Sana replaced, for the block-design ablation of paper Table 8 (§2.2):
full softmax self-attention instead of linear attention, and the plain MLP instead of Mix-FFN."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import TransformerConfig


class SoftmaxSelfAttention(nn.Module):
    """Table 8 "FullAttn": softmax over all image tokens, with LinearSelfAttention's qkv/proj layers and heads."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads = cfg.self_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, perturbed_rows: int = 0) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, D // self.heads)).permute(2, 0, 3, 1, 4)  # (B, h, N, d)
        keep = B - perturbed_rows
        out = F.scaled_dot_product_attention(q[:keep], k[:keep], v[:keep])    # scale 1/sqrt(d)
        if perturbed_rows:  # PAG's perturbed branch: identity attention, as in LinearSelfAttention
            out = torch.cat([out, v[keep:]])
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class MlpFFN(nn.Module):
    """Table 8 "FFN": DiT/PixArt's token-wise Linear → GELU(tanh) → Linear (timm Mlp names fc1/fc2)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        d, f = cfg.hidden_size, cfg.ffn_hidden
        self.fc1 = nn.Linear(d, f)
        self.fc2 = nn.Linear(f, d)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:  # hw unused: no spatial mixing
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))               # (B, N, D)
