"""Where a result came from: code version, software, hardware, seeds, config and weight hashes
(docs/architecture.md §4.3).

Nothing personal is recorded: no host name, user name, or home path.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from model.weights_io import sha256_file
from sana_eval.paths import REPO_ROOT

PACKAGES = ("torch", "numpy", "transformers", "safetensors", "huggingface_hub", "tqdm", "pillow", "diffusers")
DIST = "sana-eval"                         # this project's distribution name (pyproject.toml)


@dataclass(frozen=True)
class Provenance:
    git_commit: str | None                 # the checkout's commit; installed: the build's, when known; else None
    git_dirty: bool
    utc_time: str                          # ISO 8601, seconds, "Z"
    python: str
    packages: dict[str, str | None]        # distribution -> version (None: not installed)
    platform: str                          # OS and architecture, e.g. "Linux-6.8-x86_64"
    cpu: str
    gpus: tuple[str, ...]
    gpu_driver: str | None
    cuda: str | None                       # the CUDA runtime torch was built with
    cudnn: str | None
    seeds: dict[str, int] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    weights_sha256: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    package_version: str | None = None     # the installed sana-eval's version (importlib.metadata)
    git_checkout: bool = True              # False: an installed package (`pip install .`), no git checkout found

    @property
    def short_commit(self) -> str:
        return self.git_commit[:8] if self.git_commit else "nocommit"

    @property
    def code(self) -> str:
        return code_version(self.to_dict())

    def to_dict(self) -> dict:
        return {**asdict(self), "gpus": list(self.gpus)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Provenance:
        return cls(**{**data, "gpus": tuple(data["gpus"])})


def code_version(provenance: Mapping) -> str:
    """The code version in words, from a provenance dict (files written before the install fields read as a
    checkout): the checkout's commit and whether dirty, or the installed package's version and build commit."""
    commit = provenance.get("git_commit")
    short = f"`{commit[:8]}`" if commit else "`nocommit`"
    if provenance.get("git_checkout", True):
        return f"commit {short}{' (dirty)' if provenance.get('git_dirty') else ''}"
    built = f"built from commit {short}" if commit else "build commit unknown"
    return f"{DIST} {provenance.get('package_version') or '?'} installed, no git checkout ({built})"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


COMMIT_ENV = "SANA_EVAL_GIT_COMMIT"  # for a copied tree without .git (e.g. on a rented GPU machine)


def in_checkout() -> bool:
    """Whether the code runs from a git checkout rather than an installed package. Asked of the tree itself, not of
    git: an installed package inside a checkout (a venv in the repository) would otherwise take that checkout's
    commit."""
    return (REPO_ROOT / ".git").exists()


def _distribution() -> importlib.metadata.Distribution | None:
    try:
        return importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def build_commit() -> str | None:
    """The commit the installed package was built from, where its metadata says: pip's `direct_url.json` of a
    `pip install git+URL@rev` (PEP 610), else a `+g<sha>` local version label (setuptools-scm's); None otherwise."""
    dist = _distribution()
    if dist is None:
        return None
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except json.JSONDecodeError:
        direct = {}
    commit = direct.get("vcs_info", {}).get("commit_id") if isinstance(direct, dict) else None
    if commit:
        return str(commit)
    label = re.search(r"[+.]g([0-9a-f]{7,40})\b", dist.version)
    return label.group(1) if label else None


def git_state() -> tuple[str | None, bool]:
    """(commit, dirty); a checkout whose state git cannot report counts as dirty. $SANA_EVAL_GIT_COMMIT names the
    commit of a copied tree (whose own git history may be missing or stale) and wins over git; such a tree is
    reported dirty unless SANA_EVAL_GIT_DIRTY=0. An installed package (no checkout): its build's commit, never
    dirty."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV], os.environ.get("SANA_EVAL_GIT_DIRTY", "1") != "0"
    if not in_checkout():
        return build_commit(), False
    commit = _git("rev-parse", "--verify", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=normal")
    return commit, status is None or bool(status)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_SMI_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
               "power.limit", "temperature.gpu", "persistence_mode")


def nvidia_smi() -> dict[str, str]:
    """GPU 0's name, driver, current and maximum clocks (MHz), power limit and temperature; {} without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    if not lines:
        return {}
    return dict(zip(_SMI_FIELDS, (v.strip() for v in lines[0].split(","))))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect(*, seeds: Mapping[str, int] | None = None, config: Mapping | None = None,
            weights: Mapping[str, str | os.PathLike] | None = None) -> Provenance:
    """Provenance of a run on this machine; `weights` maps a name to a file whose sha256 is recorded."""
    commit, dirty = git_state()
    cuda_ok = torch.cuda.is_available()
    return Provenance(
        git_commit=commit, git_dirty=dirty,
        utc_time=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        python=platform.python_version() + f" ({sys.implementation.name})",
        packages={name: _version(name) for name in PACKAGES},
        platform=f"{platform.system()}-{platform.release()}-{platform.machine()}",
        cpu=_cpu_name(),
        gpus=tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if cuda_ok else (),
        gpu_driver=nvidia_smi().get("driver_version") if cuda_ok else None,
        cuda=torch.version.cuda,
        cudnn=str(torch.backends.cudnn.version()) if cuda_ok else None,
        seeds=dict(seeds or {}),
        config=dict(config or {}),
        weights_sha256={name: sha256_file(path) for name, path in (weights or {}).items()},
        package_version=dist.version if (dist := _distribution()) else None,
        git_checkout=bool(os.environ.get(COMMIT_ENV)) or in_checkout(),
    )


def default_version(provenance: Provenance) -> str:
    """Report folder name: `<UTC date>-<short git sha>[-dirty]` from a checkout; from an installed package
    `<UTC date>-v<version>[-<short build sha>]`."""
    date = provenance.utc_time[:10]
    if not provenance.git_checkout:
        version = re.sub(r"[^A-Za-z0-9._-]", "_", provenance.package_version or "unknown")  # a folder name: no '+'
        return f"{date}-v{version}" + (f"-{provenance.short_commit}" if provenance.git_commit else "")
    return f"{date}-{provenance.short_commit}{'-dirty' if provenance.git_dirty else ''}"
