"""`sana-eval score --benchmark dpg --dpg-csv MINE --no-verify-csv`: a question file of one's own is scored, and its
protocol says it is not the official one; without the flag it is refused, naming the file. The VQA is scripted:
"yes" to every question but "no" to Q3 on tile 2, so item b scores (1 + 1 + 1/2 + 1) / 4 and item a 1 (x 100)."""
from __future__ import annotations

import csv
import json

from PIL import Image

from metrics.vqa import ScriptedVQA
from sana_eval.cli.main import main
from sana_eval.scoring import scorers

# the official schema (metrics/dpg.py CSV_COLUMNS); (item, qid, dependency, tuple, question)
ROWS = [("a", 1, "0", "entity - whole (cat)", "Q1"), ("b", 1, "0", "entity - whole (dog)", "Q2"),
        ("b", 2, "0", "attribute - color (dog, brown)", "Q3")]
TILE = 8


def write_csv(path):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                    "category_detailed", "tuple", "question_natural_language"])
        for item, qid, dep, tup, q in ROWS:
            w.writerow([item, f"prompt of {item}", "kw", qid, dep, tup.split(" ")[0], tup.split("(")[0], tup, q])
    return path


def grid(path):
    """A 2x2 grid whose tile k has red = 60 k, so the script knows which tile it is asked about."""
    img = Image.new("RGB", (2 * TILE, 2 * TILE))
    for k, (x, y) in enumerate([(0, 0), (TILE, 0), (0, TILE), (TILE, TILE)]):
        img.paste((60 * k, 0, 0), (x, y, x + TILE, y + TILE))
    img.save(path)


def answer(image, question):
    return "no" if question == "Q3" and image.getpixel((0, 0))[0] // 60 == 2 else "yes"


def test_own_question_file_is_scored_with_the_flag_and_named_in_the_protocol(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(scorers, "get_vqa", lambda name, weights, device: ScriptedVQA(answer))
    csv_path = write_csv(tmp_path / "my_questions.csv")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for item in ("a", "b"):
        grid(imgs / f"{item}.png")
    out = tmp_path / "dpg.json"
    assert main(["score", "--benchmark", "dpg", "--images", str(imgs), "--dpg-csv", str(csv_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "my_questions.csv: git blob sha1" in err and "is not the official dpg_bench.csv" in err
    assert not out.exists()
    assert main(["score", "--benchmark", "dpg", "--images", str(imgs), "--dpg-csv", str(csv_path),
                 "--no-verify-csv", "--out", str(out)]) == 0
    # the per-item file the scorer writes beside the image folder is named, as is the results file
    side = tmp_path / "imgs_dpg_fixed.json"
    assert f"wrote {side} (dpg's per-item results)\nwrote {out}\n" in capsys.readouterr().out and side.is_file()
    (result,) = json.loads(out.read_text())["results"]
    assert result["protocol"]["csv"] == "not the official dpg_bench.csv"
    assert result["per_item"]["a"]["dpg"] == 100.0 and result["per_item"]["b"]["dpg"] == 100 * 3.5 / 4
    assert result["aggregate"]["dpg"] == (100.0 + 87.5) / 2
