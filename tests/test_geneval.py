"""GenEval rules (docs/protocols.md §3.3-3.5) on scripted detections with hand-computed outcomes; layout checks;
the colour crop; a tiny random Mask2Former through the transformers adapter (vs transformers' own post-processing).
"""
import ast
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from metrics.base import MetricError
from metrics.detectors import Detection, ScriptedColorClassifier, ScriptedDetector, mask_composite_crop
from metrics.geneval import evaluate, read_folder_layout, relative_position, score, select_detections, summarize
from sana_eval.cli.main import main
from sana_eval.results import read_results
from sana_eval.scoring import scorers
from sana_eval.smoke.tiny import tiny_mask2former

IMG = Image.new("RGB", (64, 64))


def det(x1, y1, x2, y2, s=0.99):
    return Detection((float(x1), float(y1), float(x2), float(y2)), s)


def run(meta, raw, colors=None):
    objects = select_detections(raw, meta["tag"])
    return evaluate(IMG, objects, meta, ScriptedColorClassifier(colors or {}))


# ---------------------------------------------------------------- thresholds and truncation (§3.3)

def test_single_object_threshold_is_strict():
    meta = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
    assert run(meta, {"bench": [det(0, 0, 9, 9, 0.31)]}) == (True, "")
    assert run(meta, {"bench": [det(0, 0, 9, 9, 0.3)]}) == (False, "expected bench>=1, found 0")
    assert run(meta, {"dog": [det(0, 0, 9, 9)]}) == (False, "expected bench>=1, found 0")


def test_two_object():
    meta = {"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}]}
    assert run(meta, {"cat": [det(0, 0, 5, 5, 0.5)], "dog": [det(9, 9, 20, 20, 0.4)]}) == (True, "")
    assert run(meta, {"cat": [det(0, 0, 5, 5, 0.5)], "dog": [det(9, 9, 20, 20, 0.2)]}) == (
        False, "expected dog>=1, found 0")


def test_counting_uses_09_for_all_classes_and_exclude():
    meta = {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}]}
    two = [det(0, 0, 5, 5, 0.95), det(10, 0, 15, 5, 0.91), det(20, 0, 25, 5, 0.9), det(30, 0, 35, 5, 0.5)]
    assert run(meta, {"clock": two}) == (True, "")
    three = two[:2] + [det(20, 0, 25, 5, 0.9001)]
    assert run(meta, {"clock": three}) == (False, "expected clock<3, found 3")
    assert run(meta, {"clock": [det(0, 0, 5, 5, 0.95), det(9, 9, 12, 12, 0.85)]}) == (
        False, "expected clock>=2, found 1")
    # the 0.9 cut applies to every class of a counting image, not only the counted one
    assert select_detections({"dog": [det(0, 0, 1, 1, 0.8)]}, "counting") == {}
    assert len(select_detections({"dog": [det(0, 0, 1, 1, 0.8)]}, "two_object")["dog"]) == 1


def test_max_16_per_class_sorted_by_score():
    cups = [det(i, 0, i + 1, 1, 0.31 + 0.01 * i) for i in range(20)]  # ascending scores
    kept = select_detections({"cup": cups}, "single_object")["cup"]
    assert [d.box[0] for d in kept] == [float(i) for i in range(19, 3, -1)]  # top 16, best first
    # exclude counts only the 16 kept: 20 cups do not trip "cup < 17"
    meta = {"tag": "single_object", "include": [{"class": "cup", "count": 1}],
            "exclude": [{"class": "cup", "count": 17}]}
    assert run(meta, {"cup": cups}) == (True, "")
    meta["exclude"][0]["count"] = 16
    assert run(meta, {"cup": cups}) == (False, "expected cup<16, found 16")


def test_unknown_class_is_an_error():
    with pytest.raises(MetricError, match="unknown class 'unicorn'"):
        select_detections({"unicorn": [det(0, 0, 1, 1)]}, "single_object")


# ---------------------------------------------------------------- colour (§3.4)

