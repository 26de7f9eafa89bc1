"""`generate` across processes through torchrun (gloo on the CPU): the bytes of one process whatever the process
count, a rank killed mid-run and resumed with another count, a dead rank stopping the others; the launch variables."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _tiny import diffusers_ae, randomize
from model.config import get_preset
from model.dc_ae import DCAE_PRESETS
from sana_eval import folder_lock
from sana_eval.distributed import SINGLE_PROCESS, LaunchError, launch_from_env, launched, timeout_from_env
from sana_eval.generation.manifest import read_run
from sana_eval.smoke.tiny import write_tiny_gemma

N_PROMPTS = 48
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A prompt file, a tiny Gemma-2 and DC-AE on disk for the `tiny` transformer preset (random, seeded init)."""
    root = tmp_path_factory.mktemp("assets")
    prompts = [f"a photo of {n} {t} {i}" for i in range(4) for n in ("one", "two", "red", "blue")
               for t in ("cat", "dog", "cup")][:N_PROMPTS]
    (root / "p.txt").write_text("\n".join(prompts) + "\n")
    dit = get_preset("tiny")
    write_tiny_gemma(root / "gemma", prompts, hidden_size=dit.caption_channels)
    ae = diffusers_ae(dataclasses.replace(DCAE_PRESETS["dc-ae-tiny"], latent_channels=dit.in_channels))
    randomize(ae, 1)
    ae.save_pretrained(root / "vae")
    return root


def generate(assets: Path, out: Path, nproc: int | None = None) -> list[str]:
    """`sana-eval generate` in one plain process, or under torchrun with `nproc` processes."""
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    return [sys.executable, *launcher, "-m", "sana_eval", "generate", "--benchmark", f"prompts:{assets / 'p.txt'}",
            "--weights", "tiny", "--vae", str(assets / "vae"), "--text-encoder", str(assets / "gemma"),
            "--out", str(out), "--steps", "2", "--batch-size", "2", "--resolution", "32", "--device", "cpu"]


# CPU results follow the intra-op thread count (run_config records it), and torchrun sets 1 thread per process.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run(cmd: list[str], env: dict[str, str] = ENV, returncode: int = 0) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert done.returncode == returncode, done.stderr[-3000:]
    return done.stdout + done.stderr


def hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.png"))}


def headers(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text().splitlines()[0]) for p in sorted(out.glob("manifest*.jsonl"))}


