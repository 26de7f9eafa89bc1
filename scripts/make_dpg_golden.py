"""Golden DPG-Bench scores from ELLA's own `dpg_bench/compute_dpg_bench.py` on scripted VQA answers, written to
tests/data/dpg_golden.json (inputs and outputs); tests/test_dpg_golden.py checks metrics/dpg.py's `official` mode.

    git clone https://github.com/TencentQQGYLab/ELLA /tmp/ella && git -C /tmp/ella checkout 3c228f1dc6c4
    python scripts/make_dpg_golden.py /tmp/ella tests/data/dpg_golden.json

The reference runs as it is (its `main()`, accelerate on one CPU process) on a small question file in the official
schema and 2x2 grids of solid tiles; only its mPLUG class (the model) is replaced by scripted answers keyed by the
tile's colour and the question. The cases exercise its known behaviour (docs/protocols.md §4.3): the first CSV row
skipped (an item depending on it is dropped), dependency zeroing, categories from the last tile before zeroing.
The reference's code is not committed.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from unittest import mock

from PIL import Image
from pinned_checkout import pin_error

COMMIT = "3c228f1dc6c4d3cad0a47493816151a419f14db3"
TILE = 8
COLUMNS = ("item_id", "text", "keywords", "proposition_id", "dependency", "category_broad", "category_detailed",
           "tuple", "question_natural_language")
# (item, proposition_id, dependency, tuple, question) in the official schema; item "a" depends on its first row.
QUESTIONS = (
    ("a", 1, "0", "entity - whole (dog)", "Is there a dog?"),
    ("a", 2, "1", "attribute - color (dog, brown)", "Is the dog brown?"),
    ("a", 3, "0", "entity - whole (ball)", "Is there a ball?"),
    ("b", 1, "0", "entity - whole (field)", "Is there a field?"),
    ("b", 2, "0", "entity - whole (cabbages)", "Are there cabbages?"),
    ("b", 3, "2", "other - count (cabbages, ==8)", "Are there eight cabbages?"),
    ("b", 4, "2", "attribute - color (cabbages, green)", "Are the cabbages green?"),
    ("b", 5, "2,1", "relation - spatial (cabbages, field, in)", "Are the cabbages in the field?"),
    ("c", 1, "0", "entity - whole (truck)", "Is there a pickup truck?"),
    ("c", 2, "1", "attribute - color (truck, red)", "Is the truck red?"),
    ("c", 3, "0", "global - (sunset)", "Is it sunset?"),
    ("c", 4, "1,3", "relation - spatial (truck, beach, on)", "Is the truck on the beach?"),
)
# "no" answers per (item, tile); every other answer is "yes"
NO = {("a", 0): {"Is there a ball?"}, ("b", 1): {"Are there cabbages?"}, ("b", 3): {"Is there a field?"},
      ("c", 0): {"Is it sunset?"}, ("c", 2): {"Is there a pickup truck?", "Is the truck red?"},
      ("c", 3): {"Is the truck on the beach?"}}
ITEMS = ("a", "b", "c")


def tile_colour(item: str, tile: int) -> tuple[int, int, int]:
    return (40 * ITEMS.index(item) + 20, 50 * tile + 10, 200)


def answer(image: Image.Image, question: str) -> str:
    """The scripted VQA: the tile is known by its colour."""
    colour = image.convert("RGB").getpixel((0, 0))
    item, tile = next((i, t) for i in ITEMS for t in range(4) if tile_colour(i, t) == colour)
    return "no" if question in NO.get((item, tile), ()) else "yes"


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """dpg_bench.csv and <item>.png grids (2x2 tiles of TILE px) under `folder`."""
    images = folder / "images"
    images.mkdir(parents=True)
    for item in ITEMS:
        grid = Image.new("RGB", (2 * TILE, 2 * TILE))
        for tile in range(4):
            grid.paste(tile_colour(item, tile), ((tile % 2) * TILE, (tile // 2) * TILE, (tile % 2 + 1) * TILE,
                                                 (tile // 2 + 1) * TILE))
        grid.save(images / f"{item}.png")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for item, pid, dep, tup, question in QUESTIONS:
        category = tup.split("(")[0].strip()
        writer.writerow((item, f"prompt {item}", "", pid, dep, category.split("-")[0].strip(), category, tup,
                         question))
    (folder / "dpg_bench.csv").write_text(buf.getvalue())
    return images, folder / "dpg_bench.csv"


def run_reference(checkout: Path, images: Path, csv_path: Path, res: Path) -> dict:
    spec = importlib.util.spec_from_file_location("ella_compute_dpg_bench",
                                                  checkout / "dpg_bench" / "compute_dpg_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class ScriptedMPLUG(module.torch.nn.Module):          # in place of the ModelScope mPLUG pipeline
        def __init__(self, *args, **kwargs):
            super().__init__()

        def vqa(self, image, question):
            return answer(image, question)

    module.MPLUG = ScriptedMPLUG
    argv = ["compute_dpg_bench.py", "--image-root-path", str(images), "--resolution", str(TILE), "--csv",
            str(csv_path), "--res-path", str(res), "--pic-num", "4"]
    with mock.patch.object(sys, "argv", argv), mock.patch("time.sleep"):
        module.main()
    text = res.read_text()
    per_item = {}
    for line in text.splitlines():
        if line.startswith(str(images)):
            path, *scores = [p.strip() for p in line.split(",")]
            per_item[Path(path).stem] = {"tiles": [float(s) for s in scores[:-1]], "score": float(scores[-1])}
    l1 = dict(re.findall(r"^\t([^:\n]+): (\S+)$", text.split("L2 category scores:")[0], flags=re.M))
    l2 = dict(re.findall(r"^\t([^:\n]+): (\S+)$", text.split("L2 category scores:")[1], flags=re.M))
    overall = float(re.search(r"DPG-Bench score: (\S+)", text).group(1))
    return {"overall": overall, "l1": {k: float(v) for k, v in l1.items()}, "l2": {k: float(v) for k, v in l2.items()},
            "per_item": per_item}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help=f"a TencentQQGYLab/ELLA checkout at {COMMIT[:12]}")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    error = pin_error(args.checkout, COMMIT)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        images, csv_path = write_inputs(Path(tmp))
        result = run_reference(args.checkout, images, csv_path, Path(tmp) / "results.txt")
        csv_text = csv_path.read_text()
    payload = {"reference": f"TencentQQGYLab/ELLA@{COMMIT} dpg_bench/compute_dpg_bench.py",
               "made_by": "scripts/make_dpg_golden.py", "tile": TILE, "pic_num": 4, "csv": csv_text,
               "tile_colours": {i: [list(tile_colour(i, t)) for t in range(4)] for i in ITEMS},
               "no_answers": [{"item": i, "tile": t, "questions": sorted(q)} for (i, t), q in NO.items()],
               "official": result}
    tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(payload, indent=1) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}: {len(result['per_item'])} items scored by the reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
