"""ImageReward-v1.0 network on transformers' BLIP modules, and the `ImageReward.pt` key layout
(docs/protocols.md §5.2).

The official model (THUDM/ImageReward `ImageReward.py` + `models/BLIP/{blip,blip_pretrain,vit,med}.py`) is
`blip.visual_encoder` (BLIP ViT, `create_vit('large', 224)`), `blip.text_encoder` (BLIP `med.py` BertModel, a
cross-attention layer in every block, no pooler), the unused ITC projections `blip.vision_proj` / `blip.text_proj`,
and `mlp.layers` (Linear 768-1024-128-64-16-1 with Dropouts between the first four). Our model holds the same
weights as transformers' `BlipVisionModel` (`vision.`), `BlipTextModel` (`text.`) and a Linear chain (`head.`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from metrics.base import MetricError

# ImageReward.py: rewards are normalised by the authors' reference distribution (§5.4).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072


class ImageRewardWeightsError(MetricError):
    """An ImageReward checkpoint that is missing, unreadable or does not fit the architecture."""


@dataclass(frozen=True)
class RewardArch:
    """Sizes of ImageReward-v1.0; defaults are the released model (blip.py `create_vit`, med_config.json)."""
    image_size: int = 224             # ImageReward(..) builds BLIP_Pretrain(image_size=224, vit='large')
    patch_size: int = 16
    vision_width: int = 1024          # vit='large'
    vision_depth: int = 24
    vision_heads: int = 16
    vision_mlp_ratio: int = 4
    vision_eps: float = 1e-6          # vit.py: partial(nn.LayerNorm, eps=1e-6)
    vocab_size: int = 30524           # bert-base-uncased 30522 + BLIP's [DEC] and [ENC]
    text_width: int = 768
    text_depth: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_positions: int = 512
    text_eps: float = 1e-12
    proj_dim: int = 256               # BLIP_Pretrain embed_dim: vision_proj/text_proj, unused by the reward
    head_dims: tuple[int, ...] = (1024, 128, 64, 16, 1)
    head_dropouts: int = 3            # Dropout after each of the first three Linear layers (inference no-ops)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_indices(self) -> tuple[int, ...]:
        """`nn.Sequential` index of each Linear in the official `mlp.layers` (Dropouts take indices too)."""
        out, i = [], 0
        for k in range(len(self.head_dims)):
            out.append(i)
            i += 2 if k < self.head_dropouts else 1
        return tuple(out)


# ----------------------------------------------------------------------------------------------
# The official key list, from the module definitions (names and shapes).

def official_shapes(arch: RewardArch) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official `ImageReward` state dict, with its shape (incl. the unused ones)."""
    s: dict[str, tuple[int, ...]] = {}
    W, P = arch.vision_width, arch.patch_size
    v = "blip.visual_encoder."
    s[v + "cls_token"] = (1, 1, W)
    s[v + "pos_embed"] = (1, arch.num_patches + 1, W)
    s[v + "patch_embed.proj.weight"] = (W, 3, P, P)
    s[v + "patch_embed.proj.bias"] = (W,)
    hidden = W * arch.vision_mlp_ratio
    for i in range(arch.vision_depth):
        b = f"{v}blocks.{i}."
        for name, shape in (("norm1", (W,)), ("norm2", (W,))):
            s[f"{b}{name}.weight"], s[f"{b}{name}.bias"] = shape, shape
        for name, out_f, in_f in (("attn.qkv", 3 * W, W), ("attn.proj", W, W), ("mlp.fc1", hidden, W),
                                  ("mlp.fc2", W, hidden)):
            s[f"{b}{name}.weight"], s[f"{b}{name}.bias"] = (out_f, in_f), (out_f,)
    s[v + "norm.weight"], s[v + "norm.bias"] = (W,), (W,)

    D, t = arch.text_width, "blip.text_encoder."
    s[t + "embeddings.position_ids"] = (1, arch.max_positions)  # persistent buffer in med.py
    s[t + "embeddings.word_embeddings.weight"] = (arch.vocab_size, D)
    s[t + "embeddings.position_embeddings.weight"] = (arch.max_positions, D)
    s[t + "embeddings.LayerNorm.weight"], s[t + "embeddings.LayerNorm.bias"] = (D,), (D,)
    for i in range(arch.text_depth):
        b = f"{t}encoder.layer.{i}."
        for att, kv_in in (("attention", D), ("crossattention", W)):  # cross-attention keys read image tokens
            for name, out_f, in_f in (("self.query", D, D), ("self.key", D, kv_in), ("self.value", D, kv_in),
                                      ("output.dense", D, D)):
                s[f"{b}{att}.{name}.weight"], s[f"{b}{att}.{name}.bias"] = (out_f, in_f), (out_f,)
            s[f"{b}{att}.output.LayerNorm.weight"], s[f"{b}{att}.output.LayerNorm.bias"] = (D,), (D,)
        s[f"{b}intermediate.dense.weight"] = (arch.text_intermediate, D)
        s[f"{b}intermediate.dense.bias"] = (arch.text_intermediate,)
        s[f"{b}output.dense.weight"], s[f"{b}output.dense.bias"] = (D, arch.text_intermediate), (D,)
        s[f"{b}output.LayerNorm.weight"], s[f"{b}output.LayerNorm.bias"] = (D,), (D,)
    s["blip.vision_proj.weight"], s["blip.vision_proj.bias"] = (arch.proj_dim, W), (arch.proj_dim,)
    s["blip.text_proj.weight"], s["blip.text_proj.bias"] = (arch.proj_dim, D), (arch.proj_dim,)

    dims = (D, *arch.head_dims)
    for k, idx in enumerate(arch.head_indices):
        s[f"mlp.layers.{idx}.weight"], s[f"mlp.layers.{idx}.bias"] = (dims[k + 1], dims[k]), (dims[k + 1],)
    return s


