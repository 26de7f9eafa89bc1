"""Layouts against the scorers' contracts and against torchvision, which SANA's scripts save with."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sana_eval.generation.layouts import (
    LAYOUTS,
    GenEvalLayout,
    LayoutError,
    encode_image,
    get_layout,
    quantize_uint8,
    tile_grid,
)
from sana_eval.generation.prompt_sets import Item

torchvision_utils = pytest.importorskip("torchvision.utils", reason="torchvision is the reference for save_image")


def _decoder_output(seed: int, b: int = 4, h: int = 8, w: int = 12) -> torch.Tensor:
    """Floats like a VAE decoder's: mostly in [-1, 1], some outside, some on exact rounding boundaries."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, h, w, generator=g) * 0.7
    x[0, 0, 0, :6] = torch.tensor([-1.5, -1.0, 1.0, 1.5, 0.0, (2 * 0.5 / 255) - 1])
    return x


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_quantize_matches_torchvision_save_image(tmp_path):
    x = _decoder_output(0)
    ours = quantize_uint8(x).numpy()  # (B, H, W, 3)
    for b in range(x.shape[0]):
        torchvision_utils.save_image(x[b], tmp_path / f"{b}.png", normalize=True, value_range=(-1, 1))
        np.testing.assert_array_equal(ours[b], _pixels(tmp_path / f"{b}.png"))


def test_quantize_rounds_in_float32_for_half_inputs():
    x = _decoder_output(1).half()
    np.testing.assert_array_equal(quantize_uint8(x).numpy(), quantize_uint8(x.float()).numpy())
    with pytest.raises(LayoutError, match="B, 3, H, W"):
        quantize_uint8(torch.zeros(2, 8, 8, 3))


@pytest.mark.parametrize("suffix,fmt", [(".jpg", "jpeg"), (".png", "png")])
def test_file_bytes_equal_sana_save_image(tmp_path, suffix, fmt):
    """MJHQ / ImageReward / GenEval files: SANA calls `save_image(sample, path, normalize=True,
    value_range=(-1, 1))`."""
    x = _decoder_output(2, b=1, h=32, w=32)
    path = tmp_path / f"ref{suffix}"
    torchvision_utils.save_image(x[0], path, normalize=True, value_range=(-1, 1))
    layout = get_layout("mjhq" if fmt == "jpeg" else "mjhq-png")
    ours = layout.render([quantize_uint8(x).numpy()[0]])
    assert ours == path.read_bytes()


def test_dpg_sana_grid_equals_make_grid_default_padding(tmp_path):
    """SANA's DPG script: make_grid(nrow=2, normalize, value_range) -> *255+0.5 -> uint8 -> PIL save `<id>.jpg`."""
    x = _decoder_output(3, b=4, h=16, w=16)
    grid = torchvision_utils.make_grid(x, nrow=2, normalize=True, value_range=(-1, 1))
    ref = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    tiles = list(quantize_uint8(x).numpy())
    np.testing.assert_array_equal(tile_grid(tiles, cols=2, padding=2), ref)
    assert ref.shape == (2 * 16 + 6, 2 * 16 + 6, 3)
    Image.fromarray(ref).save(tmp_path / "ref.jpg")
    assert get_layout("dpg-sana").render(tiles) == (tmp_path / "ref.jpg").read_bytes()


def test_dpg_grid_tiles_are_what_the_scorer_crops():
    """ELLA's scorer crops (0,0,R,R), (R,0,2R,R), (0,R,R,2R), (R,R,2R,2R) of a 2R x 2R grid
    (docs/protocols.md §4.1)."""
    r = 8
    tiles = [np.full((r, r, 3), 40 * (k + 1), np.uint8) + np.arange(r, dtype=np.uint8)[:, None, None]
             for k in range(4)]
    item = Item("partiprompts97", "a prompt", 4, {})
    layout = get_layout("dpg")
    [out] = layout.files(item)
    assert out.path == "partiprompts97.png" and out.ks == (0, 1, 2, 3)
    with Image.open(io.BytesIO(layout.render(tiles))) as img:
        assert img.size == (2 * r, 2 * r)
        boxes = [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]
        for k, box in enumerate(boxes):
            np.testing.assert_array_equal(np.asarray(img.crop(box).convert("RGB")), tiles[k])
    with pytest.raises(LayoutError, match="4 images per item"):
        layout.files(Item("x", "p", 3, {}))


def test_geneval_layout_follows_the_evaluator_contract():
    line = ('{"tag": "counting", "include": [{"class": "cup", "count": 3}], '
            '"exclude": [{"class": "cup", "count": 4}], "prompt": "a photo of three cups"}')
    item = Item("00042", "a photo of three cups", 4, json.loads(line))
    layout = get_layout("geneval")
    files = layout.files(item)
    assert [f.path for f in files] == [f"00042/samples/{k:05d}.png" for k in range(4)]
    for f in files:  # evaluate_images.py: digit folders, `^\d+\.png` sample files
        folder, samples, name = f.path.split("/")
        assert folder.isdigit() and samples == "samples" and re.fullmatch(r"\d+\.png", name)
    # metadata.jsonl is json.dump of the parsed line: byte-identical to the official line
    assert layout.sidecars(item) == {"00042/metadata.jsonl": line.encode()}
    with pytest.raises(LayoutError, match="non-PNG"):
        GenEvalLayout("geneval-jpg", "jpeg")
    with pytest.raises(LayoutError, match="not all digits"):
        layout.files(Item("abc", "p", 4, {}))


def test_flat_names_mjhq_and_imagereward():
    assert [f.path for f in get_layout("mjhq").files(Item("f0e3a7b1", "p", 1, {}))] == ["f0e3a7b1.jpg"]
    paths = [f.path for f in get_layout("imagereward").files(Item("005695-0057", "p", 10, {}))]
    assert paths == [f"005695-0057_{j}.jpg" for j in range(10)]  # SANA: f"{id}_{j}.jpg", j = 0..9


def test_encode_rejects_bad_pixels_and_unknown_layouts():
    with pytest.raises(LayoutError, match="uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32), "png")
    with pytest.raises(LayoutError, match="did you mean dpg"):
        get_layout("dgp")
    assert all(name == layout.name for name, layout in LAYOUTS.items())
