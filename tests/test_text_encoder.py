"""Gemma-2 text encoding (docs/model.md §4) on a tiny random Gemma-2 and a tokenizer trained here; diffusers'
SanaPipeline.encode_prompt is the independent reference for the whole procedure."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from model.text_encoder import (
    AUTO_GRAPH_TOKENS,
    CHI_DIFFUSERS,
    CHI_NVLABS,
    DEFAULT_MODEL,
    TEXT_ENCODER_PRESETS,
    TextEncoder,
    TextEncoderConfig,
    TextEncoderError,
    cfg_text,
    preprocess_diffusers,
    preprocess_nvlabs,
    select_tokens,
)
from sana_eval.smoke.tiny import GEMMA_HIDDEN as HIDDEN
from sana_eval.smoke.tiny import write_tiny_gemma

PROMPTS = ["a red cube on a blue sphere", "a cat sleeping", "a busy city street at dusk"]
MIXED_CASE = ["  A Red Cube on a Blue Sphere ", "A cat SLEEPING"]
LONG_PROMPT = "a small fluffy white cat " * 80  # 400 prompt tokens, more than the 299 kept
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (make gpu-test)")


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory) -> Path:
    path = write_tiny_gemma(tmp_path_factory.mktemp("tiny-gemma2"),
                            [*CHI_NVLABS, *CHI_DIFFUSERS, *PROMPTS, *MIXED_CASE,
                             *(p.lower() for p in MIXED_CASE), LONG_PROMPT])
    return path


@pytest.fixture(scope="module")
def encoder(gemma_dir) -> TextEncoder:
    return TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype="float32"))


def _diffusers_encode(enc: TextEncoder, prompts: list[str], chi: tuple[str, ...]):
    """diffusers' own procedure on our tokenizer and decoder: (emb, mask, neg_emb, neg_mask)."""
    from diffusers import SanaPipeline

    pipe = SanaPipeline(tokenizer=enc.tokenizer, text_encoder=enc.decoder, vae=None, transformer=None,
                        scheduler=None)
    with torch.no_grad():
        return pipe.encode_prompt(prompts, do_classifier_free_guidance=True, device=torch.device("cpu"),
                                  complex_human_instruction=list(chi) or None)


def _ids(enc: TextEncoder, text: str, special: bool = True) -> list[int]:
    return enc.tokenizer(text, add_special_tokens=special).input_ids


# ---------------------------------------------------------------------------------------------------- data

def test_chi_texts_differ_only_in_the_quotes_of_line_1():
    from diffusers import SanaPipeline

    diffusers_default = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    assert CHI_DIFFUSERS == tuple(diffusers_default)
    assert len(CHI_NVLABS) == len(CHI_DIFFUSERS) == 8
    assert CHI_NVLABS[1:] == CHI_DIFFUSERS[1:]
    differing = [(a, b) for a, b in zip(CHI_NVLABS[0], CHI_DIFFUSERS[0], strict=True) if a != b]
    assert differing == [('"', "'"), ('"', "'")]
    assert 'an "Enhanced prompt" that' in CHI_NVLABS[0]
    assert CHI_NVLABS[-1] == "User Prompt: "


def test_preprocessing_of_both_repos():
    assert preprocess_nvlabs("  A Cat on a Mat --ar 16:9") == "A Cat on a Mat"
    assert preprocess_nvlabs("a dog --hw 512:1024 --ar 1:2") == "a dog"
    assert preprocess_nvlabs("a dog --aspect_ratio 1:2") == "a dog"
    assert preprocess_nvlabs("a poster --artsy style") == "a poster"  # NVlabs splits on the bare substring
    assert preprocess_diffusers("  A Cat on a Mat --ar 16:9 ") == "a cat on a mat --ar 16:9"


