"""Golden GenEval outcomes from GenEval's own `evaluation/evaluate_images.py` on scripted detections, written to
tests/data/geneval_golden.json (inputs and outputs); tests/test_geneval_golden.py checks metrics/geneval.py on them.

    git clone https://github.com/djghosh13/geneval /tmp/geneval && git -C /tmp/geneval checkout af4902f24d3c
    python scripts/make_geneval_golden.py /tmp/geneval tests/data/geneval_golden.json

The reference is imported as it is, with stubs only for the imports the rules never use (mmdet, open_clip,
clip_benchmark: the models); the detector's output (mmdet's per-class float32 [x1, y1, x2, y2, score] arrays) and
the colour classifier's answers are scripted. Each case is also run on its metadata stripped the way SANA's
`scripts/inference_geneval.py` strips it (only filename, prompt, tag, include reach metadata.jsonl), which is what
the `sana` protocol must reproduce (docs/protocols.md §3.7). The reference's code is not committed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image
from pinned_checkout import pin_error

COMMIT = "af4902f24d3ca90ebbb446dd9891a59e0f82725f"
SANA_KEYS = ("filename", "prompt", "tag", "include")   # SANA's builder schema (scripts/inference_geneval.py)


def _box(x1, y1, x2, y2, score):
    return [x1, y1, x2, y2, score]


# (name, metadata, detections {class: [[x1, y1, x2, y2, score], ...]}, colours {class: [colour per kept box]})
CASES = [
    ("single: above the cut", {"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                               "prompt": "a photo of a bench"}, {"bench": [_box(0, 0, 9, 9, 0.31)]}, {}),
    ("single: score exactly float32(0.3)", {"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                                            "prompt": "a photo of a bench"},
     {"bench": [_box(0, 0, 9, 9, float(np.float32(0.3)))]}, {}),
    ("single: next float32 above 0.3", {"tag": "single_object", "include": [{"class": "bench", "count": 1}],
                                        "prompt": "a photo of a bench"},
     {"bench": [_box(0, 0, 9, 9, float(np.nextafter(np.float32(0.3), np.float32(1))))]}, {}),
    ("single: other class only", {"tag": "single_object", "include": [{"class": "cow", "count": 1}],
                                  "prompt": "a photo of a cow"}, {"dog": [_box(0, 0, 9, 9, 0.99)]}, {}),
    ("two objects: one below the cut", {"tag": "two_object", "include": [{"class": "cat", "count": 1},
                                                                         {"class": "dog", "count": 1}],
                                        "prompt": "a photo of a cat and a dog"},
     {"cat": [_box(0, 0, 5, 5, 0.5)], "dog": [_box(9, 9, 20, 20, 0.2)]}, {}),
    ("counting: exactly two", {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                               "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"},
     {"clock": [_box(0, 0, 5, 5, 0.95), _box(10, 0, 15, 5, 0.91), _box(20, 0, 25, 5, 0.9)]}, {}),
    ("counting: an extra instance", {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                                     "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"},
     {"clock": [_box(0, 0, 5, 5, 0.95), _box(10, 0, 15, 5, 0.91), _box(20, 0, 25, 5, 0.93)]}, {}),
    ("counting: two extra instances", {"tag": "counting", "include": [{"class": "cup", "count": 3}],
                                       "exclude": [{"class": "cup", "count": 4}], "prompt": "a photo of three cups"},
     {"cup": [_box(i * 10, 0, i * 10 + 5, 5, 0.99 - 0.01 * i) for i in range(5)]}, {}),
    ("counting: too few", {"tag": "counting", "include": [{"class": "clock", "count": 2}],
                           "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"},
     {"clock": [_box(0, 0, 5, 5, 0.95), _box(9, 9, 12, 12, 0.85)]}, {}),
    ("counting: other class under 0.9", {"tag": "counting", "include": [{"class": "dog", "count": 1}],
                                         "exclude": [{"class": "dog", "count": 2}], "prompt": "a photo of one dog"},
     {"dog": [_box(0, 0, 5, 5, 0.95)], "cat": [_box(9, 9, 12, 12, 0.85)]}, {}),
    ("max 16 per class", {"tag": "single_object", "include": [{"class": "cup", "count": 1}],
                          "exclude": [{"class": "cup", "count": 17}], "prompt": "a photo of a cup"},
     {"cup": [_box(i, 0, i + 1, 1, 0.31 + 0.01 * i) for i in range(20)]}, {}),
    ("colors: right colour", {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}],
                              "prompt": "a photo of a red car"},
     {"car": [_box(0, 0, 9, 9, 0.9), _box(20, 0, 29, 9, 0.8)]}, {"car": ["red", "blue"]}),
    ("colors: wrong colour on the top object", {"tag": "colors", "include": [{"class": "car", "count": 1,
                                                                               "color": "red"}],
                                                "prompt": "a photo of a red car"},
     {"car": [_box(0, 0, 9, 9, 0.9), _box(20, 0, 29, 9, 0.8)]}, {"car": ["blue", "red"]}),
    ("color_attr: both colours", {"tag": "color_attr", "include": [{"class": "bench", "count": 1, "color": "green"},
                                                                   {"class": "vase", "count": 1, "color": "white"}],
                                  "prompt": "a photo of a green bench and a white vase"},
     {"bench": [_box(0, 0, 9, 9, 0.9)], "vase": [_box(20, 0, 29, 9, 0.8)]},
     {"bench": ["green"], "vase": ["black"]}),
    ("position: left of", {"tag": "position", "include": [{"class": "dog", "count": 1},
                                                          {"class": "cat", "count": 1, "position": ["left of", 0]}],
                           "prompt": "a photo of a cat left of a dog"},
     {"dog": [_box(60, 10, 80, 30, 0.9)], "cat": [_box(0, 10, 20, 30, 0.9)]}, {}),
    ("position: wrong side", {"tag": "position", "include": [{"class": "dog", "count": 1},
                                                             {"class": "cat", "count": 1, "position": ["above", 0]}],
                              "prompt": "a photo of a cat above a dog"},
     {"dog": [_box(0, 0, 20, 20, 0.9)], "cat": [_box(0, 60, 20, 80, 0.9)]}, {}),
    ("position: overlapping, no relation", {"tag": "position",
                                            "include": [{"class": "dog", "count": 1},
                                                        {"class": "cat", "count": 1, "position": ["below", 0]}],
                                            "prompt": "a photo of a cat below a dog"},
     {"dog": [_box(0, 0, 20, 20, 0.9)], "cat": [_box(1, 2, 21, 22, 0.9)]}, {}),
    ("position: missing target", {"tag": "position", "include": [{"class": "dog", "count": 1},
                                                                 {"class": "cat", "count": 1,
                                                                  "position": ["right of", 0]}],
                                  "prompt": "a photo of a cat right of a dog"},
     {"cat": [_box(0, 0, 20, 20, 0.9)]}, {}),
]


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def load_reference(checkout: Path):
    """GenEval's evaluate_images.py as a module, with the model imports stubbed and the rule constants set."""
    zsc = _stub("clip_benchmark.metrics.zeroshot_classification")
    stubs = {"mmdet": _stub("mmdet", __file__=str(checkout / "mmdet_stub.py")),
             "mmdet.apis": _stub("mmdet.apis", inference_detector=None, init_detector=None),
             "open_clip": _stub("open_clip"), "clip_benchmark": _stub("clip_benchmark"),
             "clip_benchmark.metrics": _stub("clip_benchmark.metrics", zeroshot_classification=zsc),
             "clip_benchmark.metrics.zeroshot_classification": zsc}
    spec = importlib.util.spec_from_file_location("geneval_evaluate_images",
                                                  checkout / "evaluation" / "evaluate_images.py")
    module = importlib.util.module_from_spec(spec)
    # its module body asserts a CUDA device; the rules run on NumPy only
    with mock.patch.dict(sys.modules, stubs), mock.patch("torch.cuda.is_available", return_value=True):
        spec.loader.exec_module(module)
    module.THRESHOLD, module.COUNTING_THRESHOLD, module.MAX_OBJECTS = 0.3, 0.9, 16     # its __main__ defaults
    module.NMS_THRESHOLD, module.POSITION_THRESHOLD = 1.0, 0.1
    module.classnames = (checkout / "evaluation" / "object_names.txt").read_text().split("\n")
    module.classnames = [c.strip() for c in module.classnames if c.strip()]
    return module