def test_colors_top_count_objects_only():
    meta = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]}
    best, other = det(0, 0, 10, 10, 0.9), det(20, 20, 30, 30, 0.8)
    clf = ScriptedColorClassifier({("car", best.box): "blue", ("car", other.box): "red"})
    objects = select_detections({"car": [other, best]}, "colors")
    assert evaluate(IMG, objects, meta, clf) == (False, "expected red car>=1, found 0 red; and 1 blue")
    assert clf.calls == [("car", 1)]  # only the most confident car is classified


def test_color_attr_both_colours_needed():
    meta = {"tag": "color_attr", "include": [{"class": "wine glass", "count": 1, "color": "purple"},
                                             {"class": "apple", "count": 1, "color": "black"}]}
    g, a = det(0, 0, 10, 10), det(30, 30, 40, 40)
    raw = {"wine glass": [g], "apple": [a]}
    assert run(meta, raw, {("wine glass", g.box): "purple", ("apple", a.box): "black"}) == (True, "")
    assert run(meta, raw, {("wine glass", g.box): "purple", ("apple", a.box): "red"}) == (
        False, "expected black apple>=1, found 0 black; and 1 red")


# ---------------------------------------------------------------- position (§3.4), hand-computed offsets

def test_relative_position_cases():
    # centres (5,5) vs (25,5): offset (-20,0), margin 0.1*(10+10)=2 -> revised (-18,0), dx=-0.9
    assert relative_position(det(0, 0, 10, 10), det(20, 0, 30, 10)) == ("left of",)
    assert relative_position(det(20, 0, 30, 10), det(0, 0, 10, 10)) == ("right of",)
    # y grows downwards: smaller y is "above"
    assert relative_position(det(0, 0, 10, 10), det(0, 20, 10, 30)) == ("above",)
    assert relative_position(det(0, 20, 10, 30), det(0, 0, 10, 10)) == ("below",)
    # margin exactly equal to the offset: 100-wide boxes, centres 20 apart, margin 0.1*200=20 -> no relation
    assert relative_position(det(0, 0, 100, 10), det(20, 0, 120, 10)) == ()
    # overlapping boxes: offset (-2,-2), margin 2 on each axis -> no relation
    assert relative_position(det(0, 0, 10, 10), det(2, 2, 12, 12)) == ()
    # revised offset below the 1e-3 cutoff: offset 20.0005, margin 20 -> 0.0005
    assert relative_position(det(0, 0, 100, 10), det(20.0005, 0, 120.0005, 10)) == ()
    # diagonal of degenerate boxes: offset (-10,-10) -> dx = dy = -0.707: both relations
    assert relative_position(det(0, 0, 0, 0), det(10, 10, 10, 10)) == ("left of", "above")
    # offset (-10,-20): dx = -10/sqrt(500) = -0.447 (not left), dy = -0.894 (above)
    assert relative_position(det(0, 0, 0, 0), det(10, 20, 10, 20)) == ("above",)
    # dx exactly -0.5 is not "left of": offset (-1, -sqrt(3)) on unit norm scale
    assert "left of" not in relative_position(det(0, 0, 0, 0), det(10, 10 * 3 ** 0.5, 10, 10 * 3 ** 0.5))