def test_config_rejects_unknown_options():
    with pytest.raises(TextEncoderError, match="chi='pixart'"):
        TextEncoderConfig(chi="pixart")
    with pytest.raises(ValueError, match="cfg_mask"):
        TextEncoderConfig(cfg_mask="both")
    with pytest.raises(TextEncoderError, match="dtype"):
        TextEncoderConfig(dtype="int8")
    with pytest.raises(TextEncoderError, match="'nvlabs' or 'diffusers'"):
        cfg_text(torch.zeros(1, 3, 2), torch.ones(1, 3), torch.zeros(2, 3, 2), torch.ones(2, 3), "pixart")
    assert TEXT_ENCODER_PRESETS["nvlabs"] == TextEncoderConfig()
    assert TextEncoderConfig().model == DEFAULT_MODEL and TextEncoderConfig().torch_dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------------- procedure

def test_gemma_runs_eager_attention_with_its_softcapping(encoder):
    """Only eager attention applies Gemma-2's attention-logit softcapping; SDPA, some transformers releases'
    default, would drop it."""
    assert encoder.decoder.config._attn_implementation == "eager"
    assert encoder.decoder.config.attn_logit_softcapping == 50.0


def test_n_chi_and_max_length(encoder):
    chi = "\n".join(CHI_NVLABS)
    assert encoder.n_chi == len(_ids(encoder, chi)) == 1 + len(_ids(encoder, chi, special=False))
    ids, mask = encoder.tokenize(PROMPTS)
    assert ids.shape == mask.shape == (len(PROMPTS), encoder.n_chi + 300 - 2)


def test_cut_keeps_bos_then_starts_at_the_first_prompt_token(encoder):
    chi_ids = _ids(encoder, "\n".join(CHI_NVLABS))
    ids, mask = encoder.tokenize(PROMPTS)
    cut_ids, cut_mask = select_tokens(ids, 300), select_tokens(mask, 300)
    emb, emb_mask = encoder.encode(PROMPTS)
    assert emb.shape == (len(PROMPTS), 300, HIDDEN) and torch.equal(emb_mask, cut_mask)
    for row, prompt in enumerate(PROMPTS):
        full = _ids(encoder, "\n".join(CHI_NVLABS) + prompt)
        prompt_ids = _ids(encoder, " " + prompt, special=False)
        # Gemma-like merge: the CHI's trailing "▁" becomes part of the first prompt word.
        assert full == chi_ids[:-1] + prompt_ids
        k = len(prompt_ids)
        assert cut_ids[row, 0] == encoder.tokenizer.bos_token_id
        assert cut_ids[row, 1:1 + k].tolist() == prompt_ids
        assert (cut_ids[row, 1 + k:] == encoder.tokenizer.pad_token_id).all()
        assert cut_mask[row].tolist() == [1] * (1 + k) + [0] * (299 - k)
        # Each kept embedding is the unpadded forward's state at that position: BOS, then the prompt tokens.
        with torch.no_grad():
            hidden = encoder.decoder(input_ids=torch.tensor([full])).last_hidden_state[0]
        expected = torch.cat([hidden[:1], hidden[len(chi_ids) - 1:]])
        torch.testing.assert_close(emb[row, :1 + k], expected, rtol=1e-5, atol=1e-5)


def test_long_prompts_are_truncated_to_299_tokens(encoder):
    ids, mask = encoder.tokenize([LONG_PROMPT])
    prompt_ids = _ids(encoder, " " + LONG_PROMPT.strip(), special=False)
    assert len(prompt_ids) > 299
    cut_ids = select_tokens(ids, 300)
    assert cut_ids[0, 0] == encoder.tokenizer.bos_token_id
    assert cut_ids[0, 1:].tolist() == prompt_ids[:299]
    assert bool(select_tokens(mask, 300).all())


def test_without_chi_the_sequence_is_300_tokens(gemma_dir):
    enc = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype="float32", chi="none"))
    assert enc.n_chi == 0
    ids, mask = enc.tokenize(PROMPTS)
    assert ids.shape == (len(PROMPTS), 300)
    expected = enc.tokenizer(PROMPTS, padding="max_length", max_length=300, return_tensors="pt").input_ids
    assert torch.equal(ids, expected)


