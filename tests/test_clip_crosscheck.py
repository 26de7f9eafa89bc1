"""torchmetrics CLIP-score cross-check column (docs/protocols.md §2.2) against a hand computation of its definition
with transformers on a tiny random HF CLIP: per-batch padding sliced to 77 tokens, 100 * cos, clamp on the mean."""
from __future__ import annotations

import json
import string

import open_clip
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from _fid_weights import write_images
from metrics.base import MetricError
from metrics.clip_crosscheck import find_hf_clip, torchmetrics_clip_score
from metrics.clip_score import CLIPScore, CLIPScoreConfig
from metrics.images import ImageItem, ImageSet

OPEN_CLIP_TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
LONG = "a very detailed scene of the old harbour at dawn with boats and gulls and fog " * 2  # ~130 tokens
PROMPTS = ["a red cube", "the cat and a dog", LONG]


def _write_hf_clip(folder, negate_image_projection: bool = False) -> None:
    """Tiny random CLIPModel + CLIPProcessor saved as an HF folder, shaped like openai/clip-vit-large-patch14:
    BOS/EOS are the two highest ids, pad = EOS, legacy eos_token_id 2 (argmax pooling)."""
    folder.mkdir(parents=True)
    chars = list(string.ascii_lowercase) + list(string.digits)
    tokens = chars + [c + "</w>" for c in chars] + ["th", "the</w>", "an", "and</w>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\na n\nan d</w>\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    if negate_image_projection:  # flips the sign of every cosine, so one of the two folders has a negative mean
        with torch.no_grad():
            model.visual_projection.weight.neg_()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("xclip")
    cfg = root / "tiny-clip-xcheck.json"
    cfg.write_text(json.dumps(OPEN_CLIP_TINY))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    weights = root / "open_clip.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("tiny-clip-xcheck").state_dict().items()},
              str(weights))
    _write_hf_clip(root / "hf")
    _write_hf_clip(root / "hf-neg", negate_image_projection=True)
    paths = write_images(root / "img", len(PROMPTS), (40, 30), seed=0, ext=".jpg")
    images = ImageSet("toy", "t", tuple(ImageItem(p.stem, p, prompt=t) for p, t in zip(paths, PROMPTS)))
    return root, weights, images


def _hand_scores(folder, images: ImageSet) -> torch.Tensor:
    """torchmetrics' definition written out: pad the whole batch, slice to 77, pool, 100 * cos per image."""
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    tok = processor.tokenizer
    pixels = processor(images=[T.PILToTensor()(Image.open(i.path).convert("RGB")) for i in images.items],
                       return_tensors="pt")["pixel_values"]
    enc = tok([i.prompt for i in images.items], padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] > 77  # the long prompt forces the slice
    ids, mask = enc["input_ids"][:, :77], enc["attention_mask"][:, :77]
    assert tok.eos_token_id not in ids[2].tolist()  # its EOS is gone ...
    assert ids[0].tolist().count(tok.eos_token_id) > 1  # ... while short prompts keep theirs (pad = EOS)
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)  # (N, 16)
        hidden = model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (N, 77, 32)
        # Legacy eos_token_id == 2: pool at argmax(input_ids), the EOS for short prompts, a content token for LONG.
        txt = model.text_projection(hidden[torch.arange(len(ids)), ids.argmax(-1)])  # (N, 16)
        kept = tok([LONG], truncation=True, max_length=77, return_tensors="pt")  # EOS kept: another feature
        txt_kept = model.text_projection(model.text_model(**kept).pooler_output)  # (1, 16)
    assert not torch.allclose(txt[2], txt_kept[0], atol=1e-3)
    return 100 * (F.normalize(img, dim=-1) * F.normalize(txt, dim=-1)).sum(-1)  # (N,)


def test_cross_check_column_equals_hand_torchmetrics(setup, tmp_path):
    root, weights, images = setup
    metric = CLIPScore(CLIPScoreConfig(model="tiny-clip-xcheck", pretrained=None, weights_path=str(weights),
                                       precision="fp32", device="cpu", num_workers=0, batch_size=2,
                                       cross_checks=("torchmetrics",), hf_clip=str(root / "hf")))
    res = metric.score(images)
    assert set(res.aggregate) == {"clip_score"}  # never mixed into the headline
    col = res.provenance["cross_checks"]["torchmetrics"]
    per = _hand_scores(root / "hf", images)
    assert col["n"] == 3 and col["n_prompts_over_77_tokens"] == 1 and col["ids_over_77_tokens"] == [
        images.items[2].id]
    assert col["mean_before_clamp"] == pytest.approx(float(per.mean()), abs=1e-4)
    assert col["clip_score"] == pytest.approx(max(float(per.mean()), 0.0), abs=1e-4)
    assert "sliced to 77" in col["protocol"]["text"] and len(col["protocol"]["weights_sha256"]) == 64


def test_clamp_is_on_the_mean(setup):
    root, _, images = setup
    cols = [torchmetrics_clip_score(images, root / name, device=torch.device("cpu"), batch_size=2, num_workers=0)
            for name in ("hf", "hf-neg")]
    means = [c["mean_before_clamp"] for c in cols]
    assert means[0] == pytest.approx(-means[1], abs=1e-4) and abs(means[0]) > 1e-3
    for c, folder in zip(cols, ("hf", "hf-neg")):
        per = _hand_scores(root / folder, images)
        assert c["mean_before_clamp"] == pytest.approx(float(per.mean()), abs=1e-4)
        assert c["clip_score"] == pytest.approx(max(float(per.mean()), 0.0), abs=1e-4)
    assert min(c["clip_score"] for c in cols) == 0.0


def test_missing_model_and_unknown_column(setup):
    root, weights, _ = setup
    with pytest.raises(MetricError, match="nobody/absent-clip.*huggingface-cli download openai/clip-vit-large"):
        find_hf_clip("nobody/absent-clip")
    base = dict(model="tiny-clip-xcheck", pretrained=None, weights_path=str(weights), device="cpu")
    with pytest.raises(MetricError, match="unknown CLIP cross-check 'clean-clip'"):
        CLIPScore(CLIPScoreConfig(**base, cross_checks=("clean-clip",)))
    (root / "partial").mkdir()
    (root / "partial" / "config.json").write_text("{}")
    with pytest.raises(MetricError, match="partial lacks .*model.safetensors"):
        CLIPScore(CLIPScoreConfig(**base, cross_checks=("torchmetrics",), hf_clip=str(root / "partial")))