def test_position_rule_every_pair_and_missing_target():
    meta = {"tag": "position", "include": [{"class": "teddy bear", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["right of", 0]}]}
    bear, dog = det(0, 0, 10, 10), det(30, 0, 40, 10)
    assert run(meta, {"teddy bear": [bear], "dog": [dog]}) == (True, "")
    assert run(meta, {"teddy bear": [dog], "dog": [bear]}) == (
        False, "expected dog right of target, found left of target")
    assert run(meta, {"teddy bear": [bear], "dog": [det(2, 2, 12, 12)]}) == (
        False, "expected dog right of target, found  target")
    assert run(meta, {"dog": [dog]}) == (
        False, "expected teddy bear>=1, found 0\nno target for dog to be right of")
    # several objects per group: every (object, target) pair must hold
    meta2 = {"tag": "position", "include": [{"class": "teddy bear", "count": 2},
                                            {"class": "dog", "count": 2, "position": ["right of", 0]}]}
    bears = [det(0, 0, 10, 10, 0.9), det(0, 20, 10, 30, 0.8)]
    dogs = [det(100, 0, 110, 10, 0.9), det(100, 20, 110, 30, 0.8)]
    # dog 1 vs bear 2: offset (100, -20), revised (98, -18) / 101.98 -> dx 0.96, dy -0.18: right of only
    assert run(meta2, {"teddy bear": bears, "dog": dogs}) == (True, "")
    # a third bear below threshold is not a target
    assert run(meta2, {"teddy bear": bears + [det(200, 0, 210, 10, 0.1)], "dog": dogs}) == (True, "")
    # bear 2 moved right of dog 1: offset (-20, -20), revised (-18, -18) -> dx = dy = -0.64
    assert run(meta2, {"teddy bear": [bears[0], det(120, 20, 130, 30, 0.8)], "dog": dogs}) == (
        False, "expected dog right of target, found left of and above target")


# ---------------------------------------------------------------- summary (§3.5), hand-made rows

def test_summary_is_unweighted_mean_of_tasks():
    rows = []
    # single_object: 2 prompts x 4 images, 8/8 correct; position: 1 prompt, 1/4 correct; counting: 1 prompt, 0/4
    for p, (tag, correct) in enumerate([("single_object", [1, 1, 1, 1]), ("single_object", [1, 1, 1, 1]),
                                        ("position", [0, 1, 0, 0]), ("counting", [0, 0, 0, 0])]):
        rows += [{"tag": tag, "metadata": json.dumps({"p": p}), "correct": bool(c)} for c in correct]
    s = summarize(rows)
    assert s["tasks"] == {"single_object": 1.0, "position": 0.25, "counting": 0.0}
    assert s["overall"] == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    assert s["correct_images"] == pytest.approx(9 / 16)
    assert s["correct_prompts"] == pytest.approx(3 / 4)
    assert s["missing_tasks"] == ["two_object", "colors", "color_attr"]


# ---------------------------------------------------------------- colour crop

def test_mask_composite_crop_known_pixels():
    px = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)  # H=6, W=5
    mask = np.zeros((6, 5), bool)
    mask[1, 1] = mask[2, 3] = True
    crop = np.asarray(mask_composite_crop(Image.fromarray(px), Detection((0.6, 1.4, 4.5, 3.5), 1.0, mask)))
    # PIL rounds half to even: box -> (1, 1, 4, 4): rows 1..3, cols 1..3
    expected = np.full((3, 3, 3), 0x99, np.uint8)
    expected[0, 0] = px[1, 1]
    expected[1, 2] = px[2, 3]
    np.testing.assert_array_equal(crop, expected)
    no_mask = np.asarray(mask_composite_crop(Image.fromarray(px), Detection((0, 0, 2, 2), 1.0)))
    np.testing.assert_array_equal(no_mask, px[:2, :2])


# ---------------------------------------------------------------- layout + end to end

