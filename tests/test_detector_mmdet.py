"""The official GenEval detector backend (docs/protocols.md §3.2) on a tiny random Mask2Former in mmdet 2.x's own
format, and its conversion to transformers.

The config is GenEval's (mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py, as mmdet ships it) with widths and depths
shrunk; mmdet builds the model and mmcv saves it as a checkpoint. Detections are checked against mmdet's own
`inference_detector` on the PNG *file*, the call GenEval's evaluate_images.py makes; the converted checkpoint is
checked against mmdet's network (logits) and against the official backend (detections). Needs mmdet 2.x and mmcv-full
1.x with compiled ops (not in the project venv: `make test-mmdet` builds them).
"""
import hashlib
import json
from importlib import metadata

import numpy as np
import pytest

mmdet = pytest.importorskip("mmdet", reason="mmdet is not installed: the official GenEval detector needs mmdetection "
                                            "2.x + mmcv-full 1.x (its own environment: `make test-mmdet`)")
if int(mmdet.__version__.split(".")[0]) != 2:
    pytest.skip(f"mmdet {mmdet.__version__} installed; GenEval's detector config needs mmdet 2.x",
                allow_module_level=True)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from metrics.base import MetricError  # noqa: E402
from metrics.detectors.base import OBJECT_NAMES  # noqa: E402
from metrics.detectors.mmdet_backend import CHECKPOINT, MMDetMask2Former, official_config  # noqa: E402

EMBED, DEPTHS, HEADS = 16, [2, 2, 2, 2], [1, 1, 2, 2]  # Swin-S: 96, [2, 2, 18, 2], [3, 6, 12, 24]; 2: shifted windows
FEAT, QUERIES, HEAD_HEADS = 32, 8, 2                  # official: 256, 100, 8
MAX_PER_IMAGE = 100                                   # the official test_cfg, kept


def tiny_config(path):
    """GenEval's config with only sizes changed; the test pipeline (1333x800 keep-ratio resize, pad/32) is kept."""
    import mmcv
    cfg = mmcv.Config.fromfile(str(official_config()))
    model = cfg.model
    model.backbone.update(embed_dims=EMBED, depths=DEPTHS, num_heads=HEADS, drop_path_rate=0.0, init_cfg=None)
    head = model.panoptic_head
    head.update(in_channels=[EMBED * 2 ** i for i in range(4)], feat_channels=FEAT, out_channels=FEAT,
                num_queries=QUERIES)
    head.pixel_decoder.positional_encoding.num_feats = FEAT // 2
    head.positional_encoding.num_feats = FEAT // 2
    encoder = head.pixel_decoder.encoder
    encoder.num_layers = 1
    encoder.transformerlayers.attn_cfgs.update(embed_dims=FEAT, num_heads=HEAD_HEADS)
    encoder.transformerlayers.ffn_cfgs.update(embed_dims=FEAT, feedforward_channels=2 * FEAT)
    decoder = head.transformer_decoder
    decoder.num_layers = 3  # one round over the 3 feature levels
    decoder.transformerlayers.attn_cfgs.update(embed_dims=FEAT, num_heads=HEAD_HEADS)
    decoder.transformerlayers.ffn_cfgs.update(embed_dims=FEAT, feedforward_channels=2 * FEAT)
    decoder.transformerlayers.feedforward_channels = 2 * FEAT
    assert model.test_cfg.max_per_image == MAX_PER_IMAGE and model.test_cfg.panoptic_on is False
    cfg.dump(str(path))
    return cfg


def write_tiny_mask2former(folder, seed=0):
    """tiny_mask2former.py + CHECKPOINT ({'meta': {'CLASSES', ...}, 'state_dict'}),
    written by mmcv's save_checkpoint."""
    from mmcv.runner import save_checkpoint
    from mmdet.datasets import CocoDataset
    from mmdet.models import build_detector
    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(folder / "tiny_mask2former.py")
    torch.manual_seed(seed)
    net = build_detector(cfg.model)
    net.init_weights()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # zero-initialised biases and tiny classifier weights give near-tied scores; spread them
        for name, p in net.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.ndim > 1 and "cls_embed" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
    save_checkpoint(net, str(folder / CHECKPOINT), meta={"CLASSES": CocoDataset.CLASSES})
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mask2former(tmp_path_factory.mktemp("mmdet") / "tiny_mask2former")