@pytest.fixture(scope="module")
def reference(assets, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("one") / "out"
    assert "48 written, 0 kept of 48 files" in run(generate(assets, out))
    assert list(headers(out)) == ["manifest.jsonl"]
    assert len(set(hashes(out).values())) == N_PROMPTS  # the images differ: the comparisons below can fail
    return hashes(out)


@pytest.mark.parametrize("nproc", [2, 3])
def test_n_processes_write_the_bytes_of_one(assets, reference, tmp_path, nproc):
    out = tmp_path / "out"
    assert f"48 written, 0 kept of 48 files in {out} by {nproc} process(es)" in run(generate(assets, out, nproc))
    assert hashes(out) == reference
    manifests = headers(out)
    assert list(manifests) == [f"manifest.rank-{r:03d}-of-{nproc:03d}.jsonl" for r in range(nproc)]
    assert [h["world_size"] for h in manifests.values()] == [nproc] * nproc
    run_config = manifests[f"manifest.rank-000-of-{nproc:03d}.jsonl"]["identity"]["run_config"]
    assert run_config["weights_sha256"].startswith("random (preset name; torch.manual_seed(0)")
    records = read_run(out)[1]
    assert {f: rows[-1]["sha256"] for f, rows in records.items()} == reference


def worker_of_rank(parent: int, rank: int) -> int:
    """The pid of the process torchrun (`parent`) started as `rank`, from /proc (Linux)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):  # a process that ended meanwhile, or another user's
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    raise AssertionError(f"no rank {rank} among the children of {parent}")


def test_a_rank_killed_mid_run_resumes_with_another_process_count(assets, reference, tmp_path):
    out = tmp_path / "out"
    torchrun = subprocess.Popen(generate(assets, out, 3), cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not any(out.glob("*.png")):
            assert torchrun.poll() is None and time.monotonic() < deadline, "the run ended before writing an image"
            time.sleep(0.01)
        os.kill(worker_of_rank(torchrun.pid, 1), signal.SIGKILL)
        assert torchrun.wait(timeout=120) != 0  # torchrun stops the other ranks
    finally:
        if torchrun.poll() is None:
            torchrun.kill()
    assert 0 < len(hashes(out)) < N_PROMPTS, "the kill did not land mid-run"
    stdout = run(generate(assets, out, 2))
    written, kept = map(int, re.search(r"(\d+) written, (\d+) kept of 48 files .* by 2 process", stdout).groups())
    assert written + kept == N_PROMPTS and written > 0
    assert hashes(out) == reference, stdout
    assert not list(out.glob(".*.tmp"))
    refused = run(generate(assets, out), env={**ENV, "OMP_NUM_THREADS": "2"}, returncode=2)
    assert "run_config.cpu_threads: 1 then, 2 now" in refused


def test_a_second_command_into_a_held_folder_is_refused_with_one_line_and_writes_nothing(assets, tmp_path):
    out = tmp_path / "out"
    with folder_lock.writing(out, SINGLE_PROCESS):          # another command holds the folder
        done = subprocess.run(generate(assets, out), capture_output=True, text=True, cwd=REPO, timeout=300, env=ENV)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"{out} is being written by another sana-eval command (pid {os.getpid()} on " in done.stderr
    assert sorted(p.name for p in out.iterdir()) == [folder_lock.LOCK_NAME]


def test_two_commands_started_together_never_duplicate_work_or_records(assets, reference, tmp_path):
    out = tmp_path / "out"
    procs = [subprocess.Popen(generate(assets, out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for _ in range(2)]
    outcomes = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in outcomes) in ([0, 0], [0, 2])
    for rc, stdout, stderr in outcomes:   # refused while the other wrote, or started after it and kept all
        assert (rc == 2 and "is being written by another sana-eval command" in stderr) or \
            "written" in stdout and ("48 written, 0 kept" in stdout or "0 written, 48 kept" in stdout)
    records = read_run(out)[1]
    assert {f: [r["sha256"] for r in rows] for f, rows in records.items()} == {f: [h] for f, h in reference.items()}
    assert hashes(out) == reference


DEAD_RANK = """
import os, sys
from sana_eval.distributed import RankLostError, launched
with launched("cpu") as world:
    if world.rank == 1:
        os._exit(0)  # dies without a word, as a SIGKILLed process would
    try:
        world.barrier("the end of generation")
    except RankLostError as err:
        sys.exit(f"stopped: {err}")
"""


def test_a_dead_rank_stops_the_others_with_a_clear_error(tmp_path):
    """Under a launcher that does not stop the others itself (srun starting each process, say)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "SANA_EVAL_DIST_TIMEOUT": "20"}
    procs = [subprocess.Popen([sys.executable, "-c", DEAD_RANK], cwd=REPO, stderr=subprocess.PIPE, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    start = time.monotonic()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert time.monotonic() - start < 60
    assert procs[1].returncode == 0
    assert procs[0].returncode == 1
    assert "stopped: rank 0 of 2: not every process reached 'the end of generation' within 20 s" in errors[0]
    assert "rerun the same command to resume" in errors[0]


def test_launch_variables():
    assert launch_from_env({}) is None
    assert launch_from_env({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == (2, 4, 0)
    with pytest.raises(LaunchError, match="RANK, WORLD_SIZE set but LOCAL_RANK not"):
        launch_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match="need 0 <= RANK < WORLD_SIZE"):
        launch_from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(LaunchError, match="expected integers"):
        launch_from_env({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert timeout_from_env({"SANA_EVAL_DIST_TIMEOUT": "2.5"}) == 2.5
    with pytest.raises(LaunchError, match="SANA_EVAL_DIST_TIMEOUT='0': expected a positive number"):
        timeout_from_env({"SANA_EVAL_DIST_TIMEOUT": "0"})
    with launched("cpu", {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) as world:
        assert (world.rank, world.size, world.device, world.is_main) == (0, 1, "cpu", True)
        world.barrier("nothing")
        assert world.gather(7, "nothing") == [7]
    assert SINGLE_PROCESS.size == 1 and SINGLE_PROCESS.gather("x", "nothing") == ["x"]
