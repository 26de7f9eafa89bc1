"""Each scorer's on-disk contract (docs/protocols.md §1.2, §3.1, §4, §5, §7.4; docs/generation.md §4):
names, grids, formats.

A layout maps one benchmark item to the files its scorer reads, and renders a file's bytes from uint8 pixels.
Rendering is byte-for-byte what SANA's scripts write (torchvision `save_image` / `make_grid` + PIL defaults),
so images made here can be scored by the official tools and compared with SANA's own outputs.
"""
from __future__ import annotations

import difflib
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from sana_eval.generation.prompt_files import Item

ImageFormat = Literal["png", "jpeg"]
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg"}
PIL_JPEG_DEFAULT_QUALITY = 75  # what `Image.save("x.jpg")` uses; SANA never passes a quality (docs/protocols.md §1.2)


class LayoutError(ValueError):
    """A layout asked to do what its scorer cannot read; one line naming the layout and the value."""


# ----------------------------------------------------------------------------------------------
# Pixels: float decoder output -> uint8, tiles -> grid, pixels -> file bytes.

def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [-1, 1] -> (B, H, W, 3) uint8, rounded like torchvision `save_image`
    (docs/generation.md §1.2).

    `save_image(normalize=True, value_range=(-1, 1))` clamps to [-1, 1], maps to [0, 1], then `* 255 + 0.5` and
    truncates. The arithmetic runs in float32 whatever the input dtype, so fp16/bf16 decoders round like fp32.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise LayoutError(f"quantize_uint8 expects (B, 3, H, W) images, got shape {tuple(x.shape)}")
    y = x.detach().float().clamp(-1.0, 1.0).add(1.0).div(2.0)  # (B, 3, H, W) in [0, 1]
    y = y.mul(255.0).add(0.5).clamp(0.0, 255.0).to(torch.uint8)  # (B, 3, H, W)
    return y.permute(0, 2, 3, 1).contiguous().cpu()  # (B, H, W, 3)


