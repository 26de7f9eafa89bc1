"""The processes torchrun starts: this process's rank and device, and the barriers between them.

`torchrun --nproc-per-node N -m sana_eval ...` (or any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK; across
nodes, torchrun's own rendezvous) starts one process per GPU; without those variables the world is this one
process and nothing is initialised. The process group uses NCCL on CUDA (device cuda:LOCAL_RANK) and gloo on CPU;
barriers and small objects always go over a gloo group, whose monitored barrier names a rank that does not
arrive, so a dead or stuck rank makes the others stop with a clear error after a bounded time instead of hanging.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TIMEOUT_ENV = "SANA_EVAL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0   # the longest a rank waits for the others at a barrier (a chunk takes seconds)
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class LaunchError(ValueError):
    """RANK/WORLD_SIZE/LOCAL_RANK or the timeout set inconsistently, or a device the rank cannot use."""


class RankLostError(ConnectionError):
    """Another process died or stopped answering; rerunning the same command resumes the work."""


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one launch (a single-process world by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str | None = None         # where this rank computes: cuda:LOCAL_RANK, cpu, or None (the caller's choice)
    timeout_s: float = DEFAULT_TIMEOUT_S
    group: Any = None                 # the gloo process group for barriers and objects; None in one process

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self, what: str) -> None:
        """Wait until every rank reaches `what`; a rank that does not within the timeout is named in the error."""
        if self.size > 1:
            self._guard(what, lambda: dist.monitored_barrier(self.group, timedelta(seconds=self.timeout_s),
                                                             wait_all_ranks=True))

    def gather(self, obj: Any, what: str) -> list[Any]:
        """`obj` of every rank, in rank order, on every rank (picklable, small)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        self._guard(what, lambda: dist.all_gather_object(out, obj, group=self.group))
        return out

    def _guard(self, what: str, call: Any) -> None:
        try:
            call()
        except RuntimeError as err:  # gloo reports a closed connection or a timeout as RuntimeError
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise RankLostError(f"rank {self.rank} of {self.size}: not every process reached '{what}' within "
                                f"{self.timeout_s:g} s ({detail}); a process died or hangs: rerun the same command "
                                f"to resume") from None


SINGLE_PROCESS = World()


def launch_from_env(environ: Mapping[str, str] = os.environ) -> tuple[int, int, int] | None:
    """(rank, world size, local rank) as torchrun sets them; None when none of the variables is set."""
    present = [k for k in LAUNCH_VARIABLES if k in environ]
    if not present:
        return None
    missing = [k for k in LAUNCH_VARIABLES if k not in environ]
    if missing:
        raise LaunchError(f"{', '.join(present)} set but {', '.join(missing)} not: start the processes with torchrun "
                          f"(or a launcher that sets {', '.join(LAUNCH_VARIABLES)})")
    try:
        rank, size, local_rank = (int(environ[k]) for k in LAUNCH_VARIABLES)
    except ValueError:
        raise LaunchError(f"RANK={environ['RANK']!r} WORLD_SIZE={environ['WORLD_SIZE']!r} "
                          f"LOCAL_RANK={environ['LOCAL_RANK']!r}: expected integers") from None
    if not (size >= 1 and 0 <= rank < size and local_rank >= 0):
        raise LaunchError(f"RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local_rank}: need 0 <= RANK < WORLD_SIZE")
    return rank, size, local_rank


def timeout_from_env(environ: Mapping[str, str] = os.environ) -> float:
    text = environ.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise LaunchError(f"{TIMEOUT_ENV}={text!r}: expected a positive number of seconds")
    return seconds


def rank_device(requested: str | None, local_rank: int) -> str:
    """None or "cuda": this rank's GPU (cuda:LOCAL_RANK) when CUDA is available, else the CPU; else as given."""
    if requested not in (None, "cuda"):
        return requested
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise LaunchError("--device cuda: no CUDA device is available")
        return "cpu"
    if local_rank >= torch.cuda.device_count():
        raise LaunchError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible: start "
                          f"at most one process per GPU (torchrun --nproc-per-node)")
    return f"cuda:{local_rank}"


@contextmanager
def launched(device: str | None = None, environ: Mapping[str, str] = os.environ) -> Iterator[World]:
    """The world this process was launched into, with its process group for the duration of the block.

    `device` is the one asked for (None: cuda:LOCAL_RANK when CUDA is available, else cpu).
    """
    launch = launch_from_env(environ)
    timeout_s = timeout_from_env(environ)
    if launch is None or launch[1] == 1:
        local_rank = launch[2] if launch else 0
        yield World(local_rank=local_rank, device=rank_device(device, local_rank), timeout_s=timeout_s)
        return
    rank, size, local_rank = launch
    where = rank_device(device, local_rank)
    on_cuda = where.startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(torch.device(where))
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group("nccl" if on_cuda else "gloo", timeout=timeout)
    try:
        group = dist.new_group(backend="gloo", timeout=timeout) if on_cuda else dist.group.WORLD
        yield World(rank, size, local_rank, where, timeout_s, group)
    finally:
        dist.destroy_process_group()
