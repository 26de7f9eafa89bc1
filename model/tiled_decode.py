"""Tiled decoding for 2K/4K (docs/model.md §6): overlapping latent tiles, decoded one at a time by any decoder
(DC-AE, or the AutoencoderKL of the Table 8 benches), cross-faded linearly."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch


def _tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """The fewest tiles of side `tile` that cover `length` with at least `overlap` shared, spread evenly."""
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    return [(s, s + tile) for s in starts]


def _ramps(spans: list[tuple[int, int]], factor: int, device: torch.device) -> list[torch.Tensor]:
    """Per-tile pixel weights: 1 inside, linear ramps across each overlap, so neighbours sum to one there."""
    ramps = []
    for i, (start, stop) in enumerate(spans):
        size = (stop - start) * factor
        pos = torch.arange(size, device=device, dtype=torch.float32) + 0.5
        weight = torch.ones(size, device=device)
        if i > 0 and spans[i - 1][1] > start:
            weight = torch.minimum(weight, pos / ((spans[i - 1][1] - start) * factor))
        if i + 1 < len(spans) and spans[i + 1][0] < stop:
            weight = torch.minimum(weight, (size - pos) / ((stop - spans[i + 1][0]) * factor))
        ramps.append(weight)
    return ramps


def decode_tiled(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, tile_size: int,
                 tile_overlap: int, factor: int) -> torch.Tensor:
    """Apply `decode` (latent tile -> image tile, `factor`× larger) tile by tile and blend the overlaps.

    Only one tile's activations exist at a time; the blended image is accumulated in fp32.
    """
    if not 0 <= tile_overlap < tile_size:
        raise ValueError(f"tile_overlap {tile_overlap} must be in [0, tile_size={tile_size})")
    b, _, h, w = z.shape
    rows, cols = _tile_spans(h, tile_size, tile_overlap), _tile_spans(w, tile_size, tile_overlap)
    row_ramps, col_ramps = _ramps(rows, factor, z.device), _ramps(cols, factor, z.device)
    out = None
    for (r0, r1), row_ramp in zip(rows, row_ramps):
        for (c0, c1), col_ramp in zip(cols, col_ramps):
            tile = decode(z[:, :, r0:r1, c0:c1]).float()  # (B, 3, (r1-r0)·f, (c1-c0)·f)
            if out is None:
                out = torch.zeros(b, tile.shape[1], h * factor, w * factor, device=z.device)
            out[:, :, r0 * factor:r1 * factor, c0 * factor:c1 * factor] += tile * (row_ramp[:, None] * col_ramp)
    # Weights are outer products of 1-D ramps, so their per-pixel total is the product of the 1-D totals.
    row_total = torch.zeros(h * factor, device=z.device)
    col_total = torch.zeros(w * factor, device=z.device)
    for (r0, r1), ramp in zip(rows, row_ramps):
        row_total[r0 * factor:r1 * factor] += ramp
    for (c0, c1), ramp in zip(cols, col_ramps):
        col_total[c0 * factor:c1 * factor] += ramp
    return (out / (row_total[:, None] * col_total)).to(z.dtype)  # (B, 3, h·f, w·f)
