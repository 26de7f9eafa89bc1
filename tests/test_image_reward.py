"""ImageReward-v1.0 (docs/protocols.md §5) on tiny random weights, against
(a) a from-the-code minimal forward written here (BLIP ViT + BERT with cross-attention + MLP, plain torch ops),
    a hand-written BERT WordPiece tokenizer and PIL preprocessing -- always runs;
(b) the official `image-reward==1.5` model code under transformers 4.46 in a subprocess -- needs PyPI once
    (wheels cached under $SANA_EVAL_CACHE/test-deps), so it skips offline / in CI.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metrics import image_reward as IR
from metrics.base import MetricError
from metrics.image_reward_model import (
    POSITION_IDS,
    ImageRewardModel,
    ImageRewardWeightsError,
    RewardArch,
    convert_state_dict,
    official_shapes,
)
from metrics.images import ImageSet
from sana_eval.smoke.tiny import random_image_reward_weights

VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!", "-", "'", "a", "an", "the", "of",
         "in", "on", "by", "photo", "cat", "##s", "dog", "cafe", "naive", "red", "blue", "astronaut", "riding",
         "horse", "mars", "art", "##work", "highly", "detail", "##ed", "paint", "##ing", "concept", "city", "night",
         "neon", "light", "style", "trend", "on", "art", "##station", "4", "##k", "oil", "portrait", "woman"]
VOCAB = list(dict.fromkeys(VOCAB))  # BERT vocab lines are unique
TINY = RewardArch(vision_width=48, vision_depth=2, vision_heads=4, vocab_size=len(VOCAB) + 2, text_width=32,
                  text_depth=2, text_heads=4, text_intermediate=64, max_positions=64, proj_dim=8)
LONG = ("a highly detailed oil painting of an astronaut riding a horse on mars, neon city night light, "
        "concept artwork, trending on artstation, 4k, portrait of a woman by the cafe, red and blue style")
PROMPTS = {"000001-0001": "A photo of CATS, on MARS!",
           "000002-0002": "Naïve café — a dog's portrait in zebra-style", "000003-0003": LONG}
REWARD_MEAN, REWARD_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------
# Fixtures: a vocab, random official-format weights, images in the benchmark layout.

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ir")
    (root / "bert-base-uncased").mkdir()
    (root / "bert-base-uncased" / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    med = {"architectures": ["BertModel"], "hidden_size": TINY.text_width, "num_hidden_layers": TINY.text_depth,
           "num_attention_heads": TINY.text_heads, "intermediate_size": TINY.text_intermediate,
           "vocab_size": TINY.vocab_size, "max_position_embeddings": TINY.max_positions, "layer_norm_eps": 1e-12,
           "hidden_act": "gelu", "model_type": "bert", "pad_token_id": 0, "type_vocab_size": 2,
           "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "encoder_width": 768,
           "add_cross_attention": True}
    (root / "med_config.json").write_text(json.dumps(med))
    sd = random_image_reward_weights(TINY, 0)
    torch.save(sd, root / "ImageReward.pt")
    img_dir = root / "images"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    sizes = [(64, 48), (40, 90), (224, 224), (300, 200), (90, 40), (33, 57)]
    for n, (pid, _) in enumerate(PROMPTS.items()):
        for j in range(2):
            w, h = sizes[2 * n + j]
            px = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if (n, j) == (1, 0):  # grayscale, and RGBA with partial alpha: the official order converts RGB last
                Image.fromarray(px[..., 0]).save(img_dir / f"{pid}_{j}.png")
            elif (n, j) == (1, 1):
                Image.fromarray(np.dstack([px, rng.integers(0, 256, (h, w), dtype=np.uint8)])).save(
                    img_dir / f"{pid}_{j}.png")
            else:
                Image.fromarray(px).save(img_dir / f"{pid}_{j}.jpg", quality=90)
    return {"root": root, "vocab": root / "bert-base-uncased" / "vocab.txt", "med": root / "med_config.json",
            "weights": root / "ImageReward.pt", "sd": sd, "images": img_dir}


class _Item:
    def __init__(self, id, prompt, n_images):
        self.id, self.prompt, self.n_images = id, prompt, n_images


def _items(n=2):
    return [_Item(k, v, n) for k, v in PROMPTS.items()]


def _config(files, tmp_path, **kw):
    base = dict(weights_path=str(files["weights"]), med_config_path=str(files["med"]),
                tokenizer_path=str(files["vocab"].parent), device="cpu", num_workers=0, batch_size=4,
                cache_dir=str(tmp_path / "cache"), download=False)
    return IR.ImageRewardConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# Independent references: BERT WordPiece (BERT paper / google-research tokenization), PIL preprocessing,
# and the forward of ImageReward.py + BLIP vit.py + med.py written with plain torch ops.

def _is_punct(ch: str) -> bool:
    o = ord(ch)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 or \
        unicodedata.category(ch).startswith("P")


def ref_tokens(text: str, vocab: list[str], max_len: int = 35) -> tuple[list[int], list[int]]:
    ids = {t: i for i, t in enumerate(vocab)}
    control = [unicodedata.category(ch).startswith("C") and ch not in "\t\n\r" for ch in text]
    text = "".join(" " if ch.isspace() else ch for ch, c in zip(text, control) if ord(ch) not in (0, 0xFFFD) and not c)
    out = []
    for word in text.lower().split():
        word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        pieces, cur = [], ""
        for ch in word:
            if _is_punct(ch):
                pieces += [cur, ch] if cur else [ch]
                cur = ""
            else:
                cur += ch
        pieces += [cur] if cur else []
        for piece in pieces:  # greedy longest-match-first WordPiece
            sub, start = [], 0
            while start < len(piece):
                end = len(piece)
                while end > start and (("##" if start else "") + piece[start:end]) not in ids:
                    end -= 1
                if end == start:
                    sub = ["[UNK]"]
                    break
                sub.append(("##" if start else "") + piece[start:end])
                start = end
            out += [ids[s] for s in sub]
    seq = [ids["[CLS]"]] + out[:max_len - 2] + [ids["[SEP]"]]
    return seq + [0] * (max_len - len(seq)), [1] * len(seq) + [0] * (max_len - len(seq))


def ref_pixels(path: Path, size: int = 224) -> torch.Tensor:
    with Image.open(path) as img:
        w, h = img.size
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        img = img.crop((left, top, left + size, top + size)).convert("RGB")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)


def _lin(x, sd, name):
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])


def _attend(q, k, v, heads, bias=None):
    B, Lq, D = q.shape
    q, k, v = (t.reshape(B, -1, heads, D // heads).transpose(1, 2) for t in (q, k, v))
    s = q @ k.transpose(-1, -2) / math.sqrt(D // heads)
    if bias is not None:
        s = s + bias
    return (s.softmax(-1) @ v).transpose(1, 2).reshape(B, Lq, D)


def ref_reward(sd, a: RewardArch, pixels, ids, mask):
    v = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=a.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[v + "cls_token"].expand(len(x), -1, -1), x], 1) + sd[v + "pos_embed"]
    for i in range(a.vision_depth):
        b = f"{v}blocks.{i}."
        q, k, vv = _lin(_ln(x, sd, b + "norm1", 1e-6), sd, b + "attn.qkv").chunk(3, -1)
        x = x + _lin(_attend(q, k, vv, a.vision_heads), sd, b + "attn.proj")
        x = x + _lin(F.gelu(_lin(_ln(x, sd, b + "norm2", 1e-6), sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
    img = _ln(x, sd, v + "norm", 1e-6)
    t = "blip.text_encoder."
    h = sd[t + "embeddings.word_embeddings.weight"][ids]
    h = h + sd[t + "embeddings.position_embeddings.weight"][:ids.shape[1]]
    h = _ln(h, sd, t + "embeddings.LayerNorm", 1e-12)
    bias = (1.0 - mask[:, None, None, :].float()) * -10000.0  # med.py get_extended_attention_mask
    for i in range(a.text_depth):
        b = f"{t}encoder.layer.{i}."
        s = _attend(*(_lin(h, sd, f"{b}attention.self.{n}") for n in ("query", "key", "value")), a.text_heads, bias)
        h = _ln(_lin(s, sd, b + "attention.output.dense") + h, sd, b + "attention.output.LayerNorm", 1e-12)
        c = _attend(_lin(h, sd, b + "crossattention.self.query"), _lin(img, sd, b + "crossattention.self.key"),
                    _lin(img, sd, b + "crossattention.self.value"), a.text_heads)
        h = _ln(_lin(c, sd, b + "crossattention.output.dense") + h, sd, b + "crossattention.output.LayerNorm", 1e-12)
        f = _lin(F.gelu(_lin(h, sd, b + "intermediate.dense")), sd, b + "output.dense")
        h = _ln(f + h, sd, b + "output.LayerNorm", 1e-12)
    y = h[:, 0]
    for idx in (0, 2, 4, 6, 7):  # Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear
        y = _lin(y, sd, f"mlp.layers.{idx}")
    return ((y - REWARD_MEAN) / REWARD_STD).squeeze(-1)


def _reference_rewards(files, images: ImageSet) -> dict[str, float]:
    sd = {k: v.float() for k, v in files["sd"].items()}
    pix = torch.stack([ref_pixels(i.path) for i in images.items])
    toks = [ref_tokens(i.prompt, VOCAB) for i in images.items]
    ids, mask = torch.tensor([t[0] for t in toks]), torch.tensor([t[1] for t in toks])
    with torch.no_grad():
        r = ref_reward(sd, TINY, pix, ids, mask)
    return {i.id: float(v) for i, v in zip(images.items, r)}


# ----------------------------------------------------------------------------------------------
# Tests that always run.

def test_key_mapping_on_real_architecture():
    arch = RewardArch()
    shapes = official_shapes(arch)
    # 24 ViT-L blocks x 12 + 6, 12 BERT layers x 26 (self + cross attention) + 5, 2 projections, 5 Linear.
    assert len(shapes) == 24 * 12 + 6 + 12 * 26 + 5 + 4 + 10 == 625
    assert shapes["blip.visual_encoder.pos_embed"] == (1, 197, 1024)
    assert shapes["blip.text_encoder.encoder.layer.11.crossattention.self.key.weight"] == (768, 1024)
    assert shapes["blip.text_encoder.embeddings.word_embeddings.weight"] == (30524, 768)
    assert shapes["mlp.layers.7.weight"] == (1, 16) and shapes["mlp.layers.0.weight"] == (1024, 768)
    with torch.device("meta"):
        model = ImageRewardModel(arch)
        sd = {k: torch.empty(s) for k, s in shapes.items() if k != POSITION_IDS}
    ours = convert_state_dict(sd, arch, "meta")
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == theirs  # one-to-one, every shape equal
    assert sum(math.prod(s) for s in theirs.values()) > 4.4e8  # ViT-L + BERT-base with cross-attention


def test_tokenizer_matches_wordpiece_reference(files):
    tok = IR.blip_tokenizer(files["vocab"])
    texts = [*PROMPTS.values(), "", "  Tabs\tand\nnewlines ", "DOG-DOG!!", "unknownword cats"]
    enc = tok(texts, padding="max_length", truncation=True, max_length=IR.MAX_LENGTH)
    for text, ids, mask in zip(texts, enc.input_ids, enc.attention_mask):
        assert (ids, mask) == ref_tokens(text, VOCAB), text
    assert sum(ref_tokens(LONG, VOCAB)[1]) == 35  # the long prompt is cut, [SEP] kept last
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(VOCAB), len(VOCAB) + 1]


def test_rewards_match_reference_forward_and_resume(files, tmp_path, monkeypatch):
    images = IR.benchmark_image_set(files["images"], _items())
    metric = IR.ImageRewardScore(_config(files, tmp_path), TINY)
    res = metric.score(images, by_prompt=True)
    ref = _reference_rewards(files, images)
    got = {k: v["image_reward"] for k, v in res.per_item.items()}
    assert got.keys() == ref.keys()
    np.testing.assert_allclose([got[k] for k in ref], list(ref.values()), rtol=0, atol=2e-5)
    assert np.std(list(ref.values())) > 0.05  # the rewards differ, so a mix-up would show
    # Benchmark number: mean of per-prompt means; SANA's is the mean over images.
    per_prompt = {p: np.mean([ref[f"{p}_{j}"] for j in range(2)]) for p in PROMPTS}
    assert res.aggregate["image_reward"] == pytest.approx(np.mean(list(per_prompt.values())), abs=2e-5)
    assert res.aggregate["image_reward_over_images"] == pytest.approx(np.mean(list(ref.values())), abs=2e-5)
    for p, m in per_prompt.items():
        assert res.aggregate[f"image_reward/{p}"] == pytest.approx(m, abs=2e-5)
    proto = res.protocol
    assert proto["text"]["max_length"] == 35 and proto["dtype"] == "fp32" and len(proto["weights_sha256"]) == 64
    assert proto["weights_sha256"] == hashlib.sha256(files["weights"].read_bytes()).hexdigest()
    assert proto["aggregate"] == "mean of per-prompt means"
    # A second run reads every reward back from the cache: the network is never called.
    again = IR.ImageRewardScore(_config(files, tmp_path), TINY)
    monkeypatch.setattr(again, "rewards", lambda *a: pytest.fail("recomputed a cached reward"))
    assert again.score(images, by_prompt=True).per_item == res.per_item


def test_unequal_groups_mean_of_means(files, tmp_path):
    images = IR.benchmark_image_set(files["images"], _items())
    uneven = ImageSet("u", "u", images.items[:3])  # prompt 1 has two images, prompt 2 one
    res = IR.ImageRewardScore(_config(files, tmp_path, cache_dir=None), TINY).score(uneven, by_prompt=True)
    r = [res.per_item[i.id]["image_reward"] for i in uneven.items]
    assert res.aggregate["image_reward"] == pytest.approx(((r[0] + r[1]) / 2 + r[2]) / 2, abs=1e-12)
    assert res.aggregate["image_reward_over_images"] == pytest.approx(sum(r) / 3, abs=1e-12)
    flat = IR.ImageRewardScore(_config(files, tmp_path, cache_dir=None), TINY).score(uneven)
    assert flat.aggregate["image_reward"] == pytest.approx(sum(r) / 3, abs=1e-12)


def test_errors_name_the_file_or_key(files, tmp_path, monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(IR, "OFFICIAL_DOWNLOAD_ROOT", tmp_path / "none")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ImageRewardWeightsError, match=r"ImageReward\.pt \(HF THUDM/ImageReward\).*HF_HUB_OFFLINE"):
        IR.ImageRewardScore(_config(files, tmp_path, weights_path=None), TINY)
    with pytest.raises(ImageRewardWeightsError, match=r"vocab\.txt not in the HF cache.*hf download"):
        IR.ImageRewardScore(_config(files, tmp_path, tokenizer_path=None), TINY)
    with pytest.raises(ImageRewardWeightsError, match="not found at"):
        IR.ImageRewardScore(_config(files, tmp_path, weights_path=str(tmp_path / "x.pt")), TINY)
    sd = dict(files["sd"])
    bad = {k: v for k, v in sd.items() if k != "mlp.layers.6.bias"}
    with pytest.raises(ImageRewardWeightsError, match=r"missing key 'mlp\.layers\.6\.bias'"):
        convert_state_dict(bad, TINY, "f.pt")
    with pytest.raises(ImageRewardWeightsError, match=r"unexpected key 'module\.x'"):
        convert_state_dict({**sd, "module.x": torch.zeros(1)}, TINY, "f.pt")
    with pytest.raises(ImageRewardWeightsError, match=r"'blip\.visual_encoder\.pos_embed' has shape"):
        convert_state_dict({**sd, "blip.visual_encoder.pos_embed": torch.zeros(1, 5, 48)}, TINY, "f.pt")
    with pytest.raises(ImageRewardWeightsError, match="hidden_size=32, ImageReward-v1.0 has 768"):
        IR.check_med_config(files["med"], RewardArch())
    med = {k: v for k, v in json.loads(files["med"].read_text()).items() if k != "vocab_size"}
    (tmp_path / "med.json").write_text(json.dumps(med))
    with pytest.raises(ImageRewardWeightsError, match="word embeddings have 99"):
        IR.ImageRewardScore(_config(files, tmp_path, med_config_path=str(tmp_path / "med.json")),
                            RewardArch(**{**TINY.__dict__, "vocab_size": 99}))
    with pytest.raises(MetricError, match=r"1 images missing, first 000001-0001_2"):
        IR.benchmark_image_set(files["images"], _items(3)[:1])


# ----------------------------------------------------------------------------------------------
# Against the official code (image-reward 1.5 under transformers 4.46, its supported range).

OFFICIAL_WHEEL = ("image-reward==1.5", "image_reward-1.5-py3-none-any.whl",
                  "b4917a680c3caa68a1ce3847cebab3ae6d5b4c409d7f8804f537b9d42662cf12")
OFFICIAL_ENV = ("transformers==4.46.3", "tokenizers==0.20.3", "huggingface-hub==0.26.5")

# Runs in a subprocess with the official package and transformers 4.46 first on sys.path. `fairscale` (gradient
# checkpointing only) is absent, and the `ImageReward` / `ImageReward.models` package inits (which import openai
# `clip` and diffusers for other scores) are skipped; every module used below is the official file.
OFFICIAL_SCRIPT = r'''
import json, sys, types, importlib, torch
from torch import nn
from torch.overrides import TorchFunctionMode
src, job = sys.argv[1], json.load(open(sys.argv[2]))
def unused(*a, **k): raise RuntimeError("fairscale is not used without gradient checkpointing")
for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint", "fairscale.nn.checkpoint.checkpoint_activations"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["fairscale.nn.checkpoint.checkpoint_activations"].checkpoint_wrapper = unused
for name, sub in (("ImageReward", ""), ("ImageReward.models", "/models")):
    sys.modules[name] = types.ModuleType(name); sys.modules[name].__path__ = [src + "/ImageReward" + sub]
RM = importlib.import_module("ImageReward.ImageReward")
BP = importlib.import_module("ImageReward.models.BLIP.blip_pretrain")
blip = importlib.import_module("ImageReward.models.BLIP.blip")
vit = importlib.import_module("ImageReward.models.BLIP.vit")
med = importlib.import_module("ImageReward.models.BLIP.med")
import transformers
out = {"transformers": transformers.__version__}

class CpuLinspace(TorchFunctionMode):  # vit.py calls .item() on a linspace, impossible on the meta device
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)
with torch.device("meta"), CpuLinspace():
    real = RM.ImageReward(med_config=job["real_med"])  # the released architecture, tokenizer from ./bert-base-uncased
out["real_shapes"] = {k: list(v.shape) for k, v in real.state_dict().items()}
out["mean"], out["std"] = real.mean, real.std

# Tiny: the official classes with small sizes, assembled as BLIP_Pretrain / ImageReward assemble them.
a = job["arch"]
torch.manual_seed(0)
bp = BP.BLIP_Pretrain.__new__(BP.BLIP_Pretrain); nn.Module.__init__(bp)
bp.visual_encoder = vit.VisionTransformer(img_size=a["image_size"], patch_size=a["patch_size"],
                                          embed_dim=a["vision_width"], depth=a["vision_depth"],
                                          num_heads=a["vision_heads"], drop_path_rate=0.1)
bp.tokenizer = blip.init_tokenizer()
cfg = med.BertConfig.from_json_file(job["tiny_med"]); cfg.encoder_width = a["vision_width"]
bp.text_encoder = med.BertModel(config=cfg, add_pooling_layer=False)
bp.vision_proj, bp.text_proj = nn.Linear(a["vision_width"], a["proj_dim"]), nn.Linear(a["text_width"], a["proj_dim"])
ir = RM.ImageReward.__new__(RM.ImageReward); nn.Module.__init__(ir)
ir.device, ir.preprocess, ir.mean, ir.std = "cpu", real.preprocess, real.mean, real.std
ir.blip, ir.mlp = bp, RM.MLP(a["text_width"])
with torch.no_grad():
    for name, p in ir.named_parameters():  # away from the init (zero biases, unit norms) so every tensor matters
        if p.ndim >= 2 and "embed" not in name and "token" not in name:
            p.normal_(0, p[0].numel() ** -0.5)
        else:
            p.add_(0.2 * torch.randn_like(p))
ir.eval()
torch.save(ir.state_dict(), job["weights"])
out["tokens"] = bp.tokenizer(job["texts"], padding="max_length", truncation=True, max_length=35).input_ids
out["rewards"] = {}
with torch.no_grad():
    for prompt, paths in job["groups"]:
        _, rewards = ir.inference_rank(prompt, paths)
        out["rewards"].update(zip(paths, rewards))
    out["single"] = ir.score(job["groups"][0][0], job["groups"][0][1][0])
json.dump(out, open(job["out"], "w"))
'''


def _deps_dir() -> Path:
    return Path(os.environ.get("SANA_EVAL_CACHE") or Path.home() / ".cache" / "sana-eval") / "test-deps"


@pytest.fixture(scope="module")
def official_env():
    """(extracted image-reward wheel, folder with transformers 4.46); fetched from PyPI once, else skip."""
    deps = _deps_dir()
    wheel, env = deps / OFFICIAL_WHEEL[1], deps / "imagereward-env"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--retries", "0", "--timeout", "10"]
    try:
        if not wheel.is_file():
            subprocess.run([*pip, "download", "--no-deps", "-d", str(deps), OFFICIAL_WHEEL[0]], check=True,
                           timeout=120, capture_output=True)
        if not (env / "transformers").is_dir():
            subprocess.run([*pip, "install", "--no-deps", "--target", str(env), *OFFICIAL_ENV], check=True,
                           timeout=300, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"official ImageReward code not available offline ({OFFICIAL_WHEEL[0]}, {', '.join(OFFICIAL_ENV)} "
                    f"from PyPI into {deps}): {type(e).__name__}")
    if hashlib.sha256(wheel.read_bytes()).hexdigest() != OFFICIAL_WHEEL[2]:
        pytest.fail(f"{wheel}: sha256 differs from the pinned image-reward 1.5 wheel")
    src = deps / "image_reward-1.5"
    if not (src / "ImageReward" / "ImageReward.py").is_file():
        with zipfile.ZipFile(wheel) as z:
            z.extractall(src)
    return src, env


def test_matches_official_imagereward(files, official_env, tmp_path):
    src, env = official_env
    images = IR.benchmark_image_set(files["images"], _items())
    work = tmp_path / "official"
    (work / "bert-base-uncased").mkdir(parents=True)  # blip.init_tokenizer reads 'bert-base-uncased' from here
    (work / "bert-base-uncased" / "vocab.txt").write_text(files["vocab"].read_text())
    real_med = work / "real_med.json"  # the released med_config.json values (encoder_width is overridden)
    real_med.write_text(json.dumps({"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                    "intermediate_size": 3072, "vocab_size": 30524, "max_position_embeddings": 512,
                                    "layer_norm_eps": 1e-12, "hidden_act": "gelu", "add_cross_attention": True,
                                    "encoder_width": 768, "pad_token_id": 0, "model_type": "bert"}))
    groups = [(p, [str(i.path) for i in images.items if i.category == pid]) for pid, p in PROMPTS.items()]
    job = {"arch": TINY.__dict__, "tiny_med": str(files["med"]), "real_med": str(real_med), "groups": groups,
           "texts": [*PROMPTS.values(), "DOG-DOG!!"], "weights": str(work / "ImageReward.pt"),
           "out": str(work / "out.json")}
    (work / "job.json").write_text(json.dumps(job))
    (work / "official.py").write_text(OFFICIAL_SCRIPT)
    run_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(env), str(src)]), "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "official.py", str(src), "job.json"], cwd=work, env=run_env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((work / "out.json").read_text())
    assert out["transformers"] == "4.46.3"

    # Architecture: the released model's full key list and shapes, and the normalisation constants.
    assert {k: tuple(v) for k, v in out["real_shapes"].items()} == official_shapes(RewardArch())
    assert (out["mean"], out["std"]) == (IR.REWARD_MEAN, IR.REWARD_STD)
    # Tokenizer: transformers 4.46's Python BertTokenizer + BLIP tokens vs ours (transformers 5 tokenizers).
    tok = IR.blip_tokenizer(files["vocab"])
    assert tok(job["texts"], padding="max_length", truncation=True, max_length=35).input_ids == out["tokens"]
    # Rewards: the official model's weights through our loader, preprocessing, batching and forward.
    metric = IR.ImageRewardScore(_config(files, tmp_path, weights_path=job["weights"]), TINY)
    res = metric.score(images, by_prompt=True)
    got = [res.per_item[i.id]["image_reward"] for i in images.items]
    want = [out["rewards"][str(i.path)] for i in images.items]
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    assert np.std(want) > 0.05
    assert got[0] == pytest.approx(out["single"], abs=2e-5)
