"""Tiny random stand-ins for every model of the chain, built in-process with no download (`make smoke`).

Each builder makes the real architecture class our code loads (Gemma-2, DC-AE, the Linear DiT, FID-Inception,
open_clip CLIP, Mask2Former, BLIP VQA, ImageReward) at toy sizes with seeded random weights, and, where our code
reads weights from disk, writes them where it reads them. Numbers made with them mean nothing; they only prove
that every stage runs. The tests reuse these builders for their own tiny models.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torchvision
from pytorch_fid import inception as pfid_inception
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForQuestionAnswering,
    BlipImageProcessor,
    BlipProcessor,
    Gemma2Config,
    Gemma2ForCausalLM,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PreTrainedTokenizerFast,
    SwinConfig,
)

from metrics.image_reward_model import POSITION_IDS, RewardArch, official_shapes
from model.config import TransformerConfig
from model.dc_ae import DCAE, DCAE_PRESETS
from model.pipeline import SanaPipeline
from model.text_encoder import TEXT_ENCODER_PRESETS, TextEncoder
from model.transformer import build_transformer

GEMMA_HIDDEN = 32
SMOKE_CLIP_NAME = "sana-eval-smoke-clip"
# open_clip config of a CLIP small enough for a CPU: 32-px images, one layer per tower.
SMOKE_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# A BERT vocab for the tiny BLIP and ImageReward text towers; other words map to [UNK], which is fine here.
BERT_VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "yes", "no", "is", "are", "there", "a", "the",
              "of", "on", "in", "photo", "red", "green", "?", ",", ".")


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere (norm gains near 1, fan-in scaled elsewhere) so every parameter matters; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else noise / p[0].numel() ** 0.5)
    return module.eval()


# ----------------------------------------------------------------------------------------------
# Generation: Gemma-2 text encoder (docs/model.md §4), DC-AE (§3), Linear DiT (§1), the pipeline (§5-6).

def train_tokenizer(corpus: Sequence[str]):
    """A Gemma-like tokenizer: SentencePiece-style "▁" word prefixes, BOS prepended, right padding."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok.train_from_iterator(list(corpus) * 4, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def write_tiny_gemma(folder: Path, corpus: Sequence[str], seed: int = 0, hidden_size: int = GEMMA_HIDDEN) -> Path:
    """A 2-layer random Gemma2ForCausalLM and its tokenizer saved as a local model folder."""
    tokenizer = train_tokenizer(corpus)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=64,
                          num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                          max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    Gemma2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_pipeline(gemma_folder: Path, resolution: int, seed: int = 0):
    """SanaPipeline of the tiny Gemma-2 (NVlabs conventions, fp32), a random dc-ae-tiny and a 2-block DiT."""
    text_encoder = TextEncoder(replace(TEXT_ENCODER_PRESETS["nvlabs"], model=str(gemma_folder), dtype="float32"))
    ae_config = DCAE_PRESETS["dc-ae-tiny"]
    ae = randomise(DCAE(ae_config), seed + 1)
    latent = resolution // ae_config.spatial_compression
    dit_config = TransformerConfig(depth=2, hidden_size=64, cross_heads=2, caption_channels=text_encoder.hidden_size,
                                   in_channels=ae_config.latent_channels, sample_size=latent, dtype="float32")
    dit = randomise(build_transformer(dit_config), seed + 2)
    return SanaPipeline(dit, ae, text_encoder)


# ----------------------------------------------------------------------------------------------
# FID (docs/protocols.md §1.2): pytorch-fid's FID-Inception with random weights.

