"""GenEval's official detector checkpoint (mmdet 2.x Mask2Former Swin-S, docs/protocols.md §3.2) rewritten as a
transformers `Mask2FormerForUniversalSegmentation` folder, so the official weights run without mmdet/mmcv.

The folder holds config.json, model.safetensors in the layout of transformers' Hub checkpoints (that of
facebook/mask2former-swin-small-coco-instance, read by transformers 4.x and 5.x) and conversion.json (source
file, its sha256, the converter). Every source tensor is used exactly once and transformers must fill every
weight from the file, else the conversion fails naming the key. Three rewrites are not renames:
- Swin's fused qkv and the decoder self-attention's in_proj split into separate q, k, v projections;
- mmdet's PatchMerging gathers each 2x2 patch with nn.Unfold (channel-major), transformers concatenates the four
  pixels (pixel-major, order (0,0), (1,0), (0,1), (1,1)): the reduction's columns and the norm are permuted;
- mmdet runs 9 decoder layers; transformers counts the query-only prediction as a layer (decoder_layers=10).
Not convertible: transformers' Swin shrinks a window to the feature map when a stage is no larger than the
window, where mmdet pads; this only happens for inputs whose short side is <= 32 x window (an aspect ratio
above ~6 under the 1333x800 resize), which `Mask2FormerHF` warns about.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from metrics.base import MetricError, sha256_file
from metrics.detectors.base import OBJECT_NAMES
from metrics.detectors.mask2former_hf import CONVERSION_FILE, load_model

# transformers' pixel decoder samples 4 points on each of the 3 finest-but-one levels (hard-coded there)
_LEVELS, _POINTS = 3, 4
_UNFOLD_TO_PIXEL_MAJOR = [0, 2, 1, 3]  # unfold kernel position (ky * 2 + kx) of transformers' pixels x0..x3


@dataclass(frozen=True)
class Mask2FormerShape:
    """What the state dict fixes; the head count is not in any tensor shape (GenEval's config: 8)."""
    embed_dim: int
    depths: tuple[int, ...]
    swin_heads: tuple[int, ...]
    window_size: int
    mlp_ratio: float
    feature_size: int
    mask_feature_size: int
    encoder_layers: int
    encoder_feedforward_dim: int
    decoder_layers: int          # mmdet's count, without the query-only prediction
    dim_feedforward: int
    num_queries: int
    num_labels: int
    attention_heads: int


def _count(sd: dict, pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.match(pattern, k))})