def run_case(ref, image: Path, metadata: dict, detections: dict, colours: dict) -> dict:
    bbox = [np.array(detections.get(c, []), dtype=np.float32).reshape(-1, 5) for c in ref.classnames]
    ref.inference_detector = lambda detector, path: bbox          # mmdet 2.x's bbox-only result
    ref.object_detector = None                                    # set by its __main__; unused here
    ref.color_classification = lambda img, objs, classname: [
        colours[classname][next(i for i, b in enumerate(detections[classname]) if
                                np.allclose(np.float32(b[:4]), obj[0][:4]))] for obj in objs]
    row = ref.evaluate_image(str(image), json.loads(json.dumps(metadata)))
    return {"correct": bool(row["correct"]), "reason": row["reason"], "details": json.loads(row["details"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help=f"a djghosh13/geneval checkout at {COMMIT[:12]}")
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    error = pin_error(args.checkout, COMMIT)
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ref = load_reference(args.checkout)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "00000.png"
        Image.new("RGB", (100, 100)).save(image)
        for name, metadata, detections, colours in CASES:
            sana = {k: metadata[k] for k in SANA_KEYS if k in metadata}
            out.append({"name": name, "metadata": metadata, "detections": detections, "colours": colours,
                        "official": run_case(ref, image, metadata, detections, colours),
                        "sana_metadata": sana, "sana": run_case(ref, image, sana, detections, colours)})
    payload = {"reference": f"djghosh13/geneval@{COMMIT} evaluation/evaluate_images.py",
               "made_by": "scripts/make_geneval_golden.py", "image_size": [100, 100], "cases": out}
    tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(payload, indent=1) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out}: {len(out)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
