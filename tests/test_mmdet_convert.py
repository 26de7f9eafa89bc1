"""The mmdet -> transformers Mask2Former converter's pieces that need no mmdet, and the strict loading of converted
folders. The whole conversion is checked against mmdet itself in tests/test_detector_mmdet.py (`make test-mmdet`)."""
import json
import pickle
from inspect import signature

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from metrics.base import MetricError
from metrics.detectors.mmdet_convert import (
    convert_checkpoint,
    load_mmdet_checkpoint,
    swin_relative_position_index,
    unfold_to_pixel_major,
)


@pytest.mark.parametrize("hw", [(6, 8), (5, 7)])
def test_patch_merging_rewrite_matches_mmdets_unfold(hw):
    """mmdet's PatchMerging: zero-pad bottom/right to even, nn.Unfold(2, stride 2), LayerNorm, Linear (no bias)."""
    from transformers.models.swin.modeling_swin import SwinPatchMerging
    torch.manual_seed(0)
    (h, w), c = hw, 3
    x = torch.randn(2, h, w, c)
    norm_w, norm_b, reduction = torch.randn(4 * c), torch.randn(4 * c), torch.randn(2 * c, 4 * c)
    grid = F.pad(x.permute(0, 3, 1, 2), (0, w % 2, 0, h % 2))
    patches = F.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)  # (B, L, C * 4), channel-major
    want = F.layer_norm(patches, (4 * c,), norm_w, norm_b) @ reduction.T
    extra = {"input_resolution": (h, w)} if "input_resolution" in signature(SwinPatchMerging).parameters else {}
    merge = SwinPatchMerging(dim=c, **extra)  # transformers 4.x also takes the resolution
    with torch.no_grad():
        merge.norm.weight.copy_(unfold_to_pixel_major(norm_w))
        merge.norm.bias.copy_(unfold_to_pixel_major(norm_b))
        merge.reduction.weight.copy_(unfold_to_pixel_major(reduction))
        got = merge(x.reshape(2, h * w, c), (h, w))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_relative_position_index_is_transformers_swin():
    from transformers import SwinConfig, SwinModel
    model = SwinModel(SwinConfig(embed_dim=8, depths=[1], num_heads=[1], window_size=5, image_size=20))
    index = next(b for name, b in model.named_buffers() if name.endswith("relative_position_index"))
    assert torch.equal(index.reshape(-1), swin_relative_position_index(5).reshape(-1))


class _Code:  # a pickled object: weights_only loading must refuse it
    pass


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(MetricError, match="nope.pth not found"):
        load_mmdet_checkpoint(tmp_path / "nope.pth")
    torch.save({"meta": {}}, tmp_path / "no_sd.pth")
    with pytest.raises(MetricError, match="no 'state_dict'"):
        load_mmdet_checkpoint(tmp_path / "no_sd.pth")
    with open(tmp_path / "code.pth", "wb") as f:
        pickle.dump({"state_dict": _Code()}, f)
    with pytest.raises(MetricError, match=r"code.pth: not a checkpoint torch.load\(weights_only=True\) can read"):
        load_mmdet_checkpoint(tmp_path / "code.pth")
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "resnet.pth")
    with pytest.raises(MetricError, match="0 Swin stages under backbone.stages"):
        convert_checkpoint(tmp_path / "resnet.pth", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code.pth", "no_sd.pth", "resnet.pth"]  # nothing written


def test_cli_convert_detector_error_exits_nonzero(tmp_path, capsys):
    from sana_eval.cli.main import main
    assert main(["convert-detector", str(tmp_path / "missing.pth"), str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.pth not found" in err


# ---------------------------------------------------------------- loading converted folders

@pytest.fixture
def saved_tiny(tmp_path):
    from sana_eval.smoke.tiny import tiny_mask2former
    folder = tmp_path / "m2f"
    tiny_mask2former().save_pretrained(folder)
    return folder


def test_a_folder_that_leaves_weights_unfilled_is_refused(saved_tiny):
    from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
    Mask2FormerHF(str(saved_tiny), Mask2FormerConfig(device="cpu"))  # complete: loads
    tensors = load_file(saved_tiny / "model.safetensors")
    dropped = next(k for k in tensors if k.endswith("class_predictor.weight"))
    save_file({k: v for k, v in tensors.items() if k != dropped}, saved_tiny / "model.safetensors")
    with pytest.raises(MetricError, match="do not fill the model one to one: missing class_predictor.weight"):
        Mask2FormerHF(str(saved_tiny), Mask2FormerConfig(device="cpu"))
    save_file({**tensors, "model.extra.weight": torch.zeros(2)}, saved_tiny / "model.safetensors")
    with pytest.raises(MetricError, match="unused model.extra.weight"):
        Mask2FormerHF(str(saved_tiny), Mask2FormerConfig(device="cpu"))


def test_converted_folder_is_labelled_in_the_protocol(saved_tiny):
    from metrics.detectors.mask2former_hf import CONVERSION_FILE, Mask2FormerConfig, Mask2FormerHF
    plain = Mask2FormerHF(str(saved_tiny), Mask2FormerConfig(device="cpu")).protocol
    assert "converted_from" not in plain["weights"] and "not the official GenEval detector" in plain["note"]
    source = {"file": "official.pth", "sha256": "ab" * 32, "mmdet_version": "2.28.2", "mmcv_version": "1.7.2"}
    (saved_tiny / CONVERSION_FILE).write_text(json.dumps({"source": source}))
    p = Mask2FormerHF(str(saved_tiny), Mask2FormerConfig(device="cpu")).protocol
    assert p["weights"]["converted_from"] == source and "official.pth, converted from mmdet" in p["note"]
    assert p["official"] is False and p["backend"] == "transformers-mask2former"  # transformers runs it, not mmdet


def test_preprocess_pads_with_128_before_normalising():
    from metrics.detectors.mask2former_hf import _MEAN, _STD, Mask2FormerConfig, preprocess
    image = Image.fromarray(np.full((30, 50, 3), 7, dtype=np.uint8))
    x, (h, w) = preprocess(image, Mask2FormerConfig(scale=(100, 60)))
    assert (h, w) == (60, 100) and x.shape == (1, 3, 64, 128)
    pad = torch.tensor([(128 - m) / s for m, s in zip(_MEAN, _STD)]).view(3, 1)
    torch.testing.assert_close(x[0, :, h:, :].flatten(1), pad.expand(3, (64 - h) * 128))
    torch.testing.assert_close(x[0, :, :, w:].flatten(1), pad.expand(3, 64 * (128 - w)))
    torch.testing.assert_close(x[0, :, :h, :w].flatten(1), ((7 - torch.tensor(_MEAN)) / torch.tensor(_STD))
                               .view(3, 1).expand(3, h * w))


def test_window_larger_than_the_last_stage_warns_once():
    from metrics.detectors.mask2former_hf import Mask2FormerConfig, Mask2FormerHF
    from sana_eval.smoke.tiny import tiny_mask2former
    detector = Mask2FormerHF(config=Mask2FormerConfig(scale=(100, 60), device="cpu"), model=tiny_mask2former())
    with pytest.warns(UserWarning, match="transformers shrinks the window there, unlike mmdet"):
        detector.detect(Image.new("RGB", (50, 30)))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector.detect(Image.new("RGB", (50, 30)))
