"""DPG-Bench rules (docs/protocols.md §4.2-4.3) on a tiny CSV in the official schema and a scripted VQA; every expected
number below is worked out by hand in the comments. Plus a tiny random BLIP through the transformers adapter.
"""
import csv
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from metrics.base import MetricError
from metrics.dpg import apply_dependencies, git_blob_sha1, load_questions, questions_for, score
from metrics.vqa import ScriptedVQA

R = 8
# (item, qid, dependency, tuple, question); itemA's first row is the one ELLA skips.
ROWS = [("itemA", 1, "0", "entity - whole (cat)", "A1"), ("itemA", 2, "1", "attribute - color (cat, black)", "A2"),
        ("itemA", 3, "0", "entity - whole (mat)", "A3"),
        ("itemB", 1, "0", "entity - whole (dog)", "B1"), ("itemB", 2, "1", "attribute - color (dog, brown)", "B2"),
        ("itemB", 3, "2", "attribute - texture (dog, fluffy)", "B3"),
        ("itemB", 4, "1,5", "relation - spatial (dog, ball, next to)", "B4"),
        ("itemB", 5, "0", "entity - whole (ball)", "B5"), ("itemB", 6, "0", "other - count (dog, ==1)", "B6"),
        ("itemC", 1, "0", "entity - whole (bird)", "C1"), ("itemC", 2, "0", "other - text (sign, hello)", "C2"),
        # a child listed before its parent: the parent is zeroed only after the child was checked
        ("itemD", 1, "2", "attribute - size (box, big)", "D1"), ("itemD", 2, "3", "entity - state (box, open)", "D2"),
        ("itemD", 3, "0", "entity - whole (box)", "D3")]
Y, N = "yes", "no"
# answers per tile 0..3
ANSWERS = {"A1": [N] * 4, "A2": [Y] * 4, "A3": [Y] * 4,
           "B1": [Y, N, Y, Y], "B2": [Y, Y, N, Y], "B3": [Y, Y, Y, N], "B4": [Y, Y, Y, "Yes"], "B5": [Y, Y, N, Y],
           "B6": [Y, Y, N, Y], "D1": [Y] * 4, "D2": [Y] * 4, "D3": [N] * 4}


def write_csv(path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
                    "category_detailed", "tuple", "question_natural_language"])
        for item, qid, dep, tup, q in ROWS:
            w.writerow([item, f"prompt of {item}", "kw", qid, dep, tup.split(" ")[0], tup.split("(")[0], tup, q])
    return path


def grid(path, size=2 * R, offset=0):
    px = np.zeros((size, size, 3), np.uint8)
    for k, (x, y) in enumerate([(0, 0), (R, 0), (0, R), (R, R)]):
        px[offset + y:offset + y + R, offset + x:offset + x + R] = (k * 60 + 10, 0, 0)
    Image.fromarray(px).save(path)


