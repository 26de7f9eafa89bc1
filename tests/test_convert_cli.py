"""`sana-eval convert` of NVlabs files whose architecture no preset matches: the options for what the file cannot
say (--cross-heads, --preset), as infer_config's cross_heads= and preset= (issue #18)."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from model import load_transformer
from model.config import TransformerConfig
from model.transformer import build_transformer
from model.weights_io import save_torch
from sana_eval.cli.main import main

# No preset has depth 3 at width 96; the file states both, but not that cross-attention has 3 heads of 32.
CUSTOM = TransformerConfig(depth=3, hidden_size=96, cross_heads=3, caption_channels=40, dtype="float32")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr; a usage error (argparse exits) counts like any other."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _custom_pth(path):
    torch.manual_seed(0)
    model = build_transformer(CUSTOM)
    save_torch({"state_dict": model.state_dict()}, path)
    return model.state_dict()


def test_a_custom_depth_file_converts_once_its_cross_heads_are_given(tmp_path, capsys):
    weights = _custom_pth(tmp_path / "custom.pth")
    code, out, err = run(capsys, "convert", str(tmp_path / "custom.pth"), str(tmp_path / "out"), "--to", "diffusers")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "custom.pth: no preset has depth 3, hidden 96" in err and "--cross-heads" in err
    assert not (tmp_path / "out").exists()

    code, out, _ = run(capsys, "convert", str(tmp_path / "custom.pth"), str(tmp_path / "out"), "--to", "diffusers",
                       "--cross-heads", "3")
    assert code == 0 and str(tmp_path / "out") in out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["num_layers"], config["num_cross_attention_heads"], config["cross_attention_head_dim"]) == (3, 3, 32)
    assert config["num_attention_heads"] == 96 // 32 and config["caption_channels"] == 40
    back = load_transformer(tmp_path / "out")
    assert back.config == CUSTOM
    for key, value in weights.items():
        assert torch.equal(back.state_dict()[key], value), key
    stored = load_file(tmp_path / "out" / "diffusion_pytorch_model.safetensors")
    assert sum(t.numel() for t in stored.values()) == sum(t.numel() for t in weights.values())


def test_cross_heads_must_divide_the_width_and_be_positive(tmp_path, capsys):
    _custom_pth(tmp_path / "custom.pth")
    code, _, err = run(capsys, "convert", str(tmp_path / "custom.pth"), str(tmp_path / "out.pth"), "--to", "nvlabs",
                       "--cross-heads", "5")
    assert code == 2 and err.count("\n") == 1 and "hidden_size 96 is not a multiple of cross_heads 5" in err
    assert not (tmp_path / "out.pth").exists()
    for bad in ("0", "three"):
        code, _, err = run(capsys, "convert", str(tmp_path / "custom.pth"), str(tmp_path / "out.pth"), "--to",
                           "nvlabs", "--cross-heads", bad)
        assert code == 2 and err.count("\n") == 1 and "--cross-heads" in err


def test_preset_names_the_settings_the_file_does_not_state(tmp_path, capsys):
    torch.manual_seed(0)
    save_torch({"state_dict": build_transformer(TransformerConfig(depth=2, hidden_size=64, cross_heads=2,
                                                                  caption_channels=48, sample_size=8,
                                                                  dtype="float32")).state_dict()},
               tmp_path / "tiny.pth")
    # the best match states no positional embedding; tiny-pe, same architecture, has one at interpolation 2.0
    assert run(capsys, "convert", str(tmp_path / "tiny.pth"), str(tmp_path / "plain"), "--to", "diffusers")[0] == 0
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["interpolation_scale"] is None
    assert run(capsys, "convert", str(tmp_path / "tiny.pth"), str(tmp_path / "pe"), "--to", "diffusers",
               "--preset", "tiny-pe")[0] == 0
    assert json.loads((tmp_path / "pe" / "config.json").read_text())["interpolation_scale"] == 2.0

    code, _, err = run(capsys, "convert", str(tmp_path / "tiny.pth"), str(tmp_path / "x"), "--to", "diffusers",
                       "--preset", "Sana_600M_512px")
    assert code == 2 and "preset Sana_600M_512px does not fit (depth: checkpoint 2, preset 28" in err
    code, _, err = run(capsys, "convert", str(tmp_path / "missing.pth"), str(tmp_path / "x"), "--to", "diffusers",
                       "--preset", "Sana_600M_1024")     # a bad name is refused before any file is looked at
    assert code == 2 and err.count("\n") == 1 and "--preset" in err and "did you mean Sana_600M_1024px" in err
    assert not (tmp_path / "x").exists()
