"""The `sana-eval` entry point: JSON output, one-line errors with a non-zero exit, real file round trips."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

from model import load_transformer
from model.weights_io import save_torch
from sana_eval.cli import bench, bench_suite, info
from sana_eval.cli.main import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


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
    assert report["table"]["id"] == "table6"
    text = (tmp_path / "v-test" / "table6.md").read_text()
    assert "1604" in text and "591.7" in text
    assert (tmp_path / "README.md").exists()


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("info", "convert", "reproduce", "bench"):
        assert command in out


# --- every subcommand documents itself with examples that run as written -----------------------------------------

def _command_paths() -> list[list[str]]:
    """argv prefixes of every (sub-)subcommand: info, …, bench transformer, …, bench suite sana, …"""
    paths = [[name] for name in COMMANDS]
    paths += [["bench", mode] for mode in bench.MODES]
    paths += [["bench", "suite", suite] for suite in bench_suite.SUITES]
    return paths


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0, argv
    return capsys.readouterr().out


@pytest.mark.parametrize("path", [[]] + _command_paths(), ids=lambda p: " ".join(p) or "sana-eval")
def test_every_help_ends_with_examples_that_parse(capsys, path):
    text = _help(capsys, path)
    examples = text.split("\nexamples:\n", 1)[1]
    commands = [line.strip() for line in examples.splitlines() if line.strip().startswith("sana-eval ")]
    assert commands and any(c.startswith(" ".join(["sana-eval", *path])) for c in commands), path
    for command in commands:
        build_parser().parse_args(shlex.split(command, comments=True)[1:])


def test_bench_help_lists_its_modes_and_old_flags_no_longer_parse(capsys):
    text = _help(capsys, ["bench"])
    for mode in bench.MODES:
        assert mode in text
    assert all(suite in _help(capsys, ["bench", "suite"]) for suite in bench_suite.SUITES)
    # a suite and a component, or a profile of dc-ae, cannot be asked for together any more
    for argv in (["bench", "--suite", "sana", "--component", "dc-ae"], ["bench", "suite", "sana", "--kernels", "eager"],
                 ["bench", "dc-ae", "--profile"], ["bench", "suite", "sana", "--set", "ffn=mlp"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
    capsys.readouterr()


def _documented_commands() -> list[tuple[str, str]]:
    """(file, command) for each `sana-eval …` line of README.md's code blocks, the Makefile, the CI example and the
    hand-written run notes under reports/ (the generated table reports' commands are the recipes: test_tables.py)."""
    found = []
    for path in [ROOT / "README.md", ROOT / "Makefile", ROOT / "examples" / "ci-compare.yml",
                 *ROOT.glob("reports/*/bench.md")]:
        for line in path.read_text().splitlines():
            line = line.strip().removeprefix("run:").strip()
            for prefix in ("$(BIN)/", ".venv/bin/"):
                line = line.removeprefix(prefix)
            if line.startswith("sana-eval ") and "[@]" not in line:     # a bash array is no literal argument
                found.append((path.name, re.sub(r"\$\{?\w+\}?", "1", line)))   # shell variables: any value
    return found


def test_documented_command_lines_parse():
    commands = _documented_commands()
    assert len(commands) > 20 and any(c.startswith("sana-eval bench suite ") for _, c in commands)
    for name, command in commands:
        try:
            build_parser().parse_args(shlex.split(command, comments=True)[1:])
        except SystemExit:
            pytest.fail(f"{name}: {command}")


def _failing_info(monkeypatch, error: BaseException) -> None:
    def fail(args):
        raise error

    monkeypatch.setattr(info, "run", fail)


@pytest.mark.parametrize("error, code, words", [
    (ValueError("bad value\nacross two lines"), 2, "sana-eval info: error: bad value across two lines"),
    (KeyError("no such key"), 2, "sana-eval info: error: no such key"),
    (RuntimeError("a bug"), 1, "sana-eval info: internal error: RuntimeError: a bug (rerun with --debug"),
    (KeyboardInterrupt(), 130, "sana-eval info: interrupted"),
])
def test_errors_are_one_line_without_a_traceback(monkeypatch, capsys, error, code, words):
    monkeypatch.delenv("SANA_EVAL_DEBUG", raising=False)
    _failing_info(monkeypatch, error)
    assert main(["info"]) == code
    err = capsys.readouterr().err
    assert err.startswith(words) and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
    monkeypatch.setenv("SANA_EVAL_DEBUG", "1" if how == "env" else "0")
    _failing_info(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["--debug", "info"] if how == "flag" else ["info"])