def infer_shape(sd: dict[str, torch.Tensor], attention_heads: int = 8) -> Mask2FormerShape:
    def get(key: str) -> torch.Tensor:
        if key not in sd:
            raise MetricError(f"not an mmdet Mask2Former Swin checkpoint: state_dict has no {key!r}")
        return sd[key]

    n_stages = _count(sd, r"backbone\.stages\.(\d+)\.")
    depths = tuple(_count(sd, rf"backbone\.stages\.{i}\.blocks\.(\d+)\.") for i in range(n_stages))
    if n_stages != 4:
        raise MetricError(f"mmdet checkpoint: {n_stages} Swin stages under backbone.stages, transformers' "
                          "Mask2Former needs 4")
    embed_dim = get("backbone.patch_embed.projection.weight").shape[0]
    tables = [get(f"backbone.stages.{i}.blocks.0.attn.w_msa.relative_position_bias_table") for i in range(4)]
    window = (int(round(tables[0].shape[0] ** 0.5)) + 1) // 2
    ffn = get("backbone.stages.0.blocks.0.ffn.layers.0.0.weight").shape[0]
    pix = "panoptic_head.pixel_decoder."
    n_inputs = _count(sd, pix + r"input_convs\.(\d+)\.")
    n_fpn = _count(sd, pix + r"lateral_convs\.(\d+)\.")
    if (n_inputs, n_fpn) != (_LEVELS, 1):
        raise MetricError(f"mmdet checkpoint: the pixel decoder has {n_inputs} deformable levels and {n_fpn} FPN "
                          f"levels; transformers' has {_LEVELS} and 1")
    feature = get(pix + "mask_feature.weight")
    heads = attention_heads
    offsets = get(pix + "encoder.layers.0.attentions.0.sampling_offsets.weight").shape[0]
    if offsets != heads * _LEVELS * _POINTS * 2:
        raise MetricError(f"mmdet checkpoint: {pix}encoder.layers.0.attentions.0.sampling_offsets has {offsets} "
                          f"rows, not heads x levels x points x 2 = {heads} x {_LEVELS} x {_POINTS} x 2 "
                          "(give the checkpoint's head count: attention_heads, --attention-heads)")
    hidden = get("panoptic_head.query_feat.weight").shape[1]
    if hidden % heads or feature.shape[1] != hidden:
        raise MetricError(f"mmdet checkpoint: decoder width {hidden} (pixel decoder {feature.shape[1]}) "
                          f"is not split into {heads} heads, or the widths differ")
    return Mask2FormerShape(
        embed_dim=embed_dim, depths=depths, swin_heads=tuple(t.shape[1] for t in tables), window_size=window,
        mlp_ratio=ffn / embed_dim, feature_size=feature.shape[1], mask_feature_size=feature.shape[0],
        encoder_layers=_count(sd, pix + r"encoder\.layers\.(\d+)\."),
        encoder_feedforward_dim=get(pix + "encoder.layers.0.ffns.0.layers.0.0.weight").shape[0],
        decoder_layers=_count(sd, r"panoptic_head\.transformer_decoder\.layers\.(\d+)\."),
        dim_feedforward=get("panoptic_head.transformer_decoder.layers.0.ffns.0.layers.0.0.weight").shape[0],
        num_queries=get("panoptic_head.query_feat.weight").shape[0],
        num_labels=get("panoptic_head.cls_embed.weight").shape[0] - 1, attention_heads=heads)