# Keys the reward never reads: the ITC projections, and med.py's position_ids buffer (checked, then dropped).
UNUSED_PREFIXES = ("blip.vision_proj.", "blip.text_proj.")
POSITION_IDS = "blip.text_encoder.embeddings.position_ids"

# ----------------------------------------------------------------------------------------------
# Official name -> our name.

_VISION_RULES = (
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.(weight|bias)", r"embeddings.patch_embedding.\1"),
    (r"blocks\.(\d+)\.norm1\.(weight|bias)", r"encoder.layers.\1.layer_norm1.\2"),
    (r"blocks\.(\d+)\.norm2\.(weight|bias)", r"encoder.layers.\1.layer_norm2.\2"),
    (r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", r"encoder.layers.\1.self_attn.qkv.\2"),
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"encoder.layers.\1.self_attn.projection.\2"),
    (r"blocks\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"encoder.layers.\1.mlp.\2.\3"),
    (r"norm\.(weight|bias)", r"post_layernorm.\1"),
)


def our_name(official: str, arch: RewardArch) -> str | None:
    """Our parameter name for an official key; None for keys the reward does not use or unknown keys."""
    if official.startswith("blip.visual_encoder."):
        rest = official.removeprefix("blip.visual_encoder.")
        for pattern, repl in _VISION_RULES:
            if re.fullmatch(pattern, rest):
                return "vision." + re.sub(pattern, repl, rest)
        return None
    if official.startswith("blip.text_encoder.") and official != POSITION_IDS:
        # transformers' BlipTextModel keeps med.py's module names (it was ported from it).
        return "text." + official.removeprefix("blip.text_encoder.")
    m = re.fullmatch(r"mlp\.layers\.(\d+)\.(weight|bias)", official)
    if m and int(m.group(1)) in arch.head_indices:
        return f"head.{arch.head_indices.index(int(m.group(1)))}.{m.group(2)}"
    return None


def convert_state_dict(sd: Mapping[str, torch.Tensor], arch: RewardArch, source: str) -> dict[str, torch.Tensor]:
    """Official `ImageReward.pt` tensors -> our model's state dict; every key and shape checked.

    The official loader uses `load_state_dict(strict=False)`, so a wrong file would score with random
    weights there; here a missing, unknown or misshapen key is an error naming it.
    """
    expected = official_shapes(arch)
    missing = [k for k in expected if k not in sd and k != POSITION_IDS and not k.startswith(UNUSED_PREFIXES)]
    if missing:
        raise ImageRewardWeightsError(f"{source}: missing key {missing[0]!r} ({len(missing)} missing); "
                                      "not an ImageReward-v1.0 state dict")
    unknown = sorted(k for k in sd if k not in expected)
    if unknown:
        raise ImageRewardWeightsError(f"{source}: unexpected key {unknown[0]!r} ({len(unknown)} unexpected)")
    for k, v in sd.items():
        if tuple(v.shape) != expected[k]:
            raise ImageRewardWeightsError(f"{source}: key {k!r} has shape {tuple(v.shape)}, "
                                          f"ImageReward-v1.0 has {expected[k]}")
    if POSITION_IDS in sd and not torch.equal(sd[POSITION_IDS].long().flatten(), torch.arange(arch.max_positions)):
        raise ImageRewardWeightsError(f"{source}: {POSITION_IDS} is not 0..{arch.max_positions - 1}")
    out = {}
    for k, v in sd.items():
        name = our_name(k, arch)
        if name is not None:
            out[name] = v
    return out


# ----------------------------------------------------------------------------------------------
# The network.

def vision_config(arch: RewardArch) -> BlipVisionConfig:
    return BlipVisionConfig(hidden_size=arch.vision_width, intermediate_size=arch.vision_width * arch.vision_mlp_ratio,
                            num_hidden_layers=arch.vision_depth, num_attention_heads=arch.vision_heads,
                            image_size=arch.image_size, patch_size=arch.patch_size, hidden_act="gelu",
                            layer_norm_eps=arch.vision_eps, attention_dropout=0.0)


def text_config(arch: RewardArch) -> BlipTextConfig:
    # is_decoder=True only makes BlipTextLayer build its cross-attention; forward runs bidirectionally.
    # The special-token ids matter only for generation, which the reward never does.
    return BlipTextConfig(vocab_size=arch.vocab_size, hidden_size=arch.text_width,
                          encoder_hidden_size=arch.vision_width, intermediate_size=arch.text_intermediate,
                          num_hidden_layers=arch.text_depth, num_attention_heads=arch.text_heads,
                          max_position_embeddings=arch.max_positions, hidden_act="gelu",
                          layer_norm_eps=arch.text_eps, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          pad_token_id=0, bos_token_id=None, eos_token_id=None, sep_token_id=None,
                          is_decoder=True, use_cache=False)


class ImageRewardModel(nn.Module):
    """reward = (MLP(text_encoder(prompt | cross-attn to ViT(image))[CLS]) - mean) / std  (ImageReward.py `score`)."""

    def __init__(self, arch: RewardArch = RewardArch()):
        super().__init__()
        self.arch = arch
        self.vision = BlipVisionModel(vision_config(arch))
        self.text = BlipTextModel(text_config(arch), add_pooling_layer=False)
        dims = (arch.text_width, *arch.head_dims)
        # No activations between the Linear layers: the official MLP has its ReLUs commented out.
        self.head = nn.Sequential(*(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])))

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        dtype = self.vision.embeddings.patch_embedding.weight.dtype
        image = self.vision(pixel_values=pixels.to(dtype)).last_hidden_state  # (B, 1+N, Wv), after the final norm
        # The official image_atts is all ones, i.e. no cross-attention mask.
        out = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image)
        cls = out.last_hidden_state[:, 0].float()  # (B, Wt)
        return ((self.head(cls) - REWARD_MEAN) / REWARD_STD).squeeze(-1)  # (B,)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):  # files from torch < 1.6 cannot be memory-mapped
                    raise
                sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise ImageRewardWeightsError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ImageRewardWeightsError(f"{path}: not a flat state dict of tensors (ImageReward.pt is one)")
    return sd


def load_model(path: Path, arch: RewardArch, device: torch.device, dtype: torch.dtype) -> ImageRewardModel:
    """The official state dict on our modules: built on the meta device, tensors assigned, none left unset."""
    sd = convert_state_dict(read_state_dict(path), arch, str(path))
    with torch.device("meta"):
        model = ImageRewardModel(arch)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise ImageRewardWeightsError(f"{path}: {str(e).splitlines()[-1].strip()}") from None
    # The one non-persistent buffer: BlipTextEmbeddings.position_ids.
    model.text.embeddings.position_ids = torch.arange(arch.max_positions).unsqueeze(0)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise ImageRewardWeightsError(f"{path}: tensor {left[0]!r} was not initialised (transformers changed BLIP?)")
    model = model.float().eval().to(device)
    model.vision.to(dtype)
    model.text.to(dtype)
    return model
