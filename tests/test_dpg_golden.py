"""metrics/dpg.py's `official` mode against ELLA's own compute_dpg_bench.py: the scores in
tests/data/dpg_golden.json were made by the reference at its pinned commit on scripted answers
(scripts/make_dpg_golden.py): the first CSV row skipped, dependency zeroing, categories from the last tile."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from metrics import dpg
from metrics.vqa import ScriptedVQA

GOLDEN = json.loads((Path(__file__).parent / "data" / "dpg_golden.json").read_text())


def _inputs(root: Path) -> tuple[Path, Path]:
    """The reference's inputs again: the question file and one 2x2 grid of solid tiles per item."""
    tile, images = GOLDEN["tile"], root / "images"
    images.mkdir()
    for item, colours in GOLDEN["tile_colours"].items():
        grid = Image.new("RGB", (2 * tile, 2 * tile))
        for k, colour in enumerate(colours):
            x, y = (k % 2) * tile, (k // 2) * tile
            grid.paste(tuple(colour), (x, y, x + tile, y + tile))
        grid.save(images / f"{item}.png")
    (root / "dpg_bench.csv").write_text(GOLDEN["csv"])
    return images, root / "dpg_bench.csv"


def _scripted_vqa() -> ScriptedVQA:
    tiles = {tuple(c): (item, k) for item, colours in GOLDEN["tile_colours"].items() for k, c in enumerate(colours)}
    no = {(e["item"], e["tile"]): set(e["questions"]) for e in GOLDEN["no_answers"]}
    return ScriptedVQA(lambda image, question: "no" if question in no.get(tiles[image.convert("RGB").getpixel((0, 0))],
                                                                          ()) else "yes")


def test_official_mode_matches_compute_dpg_bench(tmp_path):
    images, csv_path = _inputs(tmp_path)
    result = dpg.score(images, _scripted_vqa(), mode="official", resolution=GOLDEN["tile"], csv_path=csv_path,
                       pic_num=GOLDEN["pic_num"], verify_csv=False, out_file=tmp_path / "out.json")
    ref = GOLDEN["official"]
    assert result.aggregate["dpg"] == pytest.approx(ref["overall"], abs=1e-9)
    assert {k: result.aggregate[f"dpg/{k}"] for k in ref["l1"]} == pytest.approx(ref["l1"], abs=1e-9)
    assert {k: result.aggregate[f"dpg/l2/{k}"] for k in ref["l2"]} == pytest.approx(ref["l2"], abs=1e-9)
    # the items the reference scored, tile by tile; item "a" depends on the skipped first row and is dropped there
    assert sorted(result.per_item) == sorted(ref["per_item"]) == ["b", "c"]
    for item, scores in ref["per_item"].items():
        ours = [result.per_item[item][f"tile{k}"] / 100 for k in range(GOLDEN["pic_num"])]
        assert ours == pytest.approx(scores["tiles"], abs=1e-12)
    assert "a" in result.provenance["failures"]
