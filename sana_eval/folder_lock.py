"""One launch writes an output folder at a time (docs/generation.md §5): the main process of a launch holds an
exclusive lock on `<folder>/.sana-eval.lock` while its processes write; a second, independent command into the
same folder is refused with one line instead of duplicating work and manifest records. The operating system drops
the lock when its holder dies (even by SIGKILL), so a killed run never leaves a stale lock behind; on a shared
filesystem it needs working POSIX locks (NFSv4, Lustre and GPFS have them)."""
from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sana_eval.distributed import World

LOCK_NAME = ".sana-eval.lock"


class FolderBusyError(OSError):
    """Another command is writing the folder."""


def _try_lock(folder: Path) -> tuple[int | None, str | None]:
    """(open descriptor holding the lock, None), or (None, why not)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        return None, (f"{folder} is being written by another sana-eval command ({holder}); wait for it to finish, "
                      f"or write to another folder")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    return fd, None


_held: set[Path] = set()      # folders this process holds: a command holds its folder early (before loading models)
                              # and the runner inside it asks again


@contextmanager
def writing(folder: Path, world: World) -> Iterator[None]:
    """Hold `folder` for this launch; every process of `world` enters this alike and all are refused together."""
    key = folder.resolve()
    if key in _held:
        yield
        return
    fd, why = _try_lock(folder) if world.is_main else (None, None)
    refused = world.gather(why, "the output folder's lock")[0]
    if refused:
        raise FolderBusyError(refused)
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        if fd is not None:
            os.close(fd)      # closing the descriptor releases the lock
