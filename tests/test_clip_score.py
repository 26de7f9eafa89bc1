"""CLIP score (docs/protocols.md §2.1) against a direct open_clip computation on a tiny random CLIP."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from _fid_weights import write_images
from metrics.base import MetricError
from metrics.clip_score import CLIPScore, CLIPScoreConfig, find_clip_weights
from metrics.images import ImageItem, ImageSet

TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
LONG = " ".join(f"word{i} and a very detailed scene" for i in range(40))  # far over 77 tokens


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    cfg = root / "tiny-clip-test.json"
    cfg.write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test")
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return "tiny-clip-test", weights


def _items(tmp_path, prompts):
    paths = write_images(tmp_path / "img", len(prompts), (40, 30), seed=0, ext=".jpg")
    return ImageSet("toy", "t", tuple(ImageItem(p.stem, p, prompt=t) for p, t in zip(paths, prompts)))


def test_clip_score_equals_direct_open_clip(tiny_clip, tmp_path):
    name, weights = tiny_clip
    prompts = ["a red cube", "a photo of a dog on grass", LONG]
    images = _items(tmp_path, prompts)
    metric = CLIPScore(CLIPScoreConfig(model=name, pretrained=None, weights_path=str(weights), precision="fp32",
                                       device="cpu", num_workers=0, batch_size=2, cache_dir=str(tmp_path / "c")))
    res = metric.score(images)

    # Reference: open_clip's own loader, transform and tokenizer; mean of 100 * cos, no clamp.
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights))
    model.eval()
    tok = open_clip.get_tokenizer(name)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(Image.open(i.path)) for i in images.items]))
        txt = model.encode_text(tok(prompts))
    expected = 100 * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)
    got = torch.tensor([res.per_item[i.id]["clip_score"] for i in images.items])
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=1e-4)
    assert res.aggregate["clip_score"] == pytest.approx(float(expected.mean()), abs=1e-4)
    assert res.protocol["precision"] == "fp32" and len(res.protocol["weights_sha256"]) == 64
    # A resumed run reads image features back from the cache and gives the same numbers.
    assert metric.score(images).per_item == res.per_item


def test_tokenizer_truncates_to_77_keeping_eot(tiny_clip):
    tok = open_clip.get_tokenizer(tiny_clip[0])
    ids = tok([LONG])[0]
    body = tok.encode(LONG)
    assert len(body) > 100 and ids.shape == (77,)
    assert ids[0] == tok.sot_token_id and ids[-1] == tok.eot_token_id
    assert ids[1:76].tolist() == body[:75]
    # open_clip pools text at argmax(ids), i.e. at that kept EOT token.
    assert int(ids.argmax()) == 76


def test_missing_prompt_and_missing_weights(tiny_clip, tmp_path):
    name, weights = tiny_clip
    metric = CLIPScore(CLIPScoreConfig(model=name, pretrained=None, weights_path=str(weights), device="cpu",
                                       num_workers=0))
    images = _items(tmp_path, ["x"])
    no_prompt = ImageSet("toy", "t", (ImageItem("a", images.items[0].path),))
    with pytest.raises(MetricError, match="has no prompt"):
        metric.score(no_prompt)
    with pytest.raises(MetricError, match="not found"):
        CLIPScore(CLIPScoreConfig(model=name, weights_path=str(tmp_path / "nope.safetensors")))


def test_offline_error_names_source(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(MetricError) as e:
        find_clip_weights(CLIPScoreConfig())
    msg = str(e.value)
    assert "ViT-L-14/openai not found offline" in msg and "ViT-L-14.pt" in msg and "\n" not in msg