META = [{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
        {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
         "prompt": "a photo of two clocks"}]


def make_folder(root, n=2, ext="png", images=4):
    for i in range(n):
        d = root / f"{i:05d}" / "samples"
        d.mkdir(parents=True)
        (root / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps(META[i]))
        for k in range(images):
            Image.new("RGB", (16, 16)).save(d / f"{k:05d}.{ext}")
    return root


def test_layout_errors_name_the_folder(tmp_path):
    make_folder(tmp_path / "a")
    with pytest.raises(MetricError, match="prompt folder 00002 missing"):
        read_folder_layout(tmp_path / "a")
    assert len(read_folder_layout(tmp_path / "a", limit=2)) == 2
    make_folder(tmp_path / "b", images=3)
    with pytest.raises(MetricError, match=r"00000/samples: 3 <digits>.png images, expected 4"):
        read_folder_layout(tmp_path / "b", limit=2)
    make_folder(tmp_path / "c", ext="jpg")
    with pytest.raises(MetricError, match=r"00000/samples/00000.jpg: JPEG"):
        read_folder_layout(tmp_path / "c", limit=2)
    (tmp_path / "a" / "00001" / "metadata.jsonl").write_text("{not json")
    with pytest.raises(MetricError, match=r"00001/metadata.jsonl: unreadable"):
        read_folder_layout(tmp_path / "a", limit=2)
    make_folder(tmp_path / "d")
    with pytest.raises(MetricError, match=r"00001/metadata.jsonl: differs from line 2"):
        read_folder_layout(tmp_path / "d", limit=2, expected_metadata=[META[0], META[0]])


def test_score_end_to_end_and_resume(tmp_path):
    root = make_folder(tmp_path / "imgs")
    clocks = [det(0, 0, 4, 4, 0.95), det(8, 8, 12, 12, 0.93)]
    script = {f"00000/{k:05d}.png": {"bench": [det(1, 1, 9, 9, 0.8 if k else 0.1)]} for k in range(4)}
    script.update({f"00001/{k:05d}.png": {"clock": clocks[: 1 + (k > 1)]} for k in range(4)})
    key = lambda im: f"{im.filename.split('/')[-3]}/{im.filename.split('/')[-1]}"  # noqa: E731
    detector = ScriptedDetector(script, key)
    with pytest.warns(UserWarning, match="--limit 2"):
        res = score(root, detector, ScriptedColorClassifier({}), limit=2, cache_dir=tmp_path / "cache")
    # single_object 3/4, counting 2/4 -> overall 0.625; prompts: both have a correct image
    assert res.aggregate["geneval"] == pytest.approx(0.625)
    assert res.aggregate["geneval/correct_prompts"] == 1.0 and res.provenance["complete"] is False
    rows = [json.loads(line) for line in (tmp_path / "imgs_geneval.jsonl").read_text().splitlines()]
    assert list(rows[0]) == ["filename", "tag", "prompt", "correct", "reason", "metadata", "details"]
    assert rows[0]["reason"] == "expected bench>=1, found 0" and json.loads(rows[1]["details"]) == {
        "bench": [[1.0, 1.0, 9.0, 9.0, 0.8]]}
    # rerun: every row comes from the cache, the detector is not called
    with pytest.warns(UserWarning):
        again = score(root, ScriptedDetector({}), ScriptedColorClassifier({}), limit=2, cache_dir=tmp_path / "cache")
    assert again.aggregate == res.aggregate
    # a different backend is a different protocol: results refuse to merge
    other = type(res)(res.metric, {**res.protocol, "detector": {"backend": "other"}}, res.aggregate)
    with pytest.raises(MetricError, match="protocols differ"):
        res.merge(other)


# ---------------------------------------------------------------- transformers Mask2Former adapter

def test_mask2former_adapter_matches_transformers_postprocess():
    from transformers import Mask2FormerImageProcessor

    from metrics.detectors.base import OBJECT_NAMES
    from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF, preprocess
    model = tiny_mask2former()
    # transformers keeps top-num_queries (query, class) pairs where mmdet keeps top-100: align that for the check
    detector = Mask2FormerHF(config=Mask2FormerConfig(scale=(384, 384), max_per_image=6, device="cpu"), model=model)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (384, 384, 3), dtype=np.uint8))
    ours = detector.detect(image)
    # reference: transformers' post-processing, which coincides with mmdet's for a 384x384 unpadded input
    x, _ = preprocess(image, detector.config)
    with torch.no_grad():
        out = model(pixel_values=x)
    ref = Mask2FormerImageProcessor().post_process_instance_segmentation(
        out, threshold=0.0, target_sizes=[(384, 384)], return_binary_maps=True)[0]
    ref_dets = sorted([(OBJECT_NAMES[s["label_id"]], s["score"], ref["segmentation"][k].numpy().astype(bool))
                       for k, s in enumerate(ref["segments_info"])], key=lambda t: t[:2])
    our_dets = sorted([(name, d.score, d.mask) for name, ds in ours.items() for d in ds if d.mask.any()],
                      key=lambda t: t[:2])
    assert len(our_dets) == len(ref_dets) > 0
    for (n1, s1, m1), (n2, s2, m2) in zip(our_dets, ref_dets):
        assert n1 == n2 and s1 == pytest.approx(s2, abs=2e-6)
        np.testing.assert_array_equal(m1, m2)
    # boxes are the masks' tight boxes with exclusive max (mmdet mask2bbox), checked with numpy
    for ds in ours.values():
        for d in ds:
            ys, xs = np.nonzero(d.mask)
            want = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
            assert d.box == tuple(float(v) for v in want)


