"""Gemma-2 text conditioning for Sana: Complex Human Instruction, the 300-token cut, masks under CFG."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

import torch
from huggingface_hub import constants
from packaging.version import Version
from torch import Tensor, nn

from model.cuda_graph import CudaGraphs, GraphedModule, graphs_wanted

DEFAULT_MODEL = "Efficient-Large-Model/gemma-2-2b-it"
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class TextEncoderError(ValueError):
    """The text encoder cannot be loaded or used as asked; the message is one line."""


# ----------------------------------------------------------------------------------------------------------
# Complex Human Instruction (paper §2.3, Table 2; docs/model.md §4.2): data, eight lines joined with "\n".

_CHI_BODY = (
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
    "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing "
    "street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering "
    "glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",  # the trailing space merges with the first prompt word once concatenated
)
# NVlabs `text_encoder.chi_prompt` (every sana_config / sana1-5_config YAML).
CHI_NVLABS: tuple[str, ...] = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
    "image generation. Evaluate the level of detail in the user prompt:",
) + _CHI_BODY
# diffusers `SanaPipeline.__call__(complex_human_instruction=...)` default: single quotes in line 1.
CHI_DIFFUSERS: tuple[str, ...] = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for "
    "image generation. Evaluate the level of detail in the user prompt:",
) + _CHI_BODY
CHI_VARIANTS: dict[str, tuple[str, ...]] = {"nvlabs": CHI_NVLABS, "diffusers": CHI_DIFFUSERS, "none": ()}


# ----------------------------------------------------------------------------------------------------------
# Prompt preprocessing (docs/model.md §4.3 step 1).

# NVlabs `prepare_prompt_ar` cuts at the first occurrence of any flag, even inside a word ("--artsy").
_AR_FLAGS = re.compile(r"--aspect_ratio|--ar|--hw")


def preprocess_nvlabs(prompt: str) -> str:
    return _AR_FLAGS.split(prompt, maxsplit=1)[0].strip()


def preprocess_diffusers(prompt: str) -> str:
    # diffusers `_text_preprocessing` with clean_caption=False
    return prompt.lower().strip()


_PREPROCESS = {"nvlabs": preprocess_nvlabs, "diffusers": preprocess_diffusers}


# ----------------------------------------------------------------------------------------------------------
# Configuration.

@dataclass(frozen=True)
class TextEncoderConfig:
    model: str = DEFAULT_MODEL                              # local directory or Hugging Face repo id
    cache_dir: str | None = None                            # None: the Hugging Face cache (HF_HUB_CACHE)
    dtype: str = "bfloat16"                                 # diffusers docs: Gemma must stay in bf16 or fp32
    chi: Literal["nvlabs", "diffusers", "none"] = "nvlabs"  # "none": DPG-Bench script (docs/protocols.md §4.4)
    max_length: int = 300                                   # embeddings per prompt after the cut
    preprocess: Literal["nvlabs", "diffusers"] = "nvlabs"   # diffusers lower-cases; NVlabs cuts --ar/--hw flags
    cfg_mask: Literal["nvlabs", "diffusers"] = "nvlabs"     # mask of the null branch under CFG (§4.5)

    def __post_init__(self) -> None:
        for name, allowed in (("dtype", _DTYPES), ("chi", CHI_VARIANTS), ("preprocess", _PREPROCESS),
                              ("cfg_mask", ("nvlabs", "diffusers"))):
            if getattr(self, name) not in allowed:
                raise TextEncoderError(f"TextEncoderConfig.{name}={getattr(self, name)!r}; "
                                       f"expected one of {', '.join(map(repr, allowed))}")
        if self.max_length < 2:
            raise TextEncoderError(f"TextEncoderConfig.max_length={self.max_length}; expected at least 2 "
                                   f"(BOS plus one prompt token)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


# Both repos' conventions in full; everything else (model, dtype, length) is shared.
TEXT_ENCODER_PRESETS: dict[str, TextEncoderConfig] = {
    "nvlabs": TextEncoderConfig(),
    "diffusers": TextEncoderConfig(chi="diffusers", preprocess="diffusers", cfg_mask="diffusers"),
}


# ----------------------------------------------------------------------------------------------------------
# The cut and the CFG masks (docs/model.md §4.3 step 6, §4.5).

def select_tokens(x: Tensor, max_length: int) -> Tensor:
    """Keep position 0 (BOS) and the last `max_length - 1` positions along dim 1 (select_index of §4.3)."""
    if x.shape[1] < max_length:
        raise TextEncoderError(f"sequence of {x.shape[1]} positions is shorter than max_length={max_length}")
    return torch.cat([x[:, :1], x[:, x.shape[1] - (max_length - 1):]], dim=1)


@dataclass(frozen=True)
class CFGText:
    """Text conditioning of a doubled classifier-free-guidance batch, rows ordered [uncond; cond]."""
    uncond: Tensor       # (B, L, D)
    cond: Tensor         # (B, L, D)
    uncond_mask: Tensor  # (B, L)
    cond_mask: Tensor    # (B, L)

    @property
    def emb(self) -> Tensor:
        return torch.cat([self.uncond, self.cond])  # (2B, L, D)

    @property
    def mask(self) -> Tensor:
        return torch.cat([self.uncond_mask, self.cond_mask])  # (2B, L)


def cfg_text(null_emb: Tensor, null_mask: Tensor, cond: Tensor, cond_mask: Tensor,
             convention: Literal["nvlabs", "diffusers"]) -> CFGText:
    """Pair the null embedding (1, L, D) with a prompt batch (B, L, D) under one repo's mask convention.

    NVlabs passes only the prompt mask and repeats it for both halves, so the null branch attends to as many
    positions as its prompt has tokens; diffusers gives the null branch its own mask (BOS only for "").
    """
    batch = cond.shape[0]
    if convention == "nvlabs":
        uncond_mask = cond_mask.clone()
    elif convention == "diffusers":
        uncond_mask = null_mask.repeat(batch, 1)
    else:
        raise TextEncoderError(f"CFG mask convention {convention!r}; expected 'nvlabs' or 'diffusers'")
    return CFGText(uncond=null_emb.repeat(batch, 1, 1), cond=cond, uncond_mask=uncond_mask, cond_mask=cond_mask)


# ----------------------------------------------------------------------------------------------------------
# Loading (docs/model.md §4.1).

def _dtype_kwarg() -> str:
    # transformers renamed `torch_dtype` to `dtype` in 4.56; the old name would be silently ignored later on.
    import transformers  # heavy: loaded only when an encoder is loaded

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _load(config: TextEncoderConfig):
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: loaded only when an encoder is loaded

    where = config.model
    kwargs = {"cache_dir": config.cache_dir}
    # A diffusers pipeline root keeps the two in subfolders; a Gemma repo keeps both at its root.
    pipeline_root = (os.path.isdir(os.path.join(where, "text_encoder"))
                     and os.path.isdir(os.path.join(where, "tokenizer")))
    model_at, tokenizer_at = ((os.path.join(where, "text_encoder"), os.path.join(where, "tokenizer"))
                              if pipeline_root else (where, where))
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_at, **kwargs)
        # Eager attention applies Gemma-2's attention-logit softcapping (50). SDPA cannot, and some transformers
        # releases (e.g. 5.17) pick it by default and drop the softcapping without a word.
        causal_lm = AutoModelForCausalLM.from_pretrained(model_at, **kwargs, attn_implementation="eager",
                                                         **{_dtype_kwarg(): config.torch_dtype})
    except (OSError, ValueError) as err:  # transformers raises ValueError for an unreadable tokenizer
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if os.path.isdir(where):
            raise TextEncoderError(f"text encoder: cannot load Gemma-2 from local directory {where} "
                                   f"({reason})") from None
        cache = config.cache_dir or constants.HF_HUB_CACHE
        repo = where if _REPO_ID.fullmatch(where) else DEFAULT_MODEL
        raise TextEncoderError(
            f"text encoder: {where!r} is neither a local directory nor in the Hugging Face cache {cache} "
            f"(HF_HUB_OFFLINE={int(constants.HF_HUB_OFFLINE)}: {reason}); get it with `hf download {repo}` "
            f"or set TextEncoderConfig.model to a local copy") from None
    return tokenizer, causal_lm.get_decoder()


# ----------------------------------------------------------------------------------------------------------
# The decoder forward, eager or replayed from a CUDA graph (docs/model.md §4.6).

# "auto" replays Gemma-2 from a graph up to this many tokens per forward (rows x sequence). Gemma-2-2B on an H200
# (bf16, 498-token rows, transformers 5.17), eagerly vs replayed: 1 row 35-41 vs 12 ms, 2 rows 34-41 vs 18 ms,
# 4 rows 32-54 vs 28 ms; from 8 rows on the GPU is busy while Python issues the launches and a replay gains nothing.
AUTO_GRAPH_TOKENS = 4 * 512


def gemma2_attention_masks(mask: Tensor, sliding_window: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Gemma-2's additive eager-attention masks (B, 1, T, T) of a padding mask (B, T): 0 where a query attends to a
    key (causal, key not padding, and within `sliding_window` for the second), the dtype's minimum elsewhere.

    These are the values transformers builds from the 2-D mask (masking_utils.eager_mask with the causal and the
    sliding-window mask functions, 5.17 to 5.24); built here from tensor ops alone, outside the recorded forward,
    whereas transformers' construction takes version-dependent branches, some reading tensors on the host.
    """
    positions = torch.arange(mask.shape[1], device=mask.device)
    query, key = positions[:, None], positions[None, :]
    full = (key <= query) & mask.bool()[:, None, None, :]
    sliding = full & (key > query - sliding_window)
    zero = torch.zeros((), device=mask.device, dtype=dtype)
    lowest = torch.finfo(dtype).min
    return torch.where(full, zero, lowest), torch.where(sliding, zero, lowest)