def hf_config(shape: Mask2FormerShape, class_names: list[str]):
    from transformers import Mask2FormerConfig, SwinConfig  # heavy: transformers loads only when converting
    swin = SwinConfig(embed_dim=shape.embed_dim, depths=list(shape.depths), num_heads=list(shape.swin_heads),
                      window_size=shape.window_size, mlp_ratio=shape.mlp_ratio, qkv_bias=True, drop_path_rate=0.3,
                      out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(
        backbone_config=swin, feature_size=shape.feature_size, mask_feature_size=shape.mask_feature_size,
        hidden_dim=shape.feature_size, encoder_layers=shape.encoder_layers,
        encoder_feedforward_dim=shape.encoder_feedforward_dim, decoder_layers=shape.decoder_layers + 1,
        dim_feedforward=shape.dim_feedforward, num_attention_heads=shape.attention_heads,
        num_queries=shape.num_queries, num_labels=shape.num_labels, common_stride=4, feature_strides=[4, 8, 16, 32],
        id2label=dict(enumerate(class_names)), label2id={n: i for i, n in enumerate(class_names)})


def swin_relative_position_index(window: int) -> torch.Tensor:
    """Swin's (W², W²) index into the ((2W-1)², heads) bias table: (dy + W - 1) * (2W - 1) + (dx + W - 1)."""
    yx = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = yx[:, :, None] - yx[:, None, :] + window - 1  # (2, W², W²)
    return rel[0] * (2 * window - 1) + rel[1]


def unfold_to_pixel_major(t: torch.Tensor) -> torch.Tensor:
    """PatchMerging parameters over 4C inputs (last dim): mmdet's c * 4 + (ky * 2 + kx) -> transformers' p * C + c."""
    c = t.shape[-1] // 4
    return t.reshape(*t.shape[:-1], c, 4)[..., _UNFOLD_TO_PIXEL_MAJOR].transpose(-1, -2).reshape(t.shape)


def convert_state_dict(sd: dict[str, torch.Tensor], shape: Mask2FormerShape) -> dict[str, torch.Tensor]:
    """mmdet keys -> transformers' Hub keys; raises naming the first source key left unused."""
    unused = dict(sd)
    out: dict[str, torch.Tensor] = {}

    def take(key: str) -> torch.Tensor:
        if key not in unused:
            raise MetricError(f"mmdet checkpoint: state_dict has no {key!r}")
        return unused.pop(key)

    def move(src: str, dst: str, params=("weight", "bias")) -> None:
        for p in params:
            out[f"{dst}.{p}"] = take(f"{src}.{p}")

    def split3(t: torch.Tensor, dst: str, names: tuple[str, str, str], param: str) -> None:
        for name, part in zip(names, t.chunk(3, dim=0)):
            out[f"{dst}.{name}.{param}"] = part.clone()

    # Swin-S backbone
    enc = "model.pixel_level_module.encoder."
    move("backbone.patch_embed.projection", enc + "embeddings.patch_embeddings.projection")
    move("backbone.patch_embed.norm", enc + "embeddings.norm")
    index = swin_relative_position_index(shape.window_size)
    for i, depth in enumerate(shape.depths):
        for j in range(depth):
            src, dst = f"backbone.stages.{i}.blocks.{j}.", f"{enc}encoder.layers.{i}.blocks.{j}."
            move(src + "norm1", dst + "layernorm_before")
            move(src + "norm2", dst + "layernorm_after")
            stored = unused.pop(src + "attn.w_msa.relative_position_index", None)  # a buffer: not in every file
            if stored is not None and not torch.equal(stored.long(), index):
                raise MetricError(f"mmdet checkpoint: {src}attn.w_msa.relative_position_index is not Swin's index "
                                  f"for window {shape.window_size}")
            out[dst + "attention.self.relative_position_bias_table"] = take(
                src + "attn.w_msa.relative_position_bias_table")
            for p in ("weight", "bias"):
                split3(take(src + f"attn.w_msa.qkv.{p}"), dst + "attention.self", ("query", "key", "value"), p)
            move(src + "attn.w_msa.proj", dst + "attention.output.dense")
            move(src + "ffn.layers.0.0", dst + "intermediate.dense")
            move(src + "ffn.layers.1", dst + "output.dense")
        if i < len(shape.depths) - 1:
            src, dst = f"backbone.stages.{i}.downsample.", f"{enc}encoder.layers.{i}.downsample."
            out[dst + "reduction.weight"] = unfold_to_pixel_major(take(src + "reduction.weight")).contiguous()
            for p in ("weight", "bias"):
                out[dst + f"norm.{p}"] = unfold_to_pixel_major(take(src + f"norm.{p}")).contiguous()
        move(f"backbone.norm{i}", f"{enc}hidden_states_norms.stage{i + 1}")

    # MSDeformAttn pixel decoder; both list the deformable levels coarsest first
    pix, dec = "panoptic_head.pixel_decoder.", "model.pixel_level_module.decoder."
    for k in range(_LEVELS):
        move(f"{pix}input_convs.{k}.conv", f"{dec}input_projections.{k}.0")
        move(f"{pix}input_convs.{k}.gn", f"{dec}input_projections.{k}.1")
    for layer in range(shape.encoder_layers):
        src, dst = f"{pix}encoder.layers.{layer}.", f"{dec}encoder.layers.{layer}."
        for proj in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            move(src + f"attentions.0.{proj}", dst + f"self_attn.{proj}")
        move(src + "norms.0", dst + "self_attn_layer_norm")
        move(src + "ffns.0.layers.0.0", dst + "fc1")
        move(src + "ffns.0.layers.1", dst + "fc2")
        move(src + "norms.1", dst + "final_layer_norm")
    out[dec + "level_embed"] = take(pix + "level_encoding.weight")
    move(pix + "lateral_convs.0.conv", dec + "adapter_1.0", ("weight",))
    move(pix + "lateral_convs.0.gn", dec + "adapter_1.1")
    move(pix + "output_convs.0.conv", dec + "layer_1.0", ("weight",))
    move(pix + "output_convs.0.gn", dec + "layer_1.1")
    move(pix + "mask_feature", dec + "mask_projection")

    # masked-attention transformer decoder; mmdet's operation order: cross_attn, norm, self_attn, norm, ffn, norm
    head, tm = "panoptic_head.", "model.transformer_module."
    out[tm + "queries_embedder.weight"] = take(head + "query_embed.weight")
    out[tm + "queries_features.weight"] = take(head + "query_feat.weight")
    out[tm + "level_embed.weight"] = take(head + "level_embed.weight")
    for layer in range(shape.decoder_layers):
        src, dst = f"{head}transformer_decoder.layers.{layer}.", f"{tm}decoder.layers.{layer}."
        move(src + "attentions.0.attn", dst + "cross_attn", ("in_proj_weight", "in_proj_bias"))
        move(src + "attentions.0.attn.out_proj", dst + "cross_attn.out_proj")
        split3(take(src + "attentions.1.attn.in_proj_weight"), dst + "self_attn", ("q_proj", "k_proj", "v_proj"),
               "weight")
        split3(take(src + "attentions.1.attn.in_proj_bias"), dst + "self_attn", ("q_proj", "k_proj", "v_proj"),
               "bias")
        move(src + "attentions.1.attn.out_proj", dst + "self_attn.out_proj")
        move(src + "norms.0", dst + "cross_attn_layer_norm")
        move(src + "norms.1", dst + "self_attn_layer_norm")
        move(src + "ffns.0.layers.0.0", dst + "fc1")
        move(src + "ffns.0.layers.1", dst + "fc2")
        move(src + "norms.2", dst + "final_layer_norm")
    move(head + "transformer_decoder.post_norm", tm + "decoder.layernorm")
    for k, src in enumerate(("0", "2", "4")):  # Linear, ReLU, Linear, ReLU, Linear
        move(f"{head}mask_embed.{src}", f"{tm}decoder.mask_predictor.mask_embedder.{k}.0")
    move(head + "cls_embed", "class_predictor")

    if unused:
        raise MetricError(f"mmdet checkpoint: {len(unused)} tensors have no place in transformers' Mask2Former, "
                          f"e.g. {next(iter(unused))!r}")
    return out


def load_mmdet_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) of an mmcv checkpoint, read without unpickling code."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MetricError(f"mmdet checkpoint {path} not found") from None
    except Exception as err:  # pickle/zip errors come in many types
        raise MetricError(f"{path}: not a checkpoint torch.load(weights_only=True) can read "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise MetricError(f"{path}: no 'state_dict' in the checkpoint (an mmcv checkpoint has 'meta' and 'state_dict')")
    return ckpt["state_dict"], ckpt.get("meta") or {}


def convert_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, attention_heads: int = 8) -> Path:
    """Write the transformers folder `out` (must not exist) from an mmdet Mask2Former checkpoint; returns `out`."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists():
        raise MetricError(f"{out} exists; the converter writes a new folder")
    sd, meta = load_mmdet_checkpoint(checkpoint)
    shape = infer_shape(sd, attention_heads)
    classes = [str(c) for c in meta.get("CLASSES", OBJECT_NAMES)]
    if len(classes) != shape.num_labels:
        raise MetricError(f"{checkpoint}: meta CLASSES lists {len(classes)} classes, cls_embed has {shape.num_labels}")
    tensors = convert_state_dict(sd, shape)
    config = hf_config(shape, classes)
    # transformers' Hub checkpoints carry the loss's class weights (no-object weight 0.1); kept for the same layout
    tensors["criterion.empty_weight"] = torch.cat([torch.ones(shape.num_labels),
                                                   torch.tensor([config.no_object_weight])])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        load_model(tmp)  # transformers must fill every weight from the file
        (tmp / CONVERSION_FILE).write_text(json.dumps({
            "source": {"file": checkpoint.name, "sha256": sha256_file(checkpoint),
                       "mmdet_version": meta.get("mmdet_version"), "mmcv_version": meta.get("mmcv_version")},
            "converter": "metrics.detectors.mmdet_convert", "shape": asdict(shape)}, indent=2) + "\n")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