def tile_grid(tiles: Sequence[np.ndarray], cols: int, padding: int = 0) -> np.ndarray:
    """Row-major grid of equal (H, W, 3) uint8 tiles with black `padding` px around and between them.

    `padding=2` reproduces torchvision `make_grid`'s default border that SANA's DPG script leaves in
    (docs/protocols.md §4.4); the DPG scorer expects `padding=0` (§4.1).
    """
    if not tiles:
        raise LayoutError("tile_grid: no tiles")
    h, w, c = tiles[0].shape
    if any(t.shape != (h, w, c) for t in tiles):
        raise LayoutError(f"tile_grid: tiles differ in shape: {sorted({tuple(t.shape) for t in tiles})}")
    rows = -(-len(tiles) // cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        y = padding + (k // cols) * (h + padding)
        x = padding + (k % cols) * (w + padding)
        grid[y:y + h, x:x + w] = tile
    return grid


def encode_image(pixels: np.ndarray, image_format: ImageFormat,
                 jpeg_quality: int = PIL_JPEG_DEFAULT_QUALITY) -> bytes:
    """File bytes of one (H, W, 3) uint8 image, as PIL writes them with its default options."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise LayoutError(f"expected an (H, W, 3) uint8 image, got {pixels.dtype} {tuple(pixels.shape)}")
    buf = io.BytesIO()
    image = Image.fromarray(pixels)
    if image_format == "png":
        image.save(buf, format="PNG")
    elif image_format == "jpeg":
        image.save(buf, format="JPEG", quality=jpeg_quality)
    else:
        raise LayoutError(f"unknown image format {image_format!r} (png or jpeg)")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Layouts.

@dataclass(frozen=True)
class OutputFile:
    """One file a layout writes for an item: its path under the output folder and which images it holds."""
    path: str               # relative, '/'-separated
    item_id: str
    ks: tuple[int, ...]     # image indices within the item, in tile order


@dataclass(frozen=True)
class Layout(ABC):
    name: str
    image_format: ImageFormat
    jpeg_quality: int = PIL_JPEG_DEFAULT_QUALITY

    @property
    def ext(self) -> str:
        return EXTENSIONS[self.image_format]

    @abstractmethod
    def files(self, item: Item) -> list[OutputFile]:
        """The files that hold `item`'s images."""

    def render(self, images: Sequence[np.ndarray]) -> bytes:
        """Bytes of one file from its images (in `OutputFile.ks` order)."""
        if len(images) != 1:
            raise LayoutError(f"layout {self.name}: one image per file, got {len(images)}")
        return encode_image(images[0], self.image_format, self.jpeg_quality)

    def sidecars(self, item: Item) -> dict[str, bytes]:
        """Non-image files the scorer reads for `item` (path -> bytes)."""
        return {}

    def protocol(self) -> dict[str, Any]:
        """What decides the files' bytes besides the pixels; recorded in the run manifest."""
        out: dict[str, Any] = {"layout": self.name, "format": self.image_format}
        if self.image_format == "jpeg":
            out["jpeg_quality"] = self.jpeg_quality
        return out


@dataclass(frozen=True)
class GenEvalLayout(Layout):
    """`<NNNNN>/metadata.jsonl` + `<NNNNN>/samples/<kkkkk>.png` (docs/protocols.md §3.1, docs/generation.md §4.2).

    The evaluator reads only all-digit folders and `^\\d+\\.png` files; the 5-digit sample names are what both
    GenEval's `diffusers_generate.py` and SANA's `inference_geneval.py` write (`f"{k:05}.png"`).
    """
    image_format: ImageFormat = "png"

    def __post_init__(self) -> None:
        if self.image_format != "png":
            raise LayoutError(f"layout {self.name}: the GenEval evaluator ignores non-PNG files")

    def files(self, item: Item) -> list[OutputFile]:
        if not (item.id.isdigit() and item.id.isascii()):
            raise LayoutError(f"layout {self.name}: item id {item.id!r} is not all digits (the evaluator skips it)")
        return [OutputFile(f"{item.id}/samples/{k:05d}.png", item.id, (k,)) for k in range(item.n_images)]

    def sidecars(self, item: Item) -> dict[str, bytes]:
        # json.dump of the parsed metadata line, as GenEval's and SANA's generators write it.
        return {f"{item.id}/metadata.jsonl": json.dumps(item.metadata).encode()}


@dataclass(frozen=True)
class GridLayout(Layout):
    """All images of an item tiled into `<item_id>.<ext>` (DPG-Bench: 2x2, docs/protocols.md §4.1, §4.4).

    The DPG scorer crops tiles at (0,0,R,R), (R,0,2R,R), (0,R,R,2R), (R,R,2R,2R), so the correct grid has no
    padding; `padding=2` + JPEG is SANA's variant (make_grid default border, `<id>.jpg`).
    """
    cols: int = 2
    padding: int = 0

    def files(self, item: Item) -> list[OutputFile]:
        if item.n_images != self.cols * self.cols:
            raise LayoutError(f"layout {self.name}: a {self.cols}x{self.cols} grid needs "
                              f"{self.cols * self.cols} images per item, item {item.id!r} has {item.n_images}")
        return [OutputFile(f"{item.id}.{self.ext}", item.id, tuple(range(item.n_images)))]

    def render(self, images: Sequence[np.ndarray]) -> bytes:
        grid = tile_grid(images, self.cols, self.padding)
        return encode_image(grid, self.image_format, self.jpeg_quality)

    def protocol(self) -> dict[str, Any]:
        return {**super().protocol(), "grid": f"{self.cols}x{self.cols}", "padding": self.padding}


@dataclass(frozen=True)
class FlatLayout(Layout):
    """`<id>.<ext>` for one image per item (MJHQ, §1.2), else `<id>_<k>.<ext>`
    (ImageReward, Sana naming, docs/protocols.md §5.3)."""

    def files(self, item: Item) -> list[OutputFile]:
        if item.n_images == 1:
            return [OutputFile(f"{item.id}.{self.ext}", item.id, (0,))]
        return [OutputFile(f"{item.id}_{k}.{self.ext}", item.id, (k,)) for k in range(item.n_images)]


LAYOUTS: dict[str, Layout] = {
    layout.name: layout for layout in (
        GenEvalLayout("geneval"),
        GridLayout("dpg", "png"),
        GridLayout("dpg-sana", "jpeg", padding=2),
        FlatLayout("mjhq", "jpeg"),
        FlatLayout("mjhq-png", "png"),
        FlatLayout("imagereward", "jpeg"),
        FlatLayout("imagereward-png", "png"),
        FlatLayout("flat-png", "png"),
        FlatLayout("flat-jpeg", "jpeg"),
    )
}


def get_layout(name: str) -> Layout:
    if name in LAYOUTS:
        return LAYOUTS[name]
    close = difflib.get_close_matches(name, LAYOUTS, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise LayoutError(f"unknown layout {name!r}{hint} (known: {', '.join(LAYOUTS)})")
