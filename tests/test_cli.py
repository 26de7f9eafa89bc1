"""The `sana-eval` entry point: JSON output, one-line errors with a non-zero exit, real file round trips."""
from __future__ import annotations

import json

import pytest
import torch

from model import load_transformer
from model.weights_io import save_torch
from sana_eval.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_preset_json(capsys):
    code, out, _ = run(capsys, "info", "Sana_1600M_1024px", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["parameters"] == 1_604_462_752
    assert info["config"]["depth"] == 20 and info["self_heads"] == 70 and info["ffn_hidden"] == 5600


def test_unknown_preset_is_one_line_error(capsys):
    code, out, err = run(capsys, "info", "Sana_600M_1024")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "did you mean Sana_600M_1024px" in err


def test_convert_then_describe_round_trip(tmp_path, capsys):
    model = load_transformer("tiny-qknorm")
    save_torch({"state_dict": model.state_dict()}, tmp_path / "tiny.pth")
    assert run(capsys, "convert", str(tmp_path / "tiny.pth"), str(tmp_path / "diff"), "--to", "diffusers")[0] == 0
    code, out, _ = run(capsys, "info", "--weights", str(tmp_path / "diff"), "--json")
    info = json.loads(out)
    assert code == 0 and info["format"] == "diffusers-dir" and info["preset"] == "tiny-qknorm"
    assert run(capsys, "convert", str(tmp_path / "diff"), str(tmp_path / "back.pth"), "--to", "nvlabs")[0] == 0
    back = load_transformer(str(tmp_path / "back.pth"))
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_convert_refuses_to_overwrite(tmp_path, capsys):
    save_torch({"state_dict": load_transformer("tiny").state_dict()}, tmp_path / "tiny.pth")
    (tmp_path / "taken.safetensors").write_bytes(b"keep me")
    code, _, err = run(capsys, "convert", str(tmp_path / "tiny.pth"), str(tmp_path / "taken.safetensors"),
                       "--to", "safetensors")
    assert code == 2 and "taken.safetensors" in err
    assert (tmp_path / "taken.safetensors").read_bytes() == b"keep me"


def test_truncated_checkpoint_names_the_file(tmp_path, capsys):
    save_torch({"state_dict": load_transformer("tiny").state_dict()}, tmp_path / "tiny.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "tiny.pth").read_bytes()[:2000])
    code, _, err = run(capsys, "info", "--weights", str(tmp_path / "cut.pth"))
    assert code == 2 and "cut.pth" in err and err.count("\n") == 1


def test_reproduce_table6_writes_the_report(tmp_path, capsys):
    code, out, _ = run(capsys, "reproduce", "table6", "--out", str(tmp_path), "--version", "v-test")
    assert code == 0
    report = json.loads((tmp_path / "v-test" / "table6.json").read_text())
    assert report["table"]["id"] == "table6" if "table" in report else True
    text = (tmp_path / "v-test" / "table6.md").read_text()
    assert "1604" in text and "591.7" in text
    assert (tmp_path / "README.md").exists()


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("info", "convert", "reproduce", "bench"):
        assert command in out
