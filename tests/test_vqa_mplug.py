"""The official DPG-Bench scorer backend (docs/protocols.md §4.2) on a tiny random mPLUG in ModelScope's on-disk
format.

The model folder is built by ModelScope's own MPlug class; answers are checked against ModelScope's pipeline and
against the model's own beam search fed by hand-made inputs. Needs `modelscope` (not in the project venv).
"""
import hashlib
import json
from importlib import metadata

import numpy as np
import pytest

pytest.importorskip("modelscope", reason="modelscope is not installed: the official DPG-Bench mPLUG scorer needs it "
                                         "(its own environment: `make test-mplug` builds it and runs this test)")

import torch
import yaml
from PIL import Image

from metrics.base import MetricError
from metrics.vqa.mplug import MPLUGVQA

IMAGE_RES = 32
BEAM, MIN_LEN, MAX_LEN = 3, 1, 6
# The beam search hard-codes [CLS]=101 as start and [SEP]=102 as end, so the vocab keeps BERT's first 104 slots.
VOCAB = (["[PAD]"] + [f"w{i}" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + ["yes", "no", "a", "is", "there", "red", "cube", "cat", "the", "what", "color", "dog", "?"])
QUESTIONS = ["Is there a red cube?", "what color is the dog?"]
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def write_tiny_mplug(folder, seed=0):
    """configuration.json, config.yaml, config_bert.json, vocab.txt, pytorch_model.bin: what ModelScope reads."""
    from modelscope.models.multi_modal.mplug import MPlug
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    bert = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, hidden_act="gelu",
                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=64,
                type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
                vocab_size=len(VOCAB), encoder_width=32, num_hidden_layers=1, text_encoder_layers=1, fusion_layers=1,
                text_decode_layers=1)
    (folder / "config_bert.json").write_text(json.dumps(bert))
    # ViT-B-16 naming: MPlug sizes its position table for 16-px patches and a 768-wide ViT.
    cfg = dict(task="visual-question-answering", bert_config="config_bert.json", image_res=IMAGE_RES,
               vision_width=768, distill=False, clip_name="ViT-B-16", clip_embed_dim=32,
               clip_image_resolution=IMAGE_RES, clip_vision_layers=1, clip_vision_width=768, clip_vision_patch_size=16,
               clip_context_length=8, clip_vocab_size=50, clip_transformer_width=32, clip_transformer_heads=2,
               clip_transformer_layers=1, beam_size=BEAM, min_length=MIN_LEN, max_length=MAX_LEN)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "visual-question-answering", "model": {"type": "mplug"},
        "pipeline": {"type": "visual-question-answering"}}))
    torch.manual_seed(seed)
    net = MPlug.from_pretrained(str(folder), load_checkpoint=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the default 0.02-std init gives the same answer for every input; fan-in scaling does not
        for name, p in net.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * p.shape[-1] ** -0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    torch.save(net.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mplug(tmp_path_factory.mktemp("mplug") / "tiny_mplug")


@pytest.fixture(scope="module")
def vqa(tiny):
    return MPLUGVQA(model=str(tiny), device="cpu")


def images():
    rng = np.random.default_rng(0)
    rgb = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(48, 40), (32, 32), (20, 64)]]
    return rgb + [Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8))]  # grayscale: converted to RGB


def own_generate(folder):
    """The model's own beam search on inputs made here: bicubic resize + CLIP normalisation, lower-cased question
    padded to 25 BERT tokens (MPlugPreprocessor's default), decoded without special tokens."""
    from modelscope.models.multi_modal.mplug import MPlug
    from torchvision import transforms
    from transformers import BertTokenizer
    net = MPlug.from_pretrained(str(folder)).eval()
    tok = BertTokenizer.from_pretrained(str(folder))
    prep = transforms.Compose([transforms.Resize((IMAGE_RES, IMAGE_RES), interpolation=Image.BICUBIC),
                               transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])

    @torch.no_grad()
    def answer(image, question):
        q = tok(question.lower(), padding="max_length", truncation=True, max_length=25, return_tensors="pt")
        ids, _ = net(prep(image.convert("RGB"))[None], q, train=False)
        return tok.decode(ids[0][0], skip_special_tokens=True)
    return answer


def test_answers_match_modelscope_pipeline_and_own_beam_search(tiny, vqa):
    from modelscope.pipelines import pipeline
    from modelscope.utils.constant import Tasks
    ref = pipeline(Tasks.visual_question_answering, model=str(tiny), device="cpu")
    own = own_generate(tiny)
    got = {}
    for i, image in enumerate(images()):
        for q in QUESTIONS:
            got[i, q] = vqa.answer(image, q)
            assert isinstance(got[i, q], str)
            assert got[i, q] == ref({"image": image, "question": q})["text"] == own(image, q), (i, q)
    # the inputs matter, so a wrong image or question would have been caught
    assert len({got[i, QUESTIONS[0]] for i in range(len(images()))}) >= 3, got
    assert any(got[i, QUESTIONS[0]] != got[i, QUESTIONS[1]] for i in range(len(images()))), got


def test_protocol_records_model_weights_decoding_and_versions(tiny, vqa):
    p = vqa.protocol
    assert p["backend"] == "modelscope-mplug" and p["official"] is True
    assert p["model"] == str(tiny)
    assert p["versions"]["modelscope"] == metadata.version("modelscope")
    assert p["versions"]["torch"] == metadata.version("torch")
    assert p["weights"]["sha256"] == hashlib.sha256((tiny / "pytorch_model.bin").read_bytes()).hexdigest()
    assert p["decoding"] == {"beam_size": BEAM, "min_length": MIN_LEN, "max_length": MAX_LEN, "image_res": IMAGE_RES,
                             "question_max_tokens": 25, "dtype": "float32"}
    json.dumps(p)  # goes into every DPG-Bench score file


def test_missing_inference_weight_is_an_error(tiny, tmp_path, capsys):
    folder = tmp_path / "holed"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    gone = "text_decoder.cls.predictions.transform.dense.weight"
    del state[gone]
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(MetricError, match=r"pytorch_model\.bin: 1 inference parameters missing .*" + gone):
        MPLUGVQA(model=str(folder), device="cpu")
    assert gone in capsys.readouterr().out  # ModelScope's own non-strict load printed the same key as missing


def test_unused_clip_text_tower_may_be_absent(tiny, tmp_path):
    folder = tmp_path / "no_text_tower"
    folder.mkdir()
    for f in tiny.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("visual_encoder.transformer.")}
    torch.save(state, folder / "pytorch_model.bin")
    image = images()[0]
    assert MPLUGVQA(model=str(folder), device="cpu").answer(image, QUESTIONS[0]) == \
        MPLUGVQA(model=str(tiny), device="cpu").answer(image, QUESTIONS[0])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MetricError, match="does not exist"):
        MPLUGVQA(model=str(tmp_path / "nope"), device="cpu")
