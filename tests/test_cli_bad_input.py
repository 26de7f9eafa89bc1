"""Malformed input to every subcommand, typed as a user types it (issue #17): each command is refused with exit 2,
exactly one line on stderr naming the culprit (option, file or name), no traceback, and nothing new or changed on
disk: neither in the folder it ran in nor in the files it was given, among them a partial `generate` run.

The commands run in separate processes with their own exit status and stdout/stderr (tests/_cli_forks.py: forked
from one interpreter that imported the CLI once, since each fresh start costs seconds of imports), and one of them
again through the real `sana-eval` script to show it behaves the same.
Corrupt image files, which need scorer models to be reached, are checked in-process below with tiny models.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from _fid_weights import make_random_fid_weights, write_images
from metrics.base import MetricError
from metrics.detectors import ScriptedColorClassifier, ScriptedDetector
from metrics.fid import FIDConfig
from metrics.geneval import evaluate_image
from sana_eval.cli.main import main
from sana_eval.generation.manifest import read_run
from sana_eval.generation.runner import GenerationSpec, generate_benchmark

REPO = Path(__file__).resolve().parents[1]
GEN = ["generate", "--benchmark", "prompts:{A}/p.txt", "--weights", "tiny", "--out", "out"]
SCORE = ["score", "--benchmark", "folder", "--images", "{A}/imgs"]
BENCH_E2E = ["bench", "e2e", "--preset", "tiny", "--batch", "1"]
SWEEP = ["sweep", "fig8-steps", "--weights", "tiny", "--out", "sweep"]

# (id, argv ({A}: the shared inputs, {P}: a partial generate run), what stderr must name)
CASES = [
    # generate: the cases, refused before manifest.jsonl (or anything) is written
    ("generate-steps-0", [*GEN, "--steps", "0"], "--steps"),
    ("generate-steps-negative", [*GEN, "--steps", "-3"], "--steps"),
    ("generate-shift-negative", [*GEN, "--shift", "-1"], "--shift"),
    ("generate-decode-tile-0", [*GEN, "--decode-tile", "0"], "--decode-tile"),
    ("generate-resolution-negative", [*GEN, "--resolution", "-32"], "--resolution"),
    ("generate-resolution-not-32", [*GEN, "--resolution", "100"], "--resolution"),
    ("generate-cfg-nan", [*GEN, "--cfg", "nan"], "--cfg"),
    ("generate-cfg-inf", [*GEN, "--cfg", "inf"], "--cfg"),
    ("generate-pag-negative", [*GEN, "--pag-scale", "-1"], "--pag-scale"),
    ("generate-limit-0", [*GEN, "--limit", "0"], "--limit"),
    ("generate-limit-past-the-prompts", [*GEN, "--limit", "5"], "--limit"),
    ("generate-subset-0", [*GEN, "--subset", "0"], "--subset"),
    ("generate-limit-and-subset", [*GEN, "--limit", "1", "--subset", "1"], "--subset"),
    ("generate-quantize-int4", [*GEN, "--quantize", "int4"], "--quantize"),
    ("generate-empty-prompt-file", [*GEN[:2], "prompts:{A}/empty.txt", *GEN[3:]], "empty.txt"),
    ("generate-blank-prompt-file", [*GEN[:2], "prompts:{A}/blank.txt", *GEN[3:]], "blank.txt"),
    ("generate-missing-prompt-file", [*GEN[:2], "prompts:{A}/nope.txt", *GEN[3:]], "nope.txt"),
    ("generate-unknown-benchmark", [*GEN[:2], "genevall", *GEN[3:]], "genevall"),
    ("generate-shard-past-n", [*GEN, "--shard", "2/2"], "--shard"),
    ("generate-shard-malformed", [*GEN, "--shard", "1-2"], "--shard"),
    ("generate-batch-size-0", [*GEN, "--batch-size", "0"], "--batch-size"),
    ("generate-encode-workers-0", [*GEN, "--encode-workers", "0"], "--encode-workers"),
    ("generate-seed-not-int", [*GEN, "--seed", "1.5"], "--seed"),
    ("generate-device-cuda-without-gpu", [*GEN, "--device", "cuda"], "--device"),
    ("generate-device-unknown", [*GEN, "--device", "tpu"], "--device"),
    ("generate-triton-on-cpu", [*GEN, "--kernels", "triton"], "--kernels"),
    ("generate-cuda-graphs-on-cpu", [*GEN, "--cuda-graphs", "on"], "--cuda-graphs"),
    ("generate-unknown-weights", [*GEN[:4], "tinyy", *GEN[5:]], "--weights"),
    ("generate-missing-vae", [*GEN, "--vae", "{A}/no-vae"], "--vae"),
    ("generate-missing-text-encoder", [*GEN, "--text-encoder", "./no-gemma"], "--text-encoder"),
    ("generate-layout-of-another-benchmark", [*GEN, "--layout", "dpg"], "--layout"),
    ("generate-out-is-a-file", [*GEN[:6], "{A}/afile"], "--out"),
    ("generate-out-under-a-file", [*GEN[:6], "{A}/afile/run"], "--out"),
    # the same into a folder holding a partial run: it must stay as it was
    ("generate-partial-steps-0", [*GEN[:6], "{P}", "--steps", "0"], "--steps"),
    ("generate-partial-cfg-nan", [*GEN[:6], "{P}", "--cfg", "nan"], "--cfg"),
    ("generate-partial-limit-past-the-prompts", [*GEN[:6], "{P}", "--limit", "3"], "--limit"),
    ("generate-partial-triton-on-cpu", [*GEN[:6], "{P}", "--kernels", "triton"], "--kernels"),
    # score
    ("score-unknown-metric", [*SCORE, "--metrics", "fidd", "--out", "r.json"], "fidd"),
    ("score-missing-images", [*SCORE[:3], "--images", "{A}/nope", "--out", "r.json"], "--images"),
    ("score-out-is-a-folder", [*SCORE, "--out", "{A}/imgs"], "--out"),
    ("score-option-of-another-benchmark", ["score", "--benchmark", "geneval", "--images", "{A}/imgs",
                                           "--fid-size", "64", "--out", "r.json"], "--fid-size"),
    ("score-fid-size-0", [*SCORE, "--fid-size", "0", "--out", "r.json"], "--fid-size"),
    ("score-missing-prompts", [*SCORE, "--prompts", "{A}/nope.json", "--out", "r.json"], "--prompts"),
    ("score-device-cuda-without-gpu", [*SCORE, "--device", "cuda", "--out", "r.json"], "--device"),
    ("score-recon-resolution", ["score", "--benchmark", "recon", "--resolution", "1000", "--out", "r.json"],
     "--resolution"),
    ("score-unknown-benchmark", ["score", "--benchmark", "fold", "--out", "r.json"], "--benchmark"),
    # compare
    ("compare-missing-run", ["compare", "{A}/nope.json", "{A}/a.json"], "nope.json"),
    ("compare-malformed-results", ["compare", "{A}/bad.json", "{A}/a.json"], "bad.json"),
    ("compare-n-boot-0", ["compare", "{A}/a.json", "{A}/b.json", "--n-boot", "0"], "--n-boot"),
    ("compare-html-prompts-0", ["compare", "{A}/a.json", "{A}/b.json", "--html-prompts", "0"], "--html-prompts"),
    ("compare-bad-gate-rule", ["compare", "{A}/a.json", "{A}/b.json", "--fail-if-worse", "clip_score"],
     "clip_score"),
    ("compare-html-is-a-folder", ["compare", "{A}/a.json", "{A}/b.json", "--html", "{A}/imgs"], "--html"),
    # export
    ("export-out-is-a-file", ["export", "--to", "datasets", "{A}/afile", "--benchmark", "prompts:{A}/p.txt"],
     "afile"),
    ("export-nothing-to-export", ["export", "--to", "datasets", "ds"], "--benchmark"),
    ("export-missing-results", ["export", "--to", "datasets", "ds", "--results", "{A}/nope.json"], "--results"),
    # convert, convert-detector
    ("convert-missing-source", ["convert", "{A}/nope.pth", "dst", "--to", "diffusers"], "nope.pth"),
    ("convert-existing-destination", ["convert", "{A}/p.txt", "{A}/afile", "--to", "nvlabs"], "afile"),
    ("convert-unknown-format", ["convert", "{A}/p.txt", "dst", "--to", "onnx"], "--to"),
    ("convert-unknown-preset", ["convert", "{A}/p.txt", "dst", "--to", "diffusers", "--preset", "Sana_600M"],
     "--preset"),
    ("convert-not-a-checkpoint", ["convert", "{A}/p.txt", "dst.pth", "--to", "nvlabs"], "p.txt"),
    ("convert-detector-missing-checkpoint", ["convert-detector", "{A}/nope.pth", "det"], "nope.pth"),
    ("convert-detector-heads-0", ["convert-detector", "{A}/p.txt", "det", "--attention-heads", "0"],
     "--attention-heads"),
    # bench: no GPU here, and values refused before any model is built
    ("bench-batch-0", [*BENCH_E2E[:4], "--batch", "0"], "--batch"),
    ("bench-steps-0", [*BENCH_E2E, "--steps", "0"], "--steps"),
    ("bench-unknown-preset", ["bench", "transformer", "--preset", "tinyy"], "--preset"),
    ("bench-tokens-negative", ["bench", "attention", "--tokens", "-1"], "--tokens"),
    ("bench-dc-ae-resolution", ["bench", "dc-ae", "--resolution", "33"], "--resolution"),
    ("bench-unknown-set-field", [*BENCH_E2E, "--set", "depthh=2"], "--set"),
    ("bench-triton-on-cpu", [*BENCH_E2E, "--kernels", "triton"], "--kernels"),
    ("bench-cuda-graphs-on-cpu", [*BENCH_E2E, "--cuda-graphs", "on"], "--cuda-graphs"),
    ("bench-on-cpu", BENCH_E2E, "CUDA GPU"),
    ("bench-suite-on-cpu", ["bench", "suite", "text-encoders", "--out", "b"], "CUDA"),
    ("bench-suite-unknown-peer", ["bench", "suite", "peers", "--peers", "flux", "--out", "b"], "--peers"),
    ("bench-suite-out-is-a-file", ["bench", "suite", "sana", "--out", "{A}/afile"], "--out"),
    ("bench-suite-unknown-quantize", ["bench", "suite", "sana", "--quantize", "int4", "--out", "b"], "--quantize"),
    ("bench-unknown-baseline", [*BENCH_E2E, "--baseline", "flux-max"], "--baseline"),
    ("bench-unknown-null-prompt", [*BENCH_E2E, "--null-prompt", "once"], "--null-prompt"),
    # evaluate (generate + score): the shared generation flags, its own files
    ("evaluate-cfg-nan", ["evaluate", "--weights", "tiny", "--out", "ev", "--cfg", "nan"], "--cfg"),
    ("evaluate-unknown-weights", ["evaluate", "--weights", "tinyy", "--out", "ev"], "--weights"),
    ("evaluate-missing-mjhq", ["evaluate", "--weights", "tiny", "--out", "ev", "--mjhq", "{A}/nope"], "--mjhq"),
    ("evaluate-unknown-benchmark", ["evaluate", "--weights", "tiny", "--out", "ev", "--benchmarks", "mjhq,geneval"],
     "--benchmarks"),
    ("evaluate-subset-0", ["evaluate", "--weights", "tiny", "--out", "ev", "--subset", "0"], "--subset"),
    # reproduce, sweep, info, smoke, the entry point itself
    ("reproduce-unknown-table", ["reproduce", "table99", "--out", "rep"], "table99"),
    ("reproduce-version-with-a-path", ["reproduce", "table6", "--out", "rep", "--version", "../up"], "--version"),
    ("reproduce-out-is-a-file", ["reproduce", "table6", "--out", "{A}/afile"], "--out"),
    ("sweep-limit-0", [*SWEEP, "--limit", "0"], "--limit"),
    ("sweep-unknown-sweep", ["sweep", "fig9", "--weights", "tiny", "--out", "sweep"], "fig9"),
    ("sweep-out-is-a-file", [*SWEEP[:4], "--out", "{A}/afile"], "--out"),
    ("sweep-missing-mjhq", [*SWEEP, "--mjhq", "{A}/nope"], "--mjhq"),
    ("info-unknown-preset", ["info", "Sana_600M_1024"], "Sana_600M_1024"),
    ("info-missing-weights", ["info", "--weights", "{A}/nope.pth"], "nope.pth"),
    ("smoke-out-is-a-file", ["smoke", "--out", "{A}/afile"], "--out"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("unknown-option", ["info", "--jsn"], "--jsn"),
]
# Run through the real entry point as well (a fresh interpreter: seconds of imports): the same outcome is expected.
ENTRY_POINTS = {"generate-partial-cfg-nan": [str(Path(sys.executable).parent / "sana-eval")]}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, mtime, sha256) and folder under `root`: any write, even of the same bytes, shows."""
    found = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        found[str(path.relative_to(root))] = ("dir",) if path.is_dir() else (
            stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def make_inputs(root: Path) -> None:
    (root / "p.txt").write_text("a red cube\na blue sphere\n")
    (root / "empty.txt").write_text("")
    (root / "blank.txt").write_text("\n   \n")
    (root / "afile").write_text("not a folder\n")
    (root / "bad.json").write_text("{")
    for name in ("a.json", "b.json"):
        (root / name).write_text("[]")
    (root / "imgs").mkdir()
    for k in range(2):
        Image.new("RGB", (16, 16), (40 * k, 0, 0)).save(root / "imgs" / f"{k:05d}.png")
    # a partial run: the first of the two prompts made (a stand-in image function: the folder is what matters)
    spec = GenerationSpec({"kind": "partial run for test_cli_bad_input"}, limit=1, progress=False)
    generate_benchmark(f"prompts:{root / 'p.txt'}", root / "partial",
                       lambda prompts, seeds: torch.zeros(len(prompts), 16, 16, 3, dtype=torch.uint8), spec)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("bad-input")
    inputs, cases_dir, logs = base / "inputs", base / "cases", base / "logs"
    for folder in (inputs, cases_dir, logs):
        folder.mkdir()
    make_inputs(inputs)
    assert len(read_run(inputs / "partial")[1]) == 1
    # As a user's shell has it: no GPU (the same cases everywhere), no Triton interpreter, no debug, caches here.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SANA_EVAL_", "TRITON_")) and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", SANA_EVAL_CACHE=str(base / "cache"),
               HF_HOME=str(base / "hf"))
    runs, entry = [], {}
    for name, argv, _ in CASES:
        (cases_dir / name).mkdir()
        argv = [a.format(A=inputs, P=inputs / "partial") for a in argv]
        runs.append({"name": name, "argv": argv, "cwd": str(cases_dir / name), "stdout": str(logs / f"{name}.out"),
                     "stderr": str(logs / f"{name}.err")})
        if name in ENTRY_POINTS:
            (cases_dir / f"{name}.entry").mkdir()
            entry[name] = subprocess.Popen([*ENTRY_POINTS[name], *argv], cwd=cases_dir / f"{name}.entry", env=env,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = snapshot(inputs)
    (base / "cases.json").write_text(json.dumps(runs))
    subprocess.run([sys.executable, str(REPO / "tests" / "_cli_forks.py"), str(base / "cases.json"),
                    str(base / "codes.json")], cwd=REPO, env=env, check=True, timeout=600)
    codes = json.loads((base / "codes.json").read_text())
    found = {}
    for run, code in zip(runs, codes):
        found[run["name"]] = {"code": code, "out": Path(run["stdout"]).read_text(),
                              "err": Path(run["stderr"]).read_text(), "left": snapshot(Path(run["cwd"]))}
    for name, process in entry.items():
        out, err = process.communicate(timeout=300)
        found[f"{name}.entry"] = {"code": process.returncode, "out": out, "err": err,
                                  "left": snapshot(cases_dir / f"{name}.entry")}
    found["inputs"] = {"before": before, "after": snapshot(inputs)}
    return found


def test_the_table_covers_every_subcommand():
    commands = {argv[0] for _, argv, _ in CASES}
    assert len(CASES) >= 40 and len({name for name, _, _ in CASES}) == len(CASES)
    assert commands >= set(("generate", "score", "compare", "export", "convert", "convert-detector", "bench",
                            "reproduce", "sweep", "info", "smoke"))


@pytest.mark.parametrize("name, culprit", [(name, culprit) for name, _, culprit in CASES] +
                         [(f"{name}.entry", culprit) for name, _, culprit in CASES if name in ENTRY_POINTS])
def test_refused_in_one_line_naming_the_culprit_with_nothing_written(outcomes, name, culprit):
    got = outcomes[name]
    assert got["code"] == 2, got
    assert got["err"].endswith("\n") and got["err"].count("\n") == 1, got["err"]
    assert got["err"].startswith("sana-eval") and culprit in got["err"], got["err"]
    assert "Traceback" not in got["err"] + got["out"]
    assert got["left"] == {}, f"{name} wrote {sorted(got['left'])}"


def test_the_inputs_and_the_partial_run_are_left_as_they_were(outcomes):
    before, after = outcomes["inputs"]["before"], outcomes["inputs"]["after"]
    assert any(path.startswith("partial/") and path.endswith(".png") for path in before)
    assert "partial/manifest.jsonl" in before
    assert after == before


# --- unreadable images, reached only with scorer models: tiny ones, in-process ------------------------------------

def truncated_copy(good: Path, bad: Path) -> None:
    data = good.read_bytes()
    bad.write_bytes(data[:len(data) // 2])


def test_a_corrupt_jpeg_in_a_scored_folder_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """FID of a folder through `sana-eval score`, images read by DataLoader worker processes (random Inception
    weights): the worker's error comes back as one line naming the file, not as the worker's traceback."""
    hub = tmp_path / "hub"
    _, sha = make_random_fid_weights(hub)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.setattr("sana_eval.scoring.scorers.FIDConfig",
                        functools.partial(FIDConfig, weights_sha256=sha, num_workers=2, batch_size=2))
    monkeypatch.delenv("SANA_EVAL_DEBUG", raising=False)
    write_images(tmp_path / "ref", 4, (32, 32), seed=1, ext=".jpg")
    paths = write_images(tmp_path / "gen", 4, (32, 32), seed=2, ext=".jpg")
    truncated_copy(paths[2], paths[2])
    out = tmp_path / "r.json"
    code = main(["score", "--benchmark", "folder", "--images", str(tmp_path / "gen"), "--reference",
                 str(tmp_path / "ref"), "--metrics", "fid", "--allow-few-images", "--fid-size", "32", "--device", "cpu",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    _, err = capsys.readouterr()
    progress, _, error = err.rstrip("\n").rpartition("\n")   # the progress bar's lines, then the error's
    assert code == 2 and "Traceback" not in err and "error" not in progress, err
    assert error.startswith(f"sana-eval score: error: cannot read image {paths[2]}: "), err
    assert not out.exists()


def test_a_truncated_png_in_geneval_names_the_file(tmp_path):
    good = tmp_path / "0000.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(good)
    Image.effect_noise((64, 64), 60).convert("RGB").save(tmp_path / "noise.png")
    truncated_copy(tmp_path / "noise.png", tmp_path / "0001.png")
    meta = {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}
    detector, colors = ScriptedDetector({"0000.png": {}, "0001.png": {}}), ScriptedColorClassifier({})
    assert evaluate_image(good, meta, detector, colors)["correct"] is False   # a readable image is scored
    with pytest.raises(MetricError, match=r"cannot read image .*0001\.png: image file is truncated") as err:
        evaluate_image(tmp_path / "0001.png", meta, detector, colors)
    assert "\n" not in str(err.value)