def test_use_chi_false_per_call_equals_an_encoder_without_chi(gemma_dir, encoder):
    plain = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype="float32", chi="none"))
    emb, mask = encoder.encode(PROMPTS, use_chi=False)
    ref_emb, ref_mask = plain.encode(PROMPTS)
    assert torch.equal(mask, ref_mask) and torch.equal(emb, ref_emb)
    assert not torch.equal(emb, encoder.encode(PROMPTS)[0])


def test_null_embedding_is_empty_string_without_chi_and_cached(encoder):
    null_emb, null_mask = encoder.null_embedding()
    assert null_emb.shape == (1, 300, HIDDEN)
    assert null_mask.tolist() == [[1] + [0] * 299]
    with torch.no_grad():
        bos_only = encoder.decoder(input_ids=torch.tensor([[encoder.tokenizer.bos_token_id]])).last_hidden_state
    torch.testing.assert_close(null_emb[:, :1], bos_only, rtol=1e-5, atol=1e-5)
    assert encoder.null_embedding()[0] is null_emb


def test_cfg_mask_conventions(gemma_dir):
    batch = len(PROMPTS)
    nv = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype="float32", cfg_mask="nvlabs"))
    hf = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype="float32", cfg_mask="diffusers"))
    nv_cfg, hf_cfg = nv.encode_cfg(PROMPTS), hf.encode_cfg(PROMPTS)
    emb, mask = nv.encode(PROMPTS)
    null_emb, null_mask = nv.null_embedding()
    for cfg in (nv_cfg, hf_cfg):
        assert cfg.emb.shape == (2 * batch, 300, HIDDEN) and cfg.mask.shape == (2 * batch, 300)
        assert torch.equal(cfg.emb[:batch], null_emb.expand(batch, -1, -1)) and torch.equal(cfg.emb[batch:], emb)
        assert torch.equal(cfg.mask[batch:], mask)
    # NVlabs: the null branch is attended with each prompt's own mask.
    assert torch.equal(nv_cfg.mask[:batch], mask)
    # diffusers: the null branch keeps its own mask, BOS only.
    assert torch.equal(hf_cfg.mask[:batch], null_mask.expand(batch, -1))
    assert hf_cfg.mask[:batch].sum().item() == batch


# ---------------------------------------------------------------------------------------------------- parity

@pytest.mark.parametrize("chi", ["diffusers", "nvlabs", "none"])
def test_equals_diffusers_encode_prompt(gemma_dir, chi):
    """diffusers mode equals SanaPipeline.encode_prompt exactly; NVlabs mode equals it with NVlabs' CHI text
    on prompts already in NVlabs form (NVlabs differs only in preprocessing and the quotes)."""
    if chi == "diffusers":
        config, prompts = TEXT_ENCODER_PRESETS["diffusers"], MIXED_CASE
    else:
        config, prompts = TextEncoderConfig(chi=chi), [p.lower().strip() for p in MIXED_CASE + PROMPTS]
    enc = TextEncoder(TextEncoderConfig(**{**config.__dict__, "model": str(gemma_dir)}))
    assert enc.decoder.dtype == torch.bfloat16  # the default dtype
    cfg = enc.encode_cfg(prompts)
    ref = _diffusers_encode(enc, prompts, {"diffusers": CHI_DIFFUSERS, "nvlabs": CHI_NVLABS, "none": ()}[chi])
    ref_emb, ref_mask, ref_null, ref_null_mask = ref
    assert cfg.cond.dtype == ref_emb.dtype == torch.bfloat16
    assert torch.equal(cfg.cond, ref_emb) and torch.equal(cfg.cond_mask, ref_mask)
    assert torch.equal(cfg.uncond, ref_null)
    if chi == "diffusers":
        assert torch.equal(cfg.uncond_mask, ref_null_mask)
    else:
        assert torch.equal(cfg.uncond_mask, ref_mask)


# ---------------------------------------------------------------------------------------------------- CUDA graphs

