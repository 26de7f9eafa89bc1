"""A real `sana-eval generate` and a real `sana-eval score` process, SIGKILLed three times each at seeded random
moments in the middle of their work and rerun with the same command each time, end with the files and numbers of
an uninterrupted run: every image byte-identical and recorded once, the same results, no temp file left.

Both chains and both uninterrupted runs go at once (four processes): most of the time is the processes' start
(importing torch), which the two cores then share. The tiny Sana is tests/test_distributed.py's; the scorers are
tests/_tiny_scorers.py's random networks of the real architectures (through tests/dist_worker.py).
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sana_eval.generation.manifest import GenerationError, read_run
from sana_eval.generation.prompt_sets import prompt_file_benchmark
from sana_eval.generation.runner import GenerationSpec, run_generation
from sana_eval.results import read_results
from test_distributed import ENV, N_PROMPTS, REPO, assets, generate, hashes  # noqa: F401 (assets: a fixture)

KILLS = 3
N_SCORED = 2000        # images: the tiny CLIP takes about 1 ms each
WORKER = REPO / "tests" / "dist_worker.py"
CLIP_BAR = re.compile(r"CLIP image features:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=ENV)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float, log: Path) -> None:
    """SIGKILL `proc` `delay` seconds after `ready()` holds; it must still be working then."""
    try:
        deadline = time.monotonic() + 240
        while not ready():
            assert proc.poll() is None, f"the run ended before the kill:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the work never started"
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before the kill:\n{log.read_text()[-3000:]}"


def finish(cmd: list[str], log: Path) -> str:
    proc = start(cmd, log)
    try:
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        proc.kill()     # no-op once it ended
    return log.read_text()


def temps(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.tmp"))


# ----------------------------------------------------------------------------------------------------------------
# generate: killed once this run has recorded a few more files, then up to half a second later (anywhere in the
# generation, encoding or recording of the next chunks)

def recorded(out: Path) -> int:
    manifest = out / "manifest.jsonl"
    return max(0, manifest.read_bytes().count(b"\n") - 1) if manifest.exists() else 0


def killed_generate(sana: Path, out: Path, rng: random.Random) -> list[int]:
    """Files recorded when each kill landed."""
    kills = []
    for k in range(KILLS):
        log, target = out.parent / f"generate-{k}.log", recorded(out) + rng.randint(1, 6)
        kill_when(start(generate(sana, out), log), lambda at=target: recorded(out) >= at, rng.uniform(0, 0.5), log)
        kills.append(recorded(out))
    # the rerun keeps exactly the files the killed runs recorded, and makes the rest
    kept = kills[-1]
    assert f"{N_PROMPTS - kept} written, {kept} kept of {N_PROMPTS} files" in \
        finish(generate(sana, out), out.parent / "generate-last.log")
    return kills


# ----------------------------------------------------------------------------------------------------------------
# score: CLIP score of a folder, whose per-image features go to the cache <out>.cache in chunks of 80 images
# (extract_features' flush_every=20 batches of the tiny scorers' 4). Each run is killed once its progress bar shows
# a seeded random count of images between 100 (a chunk is on disk) and a third of what it has to do, so it never
# reaches its end. FID is left out: its tiny Inception takes 0.25 s of CPU an image here and its 2048-wide matrix
# square root 18 s a run, so kills would either miss the middle or break the time budget; it shares
# extract_features and the cache with CLIP score.

def score_command(folder: Path, scorers: Path, out: Path) -> list[str]:
    return [sys.executable, str(WORKER), str(scorers), "score", "--benchmark", "folder", "--images",
            str(folder / "images"), "--prompts", str(folder / "prompts.json"), "--metrics", "clip_score",
            "--device", "cpu", "--out", str(out)]


def clip_bar(log: Path) -> tuple[int, int] | None:
    """(images done, images to do) of a run's CLIP progress bar, once it shows."""
    shown = CLIP_BAR.findall(log.read_text(errors="replace"))
    return None if not shown else max((int(done), int(total)) for done, total in shown)