def write_random_fid_weights(path: Path, seed: int = 0) -> Path:
    """A randomly initialised FID-Inception state dict, written where `FIDConfig.weights_path` points."""
    torch.manual_seed(seed)
    # fid_inception_v3 builds the patched network, then loads the official file; skip only that load.
    with mock.patch.object(torchvision.models.inception.Inception3, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(pfid_inception, "load_state_dict_from_url", lambda *a, **k: {}):
        net = pfid_inception.fid_inception_v3()
    # He-normal convolutions keep the input's signal alive through ~90 layers (PyTorch's default init
    # shrinks it to ~1e-8, making every image's features equal); random BatchNorm statistics make eval mode matter.
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.05)
            m.running_var.uniform_(0.8, 1.2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


# ----------------------------------------------------------------------------------------------
# CLIP score (§2.1) and GenEval's colour classifier (§3.2): a tiny open_clip CLIP.

@dataclass(frozen=True)
class TinyCLIP:
    name: str            # the open_clip config name it is registered under
    weights: Path        # safetensors state dict
    model: Any
    preprocess: Any
    tokenizer: Any


def tiny_clip(folder: Path, seed: int = 0) -> TinyCLIP:
    """Registers SMOKE_CLIP_CONFIG with open_clip and writes random weights for it."""
    import open_clip  # heavy (~0.6 s) and needed by this builder alone: loaded when a tiny CLIP is built

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{SMOKE_CLIP_NAME}.json"
    config.write_text(json.dumps(SMOKE_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(SMOKE_CLIP_NAME)
    weights = folder / "tiny-clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return TinyCLIP(SMOKE_CLIP_NAME, weights, model.eval(), preprocess, open_clip.get_tokenizer(SMOKE_CLIP_NAME))


# ----------------------------------------------------------------------------------------------
# GenEval detector (§3.2): Mask2Former with a 4-stage Swin of width 16 over the 80 COCO classes.

def tiny_mask2former(seed: int = 0):
    torch.manual_seed(seed)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, num_labels=80, num_queries=6, hidden_dim=32, feature_size=32,
                            mask_feature_size=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                            dim_feedforward=32, encoder_feedforward_dim=32, common_stride=4)
    return Mask2FormerForUniversalSegmentation(cfg).eval()


# ----------------------------------------------------------------------------------------------
# DPG-Bench VQA (§4.2): BLIP for question answering with one-layer towers.

def tiny_blip(folder: Path, seed: int = 0):
    """(BlipForQuestionAnswering, BlipProcessor) with 32-px images and BERT_VOCAB."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    ids = {t: i for i, t in enumerate(BERT_VOCAB)}
    text = dict(vocab_size=len(BERT_VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, encoder_hidden_size=16, bos_token_id=ids["[DEC]"], pad_token_id=ids["[PAD]"],
                sep_token_id=ids["[SEP]"], max_position_embeddings=40)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(seed)
    return BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval(), processor


# ----------------------------------------------------------------------------------------------
# ImageReward (§5): the official checkpoint layout at toy sizes.

@dataclass(frozen=True)
class TinyImageReward:
    arch: Any            # metrics.image_reward_model.RewardArch
    weights: Path        # official-format state dict (safetensors)
    med_config: Path
    vocab_dir: Path      # holds vocab.txt


def random_image_reward_weights(arch, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the official ImageReward.pt key layout: norm gains near 1, fan-in scaled matrices."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_shapes(arch).items():
        if key == POSITION_IDS:
            sd[key] = torch.arange(arch.max_positions).unsqueeze(0)
        elif "norm" in key.lower() and key.endswith("weight"):
            sd[key] = 1 + 0.2 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2 and "embed" not in key and "token" not in key:
            sd[key] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        else:
            sd[key] = 0.3 * torch.randn(shape, generator=gen)
    return sd


def tiny_image_reward(folder: Path, seed: int = 0) -> TinyImageReward:
    """Random official-format ImageReward weights for a 32-px ViT and a 2-layer BERT, plus med_config/vocab."""
    # bert-base-uncased has no [DEC]; the reward's tokenizer adds [DEC] and [ENC] itself.
    vocab = [t for t in BERT_VOCAB if t != "[DEC]"]
    arch = RewardArch(image_size=32, patch_size=16, vision_width=32, vision_depth=1, vision_heads=2,
                      vocab_size=len(vocab) + 2, text_width=32, text_depth=1, text_heads=2,
                      text_intermediate=64, max_positions=40, proj_dim=8)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    med = {"architectures": ["BertModel"], "hidden_size": arch.text_width, "num_hidden_layers": arch.text_depth,
           "num_attention_heads": arch.text_heads, "intermediate_size": arch.text_intermediate,
           "vocab_size": arch.vocab_size, "max_position_embeddings": arch.max_positions, "layer_norm_eps": 1e-12,
           "hidden_act": "gelu", "model_type": "bert", "pad_token_id": 0, "type_vocab_size": 2,
           "encoder_width": arch.vision_width, "add_cross_attention": True}
    (folder / "med_config.json").write_text(json.dumps(med))
    weights = folder / "ImageReward.safetensors"
    save_file(random_image_reward_weights(arch, seed), str(weights))
    return TinyImageReward(arch, weights, folder / "med_config.json", folder)