def test_mask2former_adapter_resizes_back_to_image(tmp_path):
    from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF, resize_scale
    assert resize_scale(512, 512, (1333, 800)) == (800, 800)
    assert resize_scale(480, 640, (1333, 800)) == (800, 1067)  # mmcv imrescale: factor min(1333/640, 800/480)
    detector = Mask2FormerHF(config=Mask2FormerConfig(scale=(100, 60), device="cpu"), model=tiny_mask2former())
    dets = detector.detect(Image.new("RGB", (50, 30), (200, 10, 10)))
    masks = [d.mask for ds in dets.values() for d in ds]
    assert len(masks) == 100 and all(m.shape == (30, 50) for m in masks)  # top-100 (query, class) pairs
    assert "mask2bbox" in detector.protocol["postprocess"] and detector.protocol["official"] is False


def test_missing_weights_message(tmp_path, monkeypatch):
    from metrics.detectors.mask2former_hf import Mask2FormerHF
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(MetricError, match="huggingface-cli download facebook/mask2former-swin-small-coco-instance"):
        Mask2FormerHF()


def test_mask_to_box_exclusive_max():
    from metrics.detectors.mask2former_hf import mask_to_box
    m = torch.zeros(10, 12, dtype=torch.bool)
    m[2, 3] = m[5, 7] = True
    assert mask_to_box(m) == (3.0, 2.0, 8.0, 6.0)
    assert mask_to_box(torch.zeros(4, 4, dtype=torch.bool)) == (0.0, 0.0, 0.0, 0.0)


def test_clip_color_classifier_zero_shot_rule():
    import open_clip
    import torch.nn.functional as F

    from metrics.detectors.clip_color import CLIPColorClassifier
    torch.manual_seed(0)
    model = open_clip.model.CLIP(16, open_clip.model.CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8,
                                                                               image_size=32),
                                 open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2,
                                                             layers=1))
    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    clf = CLIPColorClassifier(device="cpu", model=model, preprocess=preprocess, tokenizer=tokenizer)
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    mask = rng.random((40, 40)) > 0.5
    objs = [Detection((3.0, 4.0, 30.0, 33.0), 0.9, mask), Detection((0.0, 0.0, 20.0, 40.0), 0.8, None)]
    with torch.no_grad():
        cols = []
        for c in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"):
            texts = [f"a photo of a {c} hot dog", f"a photo of a {c}-colored hot dog", f"a photo of a {c} object"]
            e = F.normalize(model.encode_text(tokenizer(texts)), dim=-1).mean(0)
            cols.append(e / e.norm())
        w = torch.stack(cols, 1)
        grey = np.where(mask[..., None], np.asarray(image), 0x99).astype(np.uint8)[4:33, 3:30]
        crops = torch.stack([preprocess(Image.fromarray(grey)), preprocess(image.crop((0, 0, 20, 40)))])
        want = 100 * F.normalize(model.encode_image(crops), dim=-1) @ w
    got = clf.logits(image, objs, "hot dog")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert clf.classify(image, objs, "hot dog") == [clf.protocol["colors"][i] for i in want.argmax(1).tolist()]


