"""metrics/geneval.py against GenEval's own evaluate_images.py: the outcomes in tests/data/geneval_golden.json were
made by the reference at its pinned commit on scripted detections (scripts/make_geneval_golden.py), for the official
metadata and for the metadata SANA's builder keeps (the `sana` protocol, docs/protocols.md §3.7)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics.detectors import Detection, ScriptedColorClassifier
from metrics.geneval import evaluate, sana_metadata, select_detections

GOLDEN = json.loads((Path(__file__).parent / "data" / "geneval_golden.json").read_text())
CASES = {case["name"]: case for case in GOLDEN["cases"]}


def _ours(case: dict, metadata: dict) -> dict:
    raw = {name: [Detection(tuple(float(v) for v in b[:4]), b[4]) for b in boxes]
           for name, boxes in case["detections"].items()}
    colours = ScriptedColorClassifier({(name, tuple(float(v) for v in b[:4])): colour
                                       for name, boxes in case["detections"].items()
                                       for b, colour in zip(boxes, case["colours"].get(name, []))})
    objects = select_detections(raw, metadata["tag"])
    correct, reason = evaluate(Image.new("RGB", tuple(GOLDEN["image_size"])), objects, metadata, colours)
    return {"correct": correct, "reason": reason, "details": {k: [d.row() for d in v] for k, v in objects.items()}}


def _same(ours: dict, golden: dict) -> None:
    assert (ours["correct"], ours["reason"]) == (golden["correct"], golden["reason"])
    assert ours["details"].keys() == golden["details"].keys()
    for name, rows in golden["details"].items():     # the reference writes float32 boxes
        np.testing.assert_array_equal(np.float32(ours["details"][name]), np.float32(rows))


def test_the_golden_data_covers_what_it_should():
    assert GOLDEN["reference"].startswith("djghosh13/geneval@af4902f24d3ca90ebbb446dd9891a59e0f82725f")
    differ = [name for name, case in CASES.items() if case["official"]["correct"] != case["sana"]["correct"]]
    assert differ == ["counting: an extra instance", "counting: two extra instances"]
    assert CASES["single: score exactly float32(0.3)"]["official"]["correct"] is False


@pytest.mark.parametrize("name", list(CASES))
def test_official_rules_match_evaluate_images(name):
    _same(_ours(CASES[name], CASES[name]["metadata"]), CASES[name]["official"])


@pytest.mark.parametrize("name", list(CASES))
def test_sana_protocol_matches_evaluate_images_on_sanas_metadata(name):
    case = CASES[name]
    assert sana_metadata(case["metadata"]) == case["sana_metadata"]
    _same(_ours(case, sana_metadata(case["metadata"])), case["sana"])