def vqa():
    return ScriptedVQA(lambda im, q: ANSWERS[q][im.getpixel((0, 0))[0] // 60])


@pytest.fixture
def data(tmp_path):
    csv_path = write_csv(tmp_path / "dpg_bench.csv")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for item in ("itemA", "itemB", "itemD"):  # itemC's image is missing
        grid(imgs / f"{item}.png")
    (imgs / "notes.txt").write_text("not an image")
    return csv_path, imgs


def test_dependency_chain_reads_dict_as_updated(data):
    qfile = load_questions(data[0], verify=False)
    qs = qfile.items
    assert qfile.dangling == []
    # B tile 1: B1 no -> B2 (parent 1) zeroed -> B3 (parent 2, now 0) zeroed -> B4 (parents 1, 5) zeroed
    raw = {1: 0.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 1.0}
    assert apply_dependencies(raw, qs["itemB"], strict=True) == {1: 0, 2: 0, 3: 0, 4: 0, 5: 1, 6: 1}
    # D: D1 checks parent 2 while it is still 1; D2 is zeroed afterwards by D3 -> (1, 0, 0), not (0, 0, 0)
    assert apply_dependencies({1: 1.0, 2: 1.0, 3: 0.0}, qs["itemD"], strict=True) == {1: 1, 2: 0, 3: 0}
    # official drops the first data row; itemA's question 2 then depends on a missing parent
    official = questions_for(load_questions(data[0], verify=False), "official")
    assert [q.qid for q in official["itemA"]] == [2, 3]
    with pytest.raises(KeyError):
        apply_dependencies({2: 1.0, 3: 1.0}, official["itemA"], strict=True)


def test_fixed_mode_hand_computed(data, tmp_path):
    csv_path, imgs = data
    res = score(imgs, vqa(), mode="fixed", csv_path=csv_path, verify_csv=False, out_file=tmp_path / "f.json")
    # tiles: A (0,0,1)x4 -> 1/3; B 6/6, 2/6, 1/6, 4/6 -> 13/24; C missing -> 0; D (1,0,0)x4 -> 1/3
    assert res.per_item["itemB"]["dpg"] == pytest.approx(1300 / 24)
    assert [res.per_item["itemB"][f"tile{i}"] for i in range(4)] == pytest.approx([100, 200 / 6, 100 / 6, 400 / 6])
    assert res.per_item["itemC"]["dpg"] == 0.0 and res.provenance["failures"] == {"itemC": "missing image"}
    assert res.aggregate["dpg"] == pytest.approx((8 / 24 + 13 / 24 + 0 + 8 / 24) / 4 * 100)
    # categories over all tiles after dependencies, failures counted as 0
    expected_l2 = {"entity - whole": 10 / 24, "attribute - color": 2 / 8, "attribute - texture": 1 / 4,
                   "relation - spatial": 1 / 4, "other - count": 3 / 4, "other - text": 0.0,
                   "attribute - size": 1.0, "entity - state": 0.0}
    for k, v in expected_l2.items():
        assert res.aggregate[f"dpg/l2/{k}"] == pytest.approx(100 * v), k
    expected_l1 = {"entity": 10 / 28, "attribute": 7 / 16, "relation": 1 / 4, "other": 3 / 8}
    for k, v in expected_l1.items():
        assert res.aggregate[f"dpg/{k}"] == pytest.approx(100 * v), k


def test_official_mode_reproduces_ella_bugs(data, tmp_path):
    csv_path, imgs = data
    res = score(imgs, vqa(), mode="official", csv_path=csv_path, verify_csv=False, out_file=tmp_path / "o.json")
    # itemA dropped (KeyError on the skipped row), itemC absent, notes.txt fails; mean of B and D only
    assert set(res.per_item) == {"itemB", "itemD"}
    assert set(res.provenance["failures"]) == {"itemA", "notes"}
    assert "KeyError" in res.provenance["failures"]["itemA"]
    assert res.aggregate["dpg"] == pytest.approx((13 / 24 + 8 / 24) / 2 * 100)
    # categories: last tile only, before dependencies: B tile 3 raw (1,1,0,0,1,1), D raw (1,1,0)
    expected_l2 = {"entity - whole": 2 / 3, "attribute - color": 1.0, "attribute - texture": 0.0,
                   "relation - spatial": 0.0, "other - count": 1.0, "attribute - size": 1.0, "entity - state": 1.0}
    assert {k[len("dpg/l2/"):]: v for k, v in res.aggregate.items() if k.startswith("dpg/l2/")} == pytest.approx(
        {k: 100 * v for k, v in expected_l2.items()})
    assert res.aggregate["dpg/entity"] == pytest.approx(75.0)
    assert res.aggregate["dpg/attribute"] == pytest.approx(200 / 3)
    assert res.protocol["mode"] == "official"


def test_answer_cache_is_shared_by_modes_and_resumes(data, tmp_path):
    csv_path, imgs = data
    first = vqa()
    a = score(imgs, first, mode="fixed", csv_path=csv_path, verify_csv=False, cache_dir=tmp_path / "c",
              out_file=tmp_path / "a.json")
    assert len(first.calls) == (3 + 6 + 3) * 4
    again = ScriptedVQA(lambda im, q: pytest.fail("answer should come from the cache"))
    b = score(imgs, again, mode="official", csv_path=csv_path, verify_csv=False, cache_dir=tmp_path / "c",
              out_file=tmp_path / "b.json")
    assert b.aggregate["dpg"] == pytest.approx(43.75) and a.aggregate["dpg"] != b.aggregate["dpg"]


def test_grid_contract(data, tmp_path):
    csv_path, imgs = data
    grid(imgs / "itemB.png", size=2 * R + 1)
    with pytest.raises(MetricError, match=r"itemB.png: 17x17 is not an unpadded 2x2 grid of 8-px tiles"):
        score(imgs, vqa(), csv_path=csv_path, verify_csv=False, resolution=R, out_file=tmp_path / "x.json")
    padded = tmp_path / "padded"
    padded.mkdir()
    grid(padded / "itemD.png", size=2 * R + 6, offset=0)
    res = score(padded, vqa(), csv_path=csv_path, verify_csv=False, grid="sana-padded", out_file=tmp_path / "p.json")
    assert res.per_item["itemD"]["dpg"] == pytest.approx(100 / 3) and res.protocol["grid"] == "sana-padded"


def test_csv_integrity_and_schema(data, tmp_path):
    csv_path, _ = data
    git = subprocess.run(["git", "hash-object", str(csv_path)], capture_output=True, text=True)
    if git.returncode == 0:
        assert git_blob_sha1(csv_path.read_bytes()) == git.stdout.strip()
    with pytest.raises(MetricError, match="is not the official dpg_bench.csv"):
        load_questions(csv_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("item_id,text\nx,y\n")
    with pytest.raises(MetricError, match="missing column 'keywords'"):
        load_questions(bad, verify=False)
    with pytest.raises(MetricError, match="dpg_bench.csv not found|not found"):
        score(tmp_path, vqa(), csv_path=tmp_path / "nope.csv")


def test_blip_adapter_returns_text(tmp_path):
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    from metrics.vqa.blip import BlipVQA
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "yes", "no", "is", "there", "a", "cat", "?"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(tmp_path / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok)
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, encoder_hidden_size=16, bos_token_id=5, pad_token_id=0, sep_token_id=3,
                max_position_embeddings=32)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    model = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision))
    backend = BlipVQA(device="cpu", max_new_tokens=3, model=model, processor=processor)
    answers = [backend.answer(Image.new("RGB", (40, 40), c), "is there a cat ?") for c in ("red", "blue")]
    assert all(isinstance(a, str) for a in answers)
    assert backend.protocol["official"] is False


def test_missing_vqa_weights_message(tmp_path, monkeypatch):
    from metrics.vqa.blip import BlipVQA
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(MetricError, match="huggingface-cli download Salesforce/blip-vqa-base"):
        BlipVQA(device="cpu")