# ---------------------------------------------------------------- float32 threshold (§3.3)

def test_threshold_is_compared_in_float32_like_upstream():
    """mmdet's boxes are float32 and NumPy compares them with the Python 0.3 in float32: a score of exactly
    float32(0.3) = 0.300000011920928955078125 is not above the cut there, although it is above 0.3 in float64."""
    at_cut = float(np.float32(0.3))
    assert at_cut == 0.300000011920928955078125 and at_cut > 0.3
    meta = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
    assert run(meta, {"bench": [det(0, 0, 9, 9, at_cut)]}) == (False, "expected bench>=1, found 0")
    above = float(np.nextafter(np.float32(0.3), np.float32(1)))          # the next float32 up survives
    assert run(meta, {"bench": [det(0, 0, 9, 9, above)]}) == (True, "")
    counting = {"tag": "counting", "include": [{"class": "clock", "count": 1}], "prompt": "a photo of one clock"}
    assert run(counting, {"clock": [det(0, 0, 9, 9, float(np.float32(0.9)))]})[0] is False


# ---------------------------------------------------------------- the `sana` protocol (§3.7)

COUNT_META = {"tag": "counting", "include": [{"class": "clock", "count": 2}],
              "exclude": [{"class": "clock", "count": 3}], "prompt": "a photo of two clocks"}
SINGLE_META = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}


def _sana_written(index: int, official: dict) -> dict:
    """metadata.jsonl as SANA's inference_geneval.py writes it, built by hand from its builder's schema: filename
    (4 digits), prompt, tag and include (a str() of the list); every other key, `exclude` among them, dropped."""
    return {"filename": f"{index:04d}", "prompt": official["prompt"], "tag": official["tag"],
            "include": str(official["include"])}


def _folder(root, metas):
    for i, meta in enumerate(metas):
        (root / f"{i:05d}" / "samples").mkdir(parents=True)
        (root / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps(meta))
        for k in range(4):
            Image.new("RGB", (16, 16)).save(root / f"{i:05d}" / "samples" / f"{k:05d}.png")
    return root


def _clock_detector():
    """Prompt 1 (two clocks): images 0-1 show two clocks, 2-3 three (one extra instance); all above 0.9."""
    clocks = [det(0, 0, 4, 4, 0.97), det(8, 8, 12, 12, 0.95), det(20, 0, 24, 4, 0.93)]
    script = {f"00000/{k:05d}.png": {"bench": [det(1, 1, 9, 9, 0.8)]} for k in range(4)}
    script.update({f"00001/{k:05d}.png": {"clock": clocks[:2 + (k > 1)]} for k in range(4)})
    return ScriptedDetector(script, lambda im: f"{im.filename.split('/')[-3]}/{im.filename.split('/')[-1]}")


def test_sana_protocol_is_official_scoring_of_the_metadata_sana_kept(tmp_path):
    root = _folder(tmp_path / "imgs", [SINGLE_META, COUNT_META])
    official = score(root, _clock_detector(), ScriptedColorClassifier({}), limit=2, out_file=tmp_path / "o.jsonl")
    sana = score(root, _clock_detector(), ScriptedColorClassifier({}), limit=2, out_file=tmp_path / "s.jsonl",
                 geneval_protocol="sana")
    # counting: 2 of 4 images correct officially (the three-clock ones fail "exactly two"), 4 of 4 for SANA
    assert official.aggregate["geneval/counting"] == 0.5 and sana.aggregate["geneval/counting"] == 1.0
    assert official.protocol["geneval_protocol"] == "official" and sana.protocol["geneval_protocol"] == "sana"
    assert "at least N" in sana.protocol["geneval_protocol_rule"]
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["reason"] for r in rows[4:]] == ["", "", "expected clock<3, found 3", "expected clock<3, found 3"]
    # each `sana` row is the official rules applied to the hand-stripped metadata
    stripped = {"prompt": COUNT_META["prompt"], "tag": "counting", "include": COUNT_META["include"]}
    for k, row in enumerate(json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()[4:]):
        clocks = _clock_detector().detect(type("I", (), {"filename": f"x/00001/samples/{k:05d}.png"})())
        assert (row["correct"], row["reason"]) == run(stripped, clocks) == (True, "")
        assert json.loads(row["metadata"]) == stripped