@pytest.fixture(scope="module")
def detector(tiny):
    return MMDetMask2Former(model_path=str(tiny), config_path=str(tiny / "tiny_mask2former.py"), device="cpu")


@pytest.fixture(scope="module")
def official(tiny):
    from mmdet.apis import init_detector
    return init_detector(str(tiny / "tiny_mask2former.py"), str(tiny / CHECKPOINT), device="cpu")


def images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    ramp = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)  # channels differ: order matters
    noise = rng.integers(0, 256, (56, 40, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (32, 48), dtype=np.uint8)
    return [Image.fromarray(ramp), Image.fromarray(noise), Image.fromarray(gray)]


def test_detections_match_mmdet_inference_on_the_image_file(tiny, detector, official, tmp_path):
    from mmdet.apis import inference_detector
    for n, image in enumerate(images()):
        path = tmp_path / f"{n}.png"
        image.save(path)
        bbox, segm = inference_detector(official, str(path))  # mmcv.imread: BGR, as evaluate_images.py
        got = detector.detect(image)
        assert len(bbox) == len(segm) == len(OBJECT_NAMES)
        assert set(got) == {OBJECT_NAMES[i] for i in range(len(bbox)) if len(bbox[i])}, n
        for i, name in enumerate(OBJECT_NAMES):
            dets = got.get(name, [])
            assert len(dets) == len(bbox[i]) == len(segm[i]), (n, name)
            for det, row, mask in zip(dets, bbox[i], segm[i]):
                assert det.row() == [float(v) for v in row], (n, name)
                assert det.mask.dtype == bool and np.array_equal(det.mask, mask), (n, name)
                assert det.mask.shape == (image.height, image.width)
        # not degenerate: the official top-100 spread over classes, with masks of varying size
        assert sum(len(d) for d in got.values()) == MAX_PER_IMAGE
        assert len(got) >= 5, sorted(got)
        areas = {int(d.mask.sum()) for ds in got.values() for d in ds}
        assert len(areas) > 5 and max(areas) > 0, areas
        # the channel order reaches the scores, so an RGB array handed to mmdet would have been caught above
        # (through the wrapper's model: an array input switches the loader of the model's cfg in place, a shallow
        # copy in inference_detector, which would break `official`'s next file input)
        if image.mode == "RGB":
            rgb_bbox, _ = inference_detector(detector.model, np.asarray(image))
            assert not all(np.array_equal(a, b) for a, b in zip(rgb_bbox, bbox)), n


def test_checkpoint_file_path_and_protocol(tiny, detector):
    by_file = MMDetMask2Former(model_path=str(tiny / CHECKPOINT), config_path=str(tiny / "tiny_mask2former.py"),
                               device="cpu")
    image = images()[0]
    a, b = detector.detect(image), by_file.detect(image)
    assert {k: [d.row() for d in v] for k, v in a.items()} == {k: [d.row() for d in v] for k, v in b.items()}
    p = detector.protocol
    assert p["backend"] == "mmdet-mask2former" and p["official"] is True
    assert p["weights"] == {"file": CHECKPOINT, "config": "tiny_mask2former.py",
                            "sha256": hashlib.sha256((tiny / CHECKPOINT).read_bytes()).hexdigest()}
    assert p["versions"]["mmdet"] == metadata.version("mmdet") == mmdet.__version__
    assert p["versions"]["mmcv-full"] == metadata.version("mmcv-full")
    json.dumps(p)  # goes into every GenEval score file


def test_official_config_is_found_in_the_installed_mmdet():
    import mmcv
    cfg = mmcv.Config.fromfile(str(official_config()))
    assert cfg.model.type == "Mask2Former" and cfg.model.backbone.type == "SwinTransformer"
    assert cfg.model.backbone.depths == [2, 2, 18, 2] and cfg.model.panoptic_head.num_things_classes == 80


def test_missing_files_are_clear_errors(tiny, tmp_path):
    with pytest.raises(MetricError, match=CHECKPOINT.replace(".", r"\.") + " not found; download"):
        MMDetMask2Former(model_path=str(tmp_path), device="cpu")
    with pytest.raises(MetricError, match=r"nope\.py not found"):
        MMDetMask2Former(model_path=str(tiny), config_path=str(tmp_path / "nope.py"), device="cpu")


# ---------------------------------------------------------------- mmdet checkpoint -> transformers

@pytest.fixture(scope="module")
def converted(tiny, tmp_path_factory):
    from metrics.detectors.mmdet_convert import convert_checkpoint
    return convert_checkpoint(tiny / CHECKPOINT, tmp_path_factory.mktemp("hf") / "converted",
                              attention_heads=HEAD_HEADS)


@pytest.fixture(scope="module")
def converted_detector(converted):
    from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
    return Mask2FormerHF(str(converted), Mask2FormerConfig(device="cpu"))


def mmdet_input(model, image):
    """The tensor mmdet's test pipeline makes of an image (inference_detector's steps, on a copy of the config)."""
    from mmdet.datasets import replace_ImageToTensor
    from mmdet.datasets.pipelines import Compose
    cfg = model.cfg.copy()
    cfg.data.test.pipeline[0].type = "LoadImageFromWebcam"
    data = Compose(replace_ImageToTensor(cfg.data.test.pipeline))(
        {"img": np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])})
    return data["img"][0].data[None] if hasattr(data["img"][0], "data") else data["img"][0][None]