def _default_path(enc: TextEncoder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' own forward from the 2-D mask: it builds the eager 4-D masks itself (masking_utils)."""
    with torch.no_grad():
        return enc.decoder(input_ids=ids, attention_mask=mask).last_hidden_state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_explicit_masks_equal_transformers_masks_bit_for_bit(gemma_dir, dtype):
    """The 4-D masks the graphed forward takes (built outside the graph) give transformers' features exactly:
    padded prompt rows, an unpadded over-long row, and the CFG null row, before and after the 300-token cut."""
    enc = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype=dtype))
    ids, mask = enc.tokenize([*PROMPTS, LONG_PROMPT])
    assert not mask[0].all() and mask[-1].all()
    want = _default_path(enc, ids, mask)
    got = enc.decoder_forward(ids, mask, "off")
    assert got.dtype == enc.decoder.dtype and torch.equal(got, want)
    emb, emb_mask = enc.encode([*PROMPTS, LONG_PROMPT])
    assert torch.equal(emb, select_tokens(want, 300)) and torch.equal(emb_mask, select_tokens(mask, 300))
    null_ids, null_mask = enc.tokenize([""], use_chi=False)
    assert null_mask.sum() == 1
    assert torch.equal(enc.null_embedding()[0], _default_path(enc, null_ids, null_mask))


def test_sliding_window_layers_get_their_own_mask(gemma_dir):
    """Gemma-2-2B's window (4096) is longer than any prompt row; a short one shows that the sliding-window layers'
    mask is built as transformers builds it, not as the full-attention one."""
    enc = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype="float32"))
    assert set(enc.decoder.config.layer_types) == {"sliding_attention", "full_attention"}
    ids, mask = enc.tokenize(PROMPTS)
    wide = _default_path(enc, ids, mask)
    enc.decoder.config.sliding_window = 16
    narrow = _default_path(enc, ids, mask)
    assert not torch.equal(narrow, wide)
    assert torch.equal(enc.decoder_forward(ids, mask, "off"), narrow)


def test_graph_policy_on_the_cpu(encoder):
    ids, mask = encoder.tokenize(PROMPTS[:1])
    forward = encoder.decoder_forward
    assert encoder.cuda_graphs == "auto"
    assert not forward.use_graphs("auto", ids) and not forward.use_graphs("off", ids)
    with pytest.raises(RuntimeError, match="cuda_graphs='on' needs CUDA tensors and Gemma-2's eager attention"):
        encoder.encode(PROMPTS[:1], cuda_graphs="on")
    with pytest.raises(ValueError, match="expected 'auto', 'on' or 'off'"):
        encoder.encode(PROMPTS[:1], cuda_graphs="always")
    assert ids.numel() <= AUTO_GRAPH_TOKENS  # one prompt row is what "auto" records on a GPU


@gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_graph_replays_equal_eager_forwards_on_gpu(gemma_dir, dtype):
    enc = TextEncoder(TextEncoderConfig(model=str(gemma_dir), dtype=dtype), device="cuda")
    graphed = enc.decoder_forward.graphed
    for batch in (PROMPTS[:2], MIXED_CASE):  # one shape: the second batch is copied into the recorded buffers
        ids, mask = enc.tokenize(batch)
        want = _default_path(enc, ids, mask)
        assert torch.equal(enc.decoder_forward(ids, mask, "on"), want)
        assert torch.equal(enc.encode(batch, cuda_graphs="on")[0], select_tokens(want, 300))
        assert len(graphed._recorded) == 1
    first = enc.encode(PROMPTS[:2], cuda_graphs="on")[0]
    enc.encode(MIXED_CASE, cuda_graphs="on")
    assert torch.equal(first, enc.encode(PROMPTS[:2], cuda_graphs="off")[0])  # outputs are copies, not the buffer
    ids, mask = enc.tokenize(PROMPTS, use_chi=False)  # another shape records a second graph
    assert torch.equal(enc.decoder_forward(ids, mask, "on"), _default_path(enc, ids, mask))
    assert len(graphed._recorded) == 2
    enc.encode(PROMPTS, cuda_graphs="on")  # a third: the least recently used is dropped (max_graphs=2)
    assert len(graphed._recorded) == 2
    old = [t.data for t in enc.decoder.parameters()]
    enc.decoder.double().to(enc.config.torch_dtype)  # the same values in new tensors ...
    for t in old:
        t.zero_()                                    # ... and zeros where the recorded graphs would read them
    ids, mask = enc.tokenize(PROMPTS)
    assert torch.equal(enc.decoder_forward(ids, mask, "on"), _default_path(enc, ids, mask))


