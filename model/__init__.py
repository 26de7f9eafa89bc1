"""The Sana model: Linear DiT, DC-AE, Gemma-2 text encoding, flow samplers. No harness code lives here."""
from model.checkpoints import convert, describe, load_transformer
from model.config import PRESETS, TransformerConfig, get_preset
from model.transformer import SanaTransformer, build_transformer, count_parameters

__all__ = ["PRESETS", "SanaTransformer", "TransformerConfig", "build_transformer", "convert", "count_parameters",
           "describe", "get_preset", "load_transformer"]
