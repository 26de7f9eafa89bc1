"""Text encoders of paper Tables 9 and 13: published architectures as data, parameter counts on the meta device,
and encoding latency (batch 32, 300 tokens, FP16) with random weights built directly on the GPU.

Table 13 counts the T5 *encoder* only (T5EncoderModel: shared embedding + encoder stack; T5-XXL 4,762,310,656)
and the Gemma decoder stack without the LM head (tied to the embedding anyway): with these conventions every
row matches the paper's Params column to the printed digit.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from sana_eval.bench.clock import (
    Clock,
    device_name,
    median_phases,
    peak_memory_gib,
    reset_peak_memory,
    timing_device,
    torch_dtype,
)

Family = Literal["t5", "gemma", "gemma2"]


@dataclass(frozen=True)
class TextEncoderSpec:
    """One encoder's dimensions, as in the `config.json` of `repo`."""

    family: Family          # "t5": T5 v1.1 encoder (gated-GELU FFN); "gemma": Gemma 1; "gemma2": Gemma 2
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int           # T5 has no grouped-query attention: kv_heads == heads
    head_dim: int
    vocab: int
    repo: str

    def config(self, attn_implementation: str | None = None):
        from transformers import Gemma2Config, GemmaConfig, T5Config  # heavy: only a built encoder needs transformers

        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if self.family == "t5":
            return T5Config(vocab_size=self.vocab, d_model=self.hidden, d_ff=self.ffn, num_layers=self.layers,
                            num_heads=self.heads, d_kv=self.head_dim, feed_forward_proj="gated-gelu",
                            tie_word_embeddings=False, use_cache=False, **extra)
        config_class = {"gemma": GemmaConfig, "gemma2": Gemma2Config}[self.family]
        return config_class(vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.ffn,
                            num_hidden_layers=self.layers, num_attention_heads=self.heads,
                            num_key_value_heads=self.kv_heads, head_dim=self.head_dim, use_cache=False, **extra)

    def model_class(self):
        from transformers import Gemma2Model, GemmaModel, T5EncoderModel  # heavy: only a built encoder needs it

        return {"t5": T5EncoderModel, "gemma": GemmaModel, "gemma2": Gemma2Model}[self.family]


def _t5(hidden: int, ffn: int, layers: int, heads: int, size: str) -> TextEncoderSpec:
    return TextEncoderSpec("t5", hidden, ffn, layers, heads, heads, 64, 32128, f"google/t5-v1_1-{size}")


# Published configs: google/t5-v1_1-{small,base,large,xl,xxl}, google/gemma-2b, google/gemma-2-2b.
TEXT_ENCODERS: dict[str, TextEncoderSpec] = {
    "t5-small": _t5(512, 1024, 8, 6, "small"),
    "t5-base": _t5(768, 2048, 12, 12, "base"),
    "t5-large": _t5(1024, 2816, 24, 16, "large"),
    "t5-xl": _t5(2048, 5120, 24, 32, "xl"),
    "t5-xxl": _t5(4096, 10240, 24, 64, "xxl"),
    "gemma-2b": TextEncoderSpec("gemma", 2048, 16384, 18, 8, 1, 256, 256000, "google/gemma-2b"),
    "gemma-2-2b": TextEncoderSpec("gemma2", 2304, 9216, 26, 8, 4, 256, 256000, "google/gemma-2-2b"),
}
# Instruction-tuned releases share their base model's architecture (Sana conditions on gemma-2-2b-it).
_ALIASES = {"google/gemma-2b-it": "gemma-2b", "google/gemma-2-2b-it": "gemma-2-2b",
            "efficient-large-model/gemma-2-2b-it": "gemma-2-2b",
            **{spec.repo.lower(): name for name, spec in TEXT_ENCODERS.items()}}


def text_encoder_name(name: str) -> str:
    """Canonical key of TEXT_ENCODERS for a key or a Hugging Face repo id, any case."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TEXT_ENCODERS:
        known = [*TEXT_ENCODERS, *sorted(_ALIASES)]
        close = difflib.get_close_matches(key, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(TEXT_ENCODERS)}"
        raise ValueError(f"unknown text encoder {name!r}{hint}")
    return key


def get_text_encoder(name: str | TextEncoderSpec) -> TextEncoderSpec:
    return name if isinstance(name, TextEncoderSpec) else TEXT_ENCODERS[text_encoder_name(name)]


@contextlib.contextmanager
def building(device: torch.device, dtype: torch.dtype):
    """Parameters born on `device` in `dtype`: no fp32 copy on the host first (T5-XXL would take minutes)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


def build_text_encoder(name: str | TextEncoderSpec, device: str | torch.device = "cuda", dtype: str = "fp16",
                       attn_implementation: str | None = None) -> torch.nn.Module:
    """A randomly initialised encoder in eval mode; speed does not depend on weight values."""
    spec = get_text_encoder(name)
    device = torch.device(device)
    target = torch_dtype(dtype) if device.type != "meta" else torch.float32
    with building(device, target):
        model = spec.model_class()(spec.config(attn_implementation))
    return model.eval()


def count_text_encoder_parameters(name: str | TextEncoderSpec) -> int:
    """Parameters of the encoder (paper Table 13 "Params"), counted on the meta device."""
    return sum(p.numel() for p in build_text_encoder(name, "meta").parameters())


def random_tokens(vocab: int, rows: int, length: int, device: torch.device,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (rows, length) and an all-ones attention mask: real prompts padded to the full length."""
    gen = torch.Generator(device).manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, length), device=device, generator=gen)
    return ids, torch.ones_like(ids)


@dataclass(frozen=True)
class TextEncoderTiming:
    name: str
    repo: str
    family: str
    params: int
    batch: int
    seq: int
    dtype: str
    attn_implementation: str
    latency_s: float        # one forward of the batch, median of repeats
    repeats: int
    peak_mem_gib: float | None
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def time_text_encoder(name: str | TextEncoderSpec, batch: int = 32, seq: int = 300, dtype: str = "fp16", *,
                      repeats: int = 5, device: str = "cuda",
                      attn_implementation: str | None = None) -> TextEncoderTiming:
    """Latency of encoding `batch` sequences of `seq` tokens (Table 13: batch 32, 300 tokens, A100, FP16).

    `attn_implementation` None keeps the transformers default (what `from_pretrained` gives a user: SDPA for T5
    and Gemma; for Gemma-2 eager in 4.x and some 5.x releases, SDPA without softcapping in others, e.g. 5.17);
    the record says which ran.
    """
    spec, dev = get_text_encoder(name), timing_device(device)
    model = build_text_encoder(spec, dev, dtype, attn_implementation)
    params = sum(p.numel() for p in model.parameters())
    ids, mask = random_tokens(spec.vocab, batch, seq, dev)

    def run(clock: Clock) -> None:
        clock.mark()
        model(input_ids=ids, attention_mask=mask)
        clock.mark()

    reset_peak_memory(dev)
    times = median_phases(run, dev, repeats, warmup=lambda: [run(Clock(dev)) for _ in range(2)])
    return TextEncoderTiming(
        name=text_encoder_name(name) if isinstance(name, str) else spec.repo, repo=spec.repo, family=spec.family,
        params=params, batch=batch, seq=seq, dtype=dtype, attn_implementation=str(model.config._attn_implementation),
        latency_s=times.total, repeats=times.repeats, peak_mem_gib=peak_memory_gib(dev), device=device_name(dev))