class Gemma2Features(nn.Module):
    """A Gemma-2 decoder's last hidden state (B, T, D) of token ids and the two `gemma2_attention_masks`."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, ids: Tensor, full: Tensor, sliding: Tensor) -> Tensor:
        # A mapping by layer type is used as given by transformers 5.x (Gemma2Model.forward): no mask is built inside,
        # and no cache either (a DynamicCache would be created per call otherwise).
        masks = {"full_attention": full, "sliding_attention": sliding}
        return self.decoder(input_ids=ids, attention_mask=masks, use_cache=False)[0]


class Gemma2Forward:
    """Gemma-2's last hidden state (B, T, D) of ids and a padding mask (B, T), eager or replayed from a CUDA graph
    (at most `max_graphs` kept), bit-identical either way; other attention kernels than eager run the decoder as is.
    """

    def __init__(self, decoder: nn.Module, max_graphs: int = 2):
        self.features = Gemma2Features(decoder)
        self.graphed = GraphedModule(self.features, max_graphs)

    @property
    def eager(self) -> bool:
        return self.features.decoder.config._attn_implementation == "eager"

    def use_graphs(self, mode: CudaGraphs, ids: Tensor) -> bool:
        recordable = ids.device.type == "cuda" and self.eager
        return graphs_wanted(mode, recordable, ids.numel() <= AUTO_GRAPH_TOKENS,
                             "CUDA tensors and Gemma-2's eager attention")

    @torch.no_grad()
    def __call__(self, ids: Tensor, mask: Tensor, cuda_graphs: CudaGraphs = "auto") -> Tensor:
        graphs = self.use_graphs(cuda_graphs, ids)
        decoder = self.features.decoder
        if not self.eager:  # SDPA or flash attention build their own kind of mask from the 2-D one
            return decoder(input_ids=ids, attention_mask=mask, use_cache=False)[0]
        masks = gemma2_attention_masks(mask, decoder.config.sliding_window, decoder.dtype)
        if not graphs:
            return self.features(ids, *masks)
        self.graphed.forget_if_weights_moved()  # recorded graphs read the weights where they were
        return self.graphed(ids, *masks)


# ----------------------------------------------------------------------------------------------------------
# The encoder (docs/model.md §4.3, §4.4).

class TextEncoder:
    """Gemma-2-2B-IT decoder (no LM head) turning prompts into (B, 300, 2304) features and masks."""

    def __init__(self, config: TextEncoderConfig = TextEncoderConfig(), device: str | torch.device = "cpu",
                 cuda_graphs: CudaGraphs = "auto"):
        self.config = config
        self.tokenizer, decoder = _load(config)
        self.decoder = decoder.to(device).eval()
        self.cuda_graphs = cuda_graphs  # the default of each call; "auto": graphs on CUDA at small batches
        self.decoder_forward = Gemma2Forward(self.decoder)
        # Both repos pad and truncate on the right; the cut below relies on it.
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        self.chi_text = "\n".join(CHI_VARIANTS[config.chi])
        self._check_special_tokens()
        # n_chi counts the BOS token; 2 = BOS + the CHI's trailing-space token that merges with the prompt.
        self.n_chi = len(self.tokenizer.encode(self.chi_text)) if self.chi_text else 0
        self.max_length_all = self.n_chi + config.max_length - 2 if self.chi_text else config.max_length
        self._null: tuple[Tensor, Tensor] | None = None

    def _check_special_tokens(self) -> None:
        tok = self.tokenizer
        if tok.pad_token_id is None or tok.bos_token_id is None:
            raise TextEncoderError(f"text encoder: tokenizer of {self.config.model} lacks a pad or BOS token")
        if tok("").input_ids[:1] != [tok.bos_token_id]:
            raise TextEncoderError(f"text encoder: tokenizer of {self.config.model} does not prepend BOS, "
                                   f"which the 300-token cut keeps at position 0")

    @property
    def hidden_size(self) -> int:
        return self.decoder.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def preprocess(self, prompts: list[str]) -> list[str]:
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise TextEncoderError(f"prompts must be a list of str, got {type(prompts).__name__}")
        if not prompts:
            raise TextEncoderError("prompts is empty")
        return [_PREPROCESS[self.config.preprocess](p) for p in prompts]

    def tokenize(self, prompts: list[str], use_chi: bool = True) -> tuple[Tensor, Tensor]:
        """Token ids and mask of CHI + preprocessed prompt, before the cut: (B, max_length_all) each.

        `use_chi=False` drops the instruction for this call, as Sana's DPG-Bench and ImageReward scripts do.
        """
        if use_chi and self.chi_text:
            return self._tokenize([self.chi_text + p for p in self.preprocess(prompts)], self.max_length_all)
        return self._tokenize(self.preprocess(prompts), self.config.max_length)

    def _tokenize(self, texts: list[str], max_length: int) -> tuple[Tensor, Tensor]:
        tokens = self.tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        return tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)

    def encode(self, prompts: list[str], use_chi: bool = True,
               cuda_graphs: CudaGraphs | None = None) -> tuple[Tensor, Tensor]:
        """Prompt features (B, 300, D) and mask (B, 300): BOS plus the prompt tokens that attended to the CHI.

        `cuda_graphs` (None: `self.cuda_graphs`) replays the decoder from a CUDA graph, bit-identically."""
        ids, mask = self.tokenize(prompts, use_chi)
        mode = self.cuda_graphs if cuda_graphs is None else cuda_graphs
        emb = self.decoder_forward(ids, mask, mode)  # (B, n_chi + 298, D)
        return select_tokens(emb, self.config.max_length), select_tokens(mask, self.config.max_length)

    def null_embedding(self) -> tuple[Tensor, Tensor]:
        """Features (1, 300, D) and mask (1, 300) of "" without CHI, computed once (docs/model.md §4.4)."""
        if self._null is None:
            ids, mask = self._tokenize([""], self.config.max_length)
            # computed once: recording a graph (three forwards) would cost more than it saves
            self._null = self.decoder_forward(ids, mask, "off"), mask
        return self._null

    def encode_cfg(self, prompts: list[str], use_chi: bool = True, cuda_graphs: CudaGraphs | None = None) -> CFGText:
        """Null and prompt conditioning for a [uncond; cond] batch under `config.cfg_mask` (docs/model.md §4.5)."""
        emb, mask = self.encode(prompts, use_chi, cuda_graphs)
        null_emb, null_mask = self.null_embedding()
        return cfg_text(null_emb, null_mask, emb, mask, self.config.cfg_mask)