@pytest.mark.parametrize("include_as", ["string", "list"])
def test_folders_written_by_sanas_script_are_scored_with_the_sana_protocol(tmp_path, include_as):
    """SANA's script writes include as str(list) in its builder and eval()s it back before json.dump in the
    versions we read; both forms are accepted, checked against the official lines, and scored as `sana`."""
    metas = [_sana_written(i, m) for i, m in enumerate([SINGLE_META, COUNT_META])]
    if include_as == "list":
        metas = [{**m, "include": ast.literal_eval(m["include"])} for m in metas]
    root = _folder(tmp_path / "sana_imgs", metas)
    with pytest.warns(UserWarning, match="00000 .*written by SANA's inference_geneval.py.*'sana' protocol"):
        res = score(root, _clock_detector(), ScriptedColorClassifier({}), limit=2,
                    expected_metadata=[SINGLE_META, COUNT_META])
    assert res.protocol["geneval_protocol"] == "sana"
    assert res.protocol["geneval_protocol_source"].startswith("implied by the folder")
    assert res.aggregate["geneval/counting"] == 1.0
    reference = score(_folder(tmp_path / "official_imgs", [SINGLE_META, COUNT_META]), _clock_detector(),
                      ScriptedColorClassifier({}), limit=2, geneval_protocol="sana")
    assert res.aggregate == reference.aggregate
    # a SANA-written folder whose prompt differs from the official line is still refused
    bad = _folder(tmp_path / "bad", [metas[0], {**metas[1], "prompt": "a photo of three clocks"}])
    with pytest.raises(MetricError, match=r"00001/metadata.jsonl: differs from line 2"):
        read_folder_layout(bad, limit=2, expected_metadata=[SINGLE_META, COUNT_META])


def test_bad_include_strings_and_protocol_names_are_refused(tmp_path):
    root = _folder(tmp_path / "a", [{**_sana_written(0, SINGLE_META), "include": "[{'class': 'bench'"}])
    with pytest.raises(MetricError, match=r"00000/metadata.jsonl: 'include' is a string but not a Python list"):
        read_folder_layout(root, limit=1)
    with pytest.raises(MetricError, match="unknown GenEval protocol 'exact'; choose one of official, sana"):
        score(_folder(tmp_path / "b", [SINGLE_META]), _clock_detector(), ScriptedColorClassifier({}), limit=1,
              geneval_protocol="exact")


def test_score_command_passes_the_protocol_through_and_records_it(tmp_path, monkeypatch):
    """`sana-eval score --geneval-protocol sana` on scripted detections (the models and prompt file replaced)."""
    prompts = SimpleNamespace(items=[SimpleNamespace(metadata=m) for m in (SINGLE_META, COUNT_META)])
    monkeypatch.setattr(scorers, "get_benchmark", lambda name: SimpleNamespace(load=lambda data: prompts))
    monkeypatch.setattr(scorers, "get_detector", lambda *args: _clock_detector())
    monkeypatch.setattr(scorers, "get_color_classifier", lambda *args: ScriptedColorClassifier({}))
    root = _folder(tmp_path / "imgs", [SINGLE_META, COUNT_META])
    for protocol, counting in (("official", 0.5), ("sana", 1.0)):
        out = tmp_path / f"{protocol}.json"
        with pytest.warns(UserWarning, match="--limit 2"):
            assert main(["score", "--benchmark", "geneval", "--images", str(root), "--limit", "2",
                         "--geneval-protocol", protocol, "--out", str(out)]) == 0
        result = read_results(out)["geneval"]
        assert result.protocol["geneval_protocol"] == protocol
        assert result.aggregate["geneval/counting"] == counting