def killed_score(folder: Path, out: Path, rng: random.Random) -> list[int]:
    """Images through CLIP when each kill landed."""
    kills, at = [], {}
    for k in range(KILLS):
        log = out.parent / f"score-{k}.log"

        def ready(log: Path = log, k: int = k) -> bool:
            bar = clip_bar(log)
            if bar is not None and k not in at:
                at[k] = rng.randint(100, bar[1] // 3)
            return bar is not None and bar[0] >= at[k]
        kill_when(start(score_command(folder, out.parent / "scorers", out), log), ready, 0, log)
        assert not out.exists()
        kills.append(clip_bar(log)[0])
    finish(score_command(folder, out.parent / "scorers", out), out.parent / "score-last.log")
    return kills


def comparable(path: Path) -> dict[str, dict]:
    """metric -> its numbers (aggregate and per item) and protocol, without provenance (paths, times)."""
    return {name: {"aggregate": r.aggregate, "per_item": r.per_item, "protocol": r.protocol}
            for name, r in read_results(path).items()}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory) -> Path:
    """A flat folder of small random images and their prompts."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(N_SCORED):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "images" / f"{i:04d}.png")
    (root / "prompts.json").write_text(json.dumps({f"{i:04d}": f"a photo of thing {i}" for i in range(N_SCORED)}))
    return root


@dataclass(frozen=True)
class Runs:
    generated: Path
    generated_once: Path
    generate_kills: list[int]
    scored: Path
    scored_once: Path
    score_kills: list[int]


@pytest.fixture(scope="module")
def runs(assets, folder_run, tmp_path_factory) -> Runs:  # noqa: F811
    root = tmp_path_factory.mktemp("kill-resume")
    for name in ("generate-killed", "generate-once", "score-killed", "score-once"):
        (root / name).mkdir()
    runs = Runs(root / "generate-killed" / "out", root / "generate-once" / "out", [],
                root / "score-killed" / "results.json", root / "score-once" / "results.json", [])
    with ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(killed_generate, assets, runs.generated, random.Random(17)),
                pool.submit(finish, generate(assets, runs.generated_once), root / "generate-once" / "run.log"),
                pool.submit(killed_score, folder_run, runs.scored, random.Random(18)),
                pool.submit(finish, score_command(folder_run, root / "score-once" / "scorers", runs.scored_once),
                            root / "score-once" / "run.log")]
        runs.generate_kills.extend(jobs[0].result())
        runs.score_kills.extend(jobs[2].result())
        for job in jobs:
            job.result()
    return runs


def test_generate_killed_three_times_ends_with_the_files_and_manifest_of_one_run(runs):
    progress = runs.generate_kills
    assert 0 < progress[0] and progress == sorted(progress) and progress[-1] < N_PROMPTS, progress   # mid-run
    reference = hashes(runs.generated_once)
    assert len(reference) == N_PROMPTS and hashes(runs.generated) == reference
    assert sorted(p.name for p in runs.generated.iterdir()) == sorted(p.name for p in runs.generated_once.iterdir())
    records = read_run(runs.generated)[1]
    assert {f: [r["sha256"] for r in rows] for f, rows in records.items()} == {f: [h] for f, h in reference.items()}
    assert records == read_run(runs.generated_once)[1]   # item, prompt, seeds, hash: each file once, as in one run
    assert not temps(runs.generated)


def test_score_killed_three_times_ends_with_the_numbers_of_one_run(runs):
    progress = runs.score_kills
    assert all(100 <= done < N_SCORED for done in progress), progress
    assert comparable(runs.scored) == comparable(runs.scored_once)
    assert set(comparable(runs.scored)) == {"clip_score"}
    assert len(comparable(runs.scored)["clip_score"]["per_item"]) == N_SCORED
    # every killed run left chunks of features that the next one read back: the cache holds chunks of each process
    chunks = list(runs.scored.with_suffix(".cache").glob("features/clip_score-*/chunk-*.npz"))
    assert len({chunk.name.split("-")[2] for chunk in chunks}) == KILLS + 1
    assert not temps(runs.scored.parent)
    # the results file gets the mode a plain open() would, as the images do (issue 17 item 9)
    umask = os.umask(0)
    os.umask(umask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (runs.scored, next(runs.generated.glob("*.png")))}
    assert modes == {0o666 & ~umask}


# ----------------------------------------------------------------------------------------------------------------
# A manifest damaged otherwise than by a kill (a line cut short in the middle) is named with the way out

def test_a_damaged_manifest_line_names_the_fix_and_following_it_resumes(tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"prompt {i}\n" for i in range(6)))
    prompts = prompt_file_benchmark(tmp_path / "p.txt").load()
    out = tmp_path / "out"
    spec = GenerationSpec(run_config={"model": "constant"}, batch_size=2, progress=False)

    def paint(texts: list[str], seeds: list[int]) -> np.ndarray:
        return np.stack([np.full((8, 8, 3), seed % 251, np.uint8) for seed in seeds])

    run_generation(prompts, out, paint, spec)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".png"}
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join([*lines[:2], lines[2][:15] + "\n", *lines[3:]]))
    with pytest.raises(GenerationError, match=rf"{re.escape(str(manifest))} line 3: bad JSON .*; the manifest is "
                                              r"damaged: delete line 3 \(the files it recorded are made again"):
        run_generation(prompts, out, paint, spec)
    manifest.write_text("".join([*lines[:2], *lines[3:]]))
    assert run_generation(prompts, out, paint, spec).written == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".png"} == before