@gpu
def test_auto_graphs_one_prompt_row_and_not_a_large_batch_on_gpu(encoder):
    one = torch.zeros(1, 498, dtype=torch.long, device="cuda")
    forward = encoder.decoder_forward
    assert forward.use_graphs("auto", one)
    assert not forward.use_graphs("auto", one.expand(16, -1))


# ---------------------------------------------------------------------------------------------------- loading

def _hf_cache(root: Path, files_from: Path) -> Path:
    repo = root / ("models--" + DEFAULT_MODEL.replace("/", "--"))
    snapshot = repo / "snapshots" / FAKE_COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    for item in files_from.iterdir():
        (snapshot / item.name).write_bytes(item.read_bytes())
    return root


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.mark.parametrize("via", ["HF_HUB_CACHE", "cache_dir"])
def test_loads_repo_id_from_hf_cache_offline(gemma_dir, encoder, tmp_path, monkeypatch, offline, via):
    """The default repo id resolves through a Hugging Face cache layout with HF_HUB_OFFLINE=1 (no network)."""
    from huggingface_hub import constants

    cache = _hf_cache(tmp_path / "hub", gemma_dir)
    if via == "HF_HUB_CACHE":  # huggingface_hub reads its environment at import; mirror what the variable sets
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        config = TextEncoderConfig(dtype="float32")
    else:
        config = TextEncoderConfig(dtype="float32", cache_dir=str(cache))
    assert config.model == DEFAULT_MODEL
    enc = TextEncoder(config)
    assert enc.hidden_size == HIDDEN
    assert torch.equal(enc.encode(PROMPTS)[0], encoder.encode(PROMPTS)[0])


def test_missing_model_is_one_clear_line(tmp_path, offline):
    with pytest.raises(TextEncoderError) as info:
        TextEncoder(TextEncoderConfig(cache_dir=str(tmp_path / "empty")))
    message = str(info.value)
    assert "\n" not in message
    assert DEFAULT_MODEL in message and str(tmp_path / "empty") in message
    assert "HF_HUB_OFFLINE=1" in message and f"hf download {DEFAULT_MODEL}" in message
    (tmp_path / "local").mkdir()
    with pytest.raises(TextEncoderError, match=r"local directory .*local \("):
        TextEncoder(TextEncoderConfig(model=str(tmp_path / "local")))


def test_prompts_must_be_a_list_of_strings(encoder):
    with pytest.raises(TextEncoderError, match="list of str"):
        encoder.encode("a cat")
    with pytest.raises(TextEncoderError, match="empty"):
        encoder.encode([])


@pytest.mark.slow
def test_real_gemma_tokenizer_merges_the_chi_space_and_gives_2304_features():
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(DEFAULT_MODEL, "config.json"), str):
        pytest.skip(f"{DEFAULT_MODEL} is not in the Hugging Face cache (get it with `hf download {DEFAULT_MODEL}`)")
    enc = TextEncoder(TextEncoderConfig(), device="cuda" if torch.cuda.is_available() else "cpu")
    for chi in (CHI_NVLABS, CHI_DIFFUSERS):
        chi_ids = _ids(enc, "\n".join(chi))
        assert _ids(enc, "\n".join(chi) + PROMPTS[0])[:len(chi_ids) - 1] == chi_ids[:-1]
        assert len(_ids(enc, "\n".join(chi) + PROMPTS[0])) == len(chi_ids) - 1 + len(_ids(enc, PROMPTS[0], False))
    emb, mask = enc.encode(PROMPTS[:1])
    assert emb.shape == (1, 300, 2304) and emb.dtype == torch.bfloat16 and mask.shape == (1, 300)