def test_hf_preprocess_is_mmdets_test_pipeline(official):
    """Bit for bit: OpenCV's uint8 bilinear resize, padding with 128 before normalising."""
    from metrics.detectors.mask2former_hf import Mask2FormerConfig, preprocess
    rng = np.random.default_rng(1)
    square = [Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (512, 1024)]  # GenEval's
    for image in images() + square:
        ours, (h, w) = preprocess(image, Mask2FormerConfig())
        theirs = mmdet_input(official, image)
        assert ours.shape == theirs.shape and min(h, w) == 800
        assert torch.equal(ours, theirs)


def test_converted_weights_give_mmdets_logits(official, converted):
    """Same input through mmdet's network and transformers' one, in float64 so that a wrong rewrite cannot hide in
    float32 noise: the backbone's four maps, and the last decoder layer's class and mask logits."""
    import copy

    from metrics.detectors.mask2former_hf import Mask2FormerConfig, load_model, preprocess
    theirs, ours = copy.deepcopy(official).double(), load_model(converted).double().eval()
    for image in images():
        x = preprocess(image, Mask2FormerConfig())[0].double()
        with torch.no_grad():
            maps = theirs.backbone(x)
            cls, masks = theirs.panoptic_head(theirs.extract_feat(x), [{}])
            out = ours(pixel_values=x, output_hidden_states=True)
        for a, b in zip(out.encoder_hidden_states, maps, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert out.class_queries_logits.shape == cls[-1].shape == (1, QUERIES, len(OBJECT_NAMES) + 1)
        # mmcv's deformable attention keeps a few float32 steps, hence 1e-6 after the backbone
        torch.testing.assert_close(out.class_queries_logits, cls[-1], rtol=0, atol=1e-6)
        torch.testing.assert_close(out.masks_queries_logits, masks[-1], rtol=0, atol=1e-6)
        assert cls[-1].std() > 0.3 and masks[-1].std() > 0.3  # random weights that spread the logits


def test_converted_detector_matches_the_official_detector(detector, converted_detector):
    for n, image in enumerate(images()):
        ours, theirs = converted_detector.detect(image), detector.detect(image)
        assert sorted(ours) == sorted(theirs), n
        for name in theirs:
            a = sorted(ours[name], key=lambda d: -d.score)
            b = sorted(theirs[name], key=lambda d: -d.score)
            assert len(a) == len(b), (n, name)
            for da, db in zip(a, b):  # same input tensor (cv2 resize, 128 padding): float32 noise only
                assert da.score == pytest.approx(db.score, rel=1e-3), (n, name)
                assert (da.mask != db.mask).mean() < 1e-4, (n, name)  # a logit within noise of 0 may flip
                assert max(abs(u - v) for u, v in zip(da.box, db.box)) <= 1, (n, name)


def test_converted_folder_records_its_source(tiny, converted, converted_detector):
    p = converted_detector.protocol
    assert p["backend"] == "transformers-mask2former" and p["official"] is False
    assert p["weights"]["converted_from"]["sha256"] == hashlib.sha256((tiny / CHECKPOINT).read_bytes()).hexdigest()
    assert p["weights"]["converted_from"]["file"] == CHECKPOINT and CHECKPOINT in p["note"]
    assert sorted(path.name for path in converted.iterdir()) == ["config.json", "conversion.json", "model.safetensors"]
    config = json.loads((converted / "config.json").read_text())
    assert config["decoder_layers"] == 4 and config["num_queries"] == QUERIES  # mmdet's 3 + the query-only layer
    assert config["backbone_config"]["depths"] == DEPTHS and config["backbone_config"]["num_heads"] == HEADS


def test_converter_refuses_bad_requests(tiny, converted, tmp_path):
    from metrics.detectors.mmdet_convert import convert_checkpoint
    with pytest.raises(MetricError, match="sampling_offsets has 48 rows, not heads x levels x points x 2 = 8 x"):
        convert_checkpoint(tiny / CHECKPOINT, tmp_path / "out")  # GenEval's 8 heads; the tiny model has 2
    with pytest.raises(MetricError, match="exists; the converter writes a new folder"):
        convert_checkpoint(tiny / CHECKPOINT, converted, attention_heads=HEAD_HEADS)
    assert not any(tmp_path.iterdir())  # nothing half written


def test_geneval_architecture_at_full_size_converts(tmp_path):
    """GenEval's config unchanged (random weights) with the converter's defaults: the architecture of
    facebook/mask2former-swin-small-coco-instance, and mmdet's logits in float64."""
    import mmcv
    from mmcv.runner import save_checkpoint
    from mmdet.datasets import CocoDataset
    from mmdet.models import build_detector

    from metrics.detectors.mask2former_hf import Mask2FormerConfig, load_model, preprocess
    from metrics.detectors.mmdet_convert import convert_checkpoint
    cfg = mmcv.Config.fromfile(str(official_config()))
    cfg.model.backbone.init_cfg = None  # no ImageNet download
    torch.manual_seed(0)
    net = build_detector(cfg.model)
    net.init_weights()
    save_checkpoint(net, str(tmp_path / CHECKPOINT), meta={"CLASSES": CocoDataset.CLASSES})
    out = convert_checkpoint(tmp_path / CHECKPOINT, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    swin = config["backbone_config"]
    assert (swin["embed_dim"], swin["depths"], swin["num_heads"], swin["window_size"]) == (96, [2, 2, 18, 2],
                                                                                          [3, 6, 12, 24], 7)
    assert {k: config[k] for k in ("hidden_dim", "feature_size", "mask_feature_size", "num_queries", "encoder_layers",
                                   "decoder_layers", "dim_feedforward", "encoder_feedforward_dim",
                                   "num_attention_heads")} == {
        "hidden_dim": 256, "feature_size": 256, "mask_feature_size": 256, "num_queries": 100, "encoder_layers": 6,
        "decoder_layers": 10, "dim_feedforward": 2048, "encoder_feedforward_dim": 1024, "num_attention_heads": 8}
    assert [config["id2label"][str(i)] for i in range(80)] == list(CocoDataset.CLASSES)
    x = preprocess(images()[1], Mask2FormerConfig(scale=(320, 256)))[0].double()  # small input; last stage 8 > 7
    ours = load_model(out).double().eval()
    net = net.double().eval()
    with torch.no_grad():
        cls, masks = net.panoptic_head(net.extract_feat(x), [{}])
        got = ours(pixel_values=x)
    torch.testing.assert_close(got.class_queries_logits, cls[-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(got.masks_queries_logits, masks[-1], rtol=0, atol=1e-6)
