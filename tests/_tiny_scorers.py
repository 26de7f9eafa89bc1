"""Tiny random scoring networks put in place of the full-size ones inside `sana_eval.scoring.scorers`, so the
real scoring path (dispatch, splitting across processes, caches, aggregation) runs on this machine in seconds.

Every process builds them from the same seeds in a folder of its own, so their weights are identical in every
process (the test that uses them would fail otherwise: the processes' parts would not agree).
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from unittest import mock

from metrics import image_reward
from metrics.base import sha256_file
from metrics.clip_score import CLIPScoreConfig
from metrics.detectors.clip_color import CLIPColorClassifier
from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
from metrics.fid import FIDConfig
from metrics.vqa.blip import BlipVQA
from sana_eval.scoring import scorers
from sana_eval.smoke import tiny

SEED = 0


def patch_scorers(folder: Path) -> list:
    """Started patches of scorers' network factories with tiny random networks, each built (in `folder`) when
    first asked for."""
    folder.mkdir(parents=True, exist_ok=True)
    # The tiny Swin's window exceeds its last stage; transformers warns on every image.
    warnings.filterwarnings("ignore", message="Mask2Former input .* transformers shrinks the window")

    @functools.cache
    def fid_weights() -> Path:
        return tiny.write_random_fid_weights(folder / "fid.pth", SEED)

    @functools.cache
    def clip():
        return tiny.tiny_clip(folder / "clip", SEED)

    @functools.cache
    def reward():
        return tiny.tiny_image_reward(folder / "reward", SEED)

    def fid_config(**kw) -> FIDConfig:
        return FIDConfig(**{**kw, "weights_path": str(fid_weights()), "weights_sha256": sha256_file(fid_weights()),
                            "num_workers": 0, "batch_size": 4})

    def clip_config(**kw) -> CLIPScoreConfig:
        return CLIPScoreConfig(**{**kw, "model": clip().name, "pretrained": None, "weights_path": str(clip().weights),
                                  "precision": "fp32", "num_workers": 0, "batch_size": 4})

    def detector(*args, **kwargs) -> Mask2FormerHF:
        return Mask2FormerHF(config=Mask2FormerConfig(scale=(64, 64), device="cpu"), model=tiny.tiny_mask2former(SEED))

    def colors(*args, **kwargs) -> CLIPColorClassifier:
        return CLIPColorClassifier(device="cpu", model=clip().model, preprocess=clip().preprocess,
                                   tokenizer=clip().tokenizer)

    def vqa(*args, **kwargs) -> BlipVQA:
        model, processor = tiny.tiny_blip(folder / "blip", SEED)
        return BlipVQA(device="cpu", max_new_tokens=3, model=model, processor=processor)

    real_config = image_reward.ImageRewardConfig

    def reward_config(**kw) -> image_reward.ImageRewardConfig:
        return real_config(**{**kw, "weights_path": str(reward().weights),
                                                 "med_config_path": str(reward().med_config),
                                                 "tokenizer_path": str(reward().vocab_dir), "download": False,
                                                 "num_workers": 0, "batch_size": 4})

    real_reward = image_reward.ImageRewardScore

    def reward_score(config, arch=None, share=image_reward.ONE_PROCESS):
        return real_reward(config, reward().arch, share=share)

    patches = [
        mock.patch.object(scorers, "FIDConfig", fid_config),
        mock.patch.object(scorers, "CLIPScoreConfig", clip_config),
        mock.patch.object(scorers, "get_detector", detector),
        mock.patch.object(scorers, "get_color_classifier", colors),
        mock.patch.object(scorers, "get_vqa", vqa),
        mock.patch.object(image_reward, "ImageRewardConfig", reward_config),
        mock.patch.object(image_reward, "ImageRewardScore", reward_score),
    ]
    for p in patches:
        p.start()
    return patches
