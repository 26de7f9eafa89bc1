"""The two copies of `atomic_path` and `sha256_file` (model.weights_io and metrics.base: model and metrics may not
import each other) behave the same, and `sana_eval.io` writes through them: same hashes, same bytes, the file mode
a plain open() gives, and no temporary file left after success or after an exception inside the `with`."""
from __future__ import annotations

import hashlib
import os
import stat

import pytest

from metrics import base as metrics_base
from model import weights_io
from sana_eval import io as sana_io

ATOMIC = {"model.weights_io": weights_io.atomic_path, "metrics.base": metrics_base.atomic_path}
SHA256 = {"model.weights_io": weights_io.sha256_file, "metrics.base": metrics_base.sha256_file}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 24) + 7])  # empty, small, and over one 16 MiB read chunk
def test_both_sha256_file_give_hashlib_sha256(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert {name: fn(path) for name, fn in SHA256.items()} == {name: want for name in SHA256}
    assert {fn(path, chunk=7) for fn in SHA256.values()} == {want}


def test_both_atomic_paths_write_the_same_bytes_with_the_same_mode(tmp_path, umask_022):
    data = b"\x00\x01sana\n" * 1000
    modes = {}
    for name, atomic in ATOMIC.items():
        target = tmp_path / name / "sub" / "out.bin"               # missing parent folders are made
        with atomic(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
            assert not target.exists()                             # nothing at the target until the block ends
            tmp.write_bytes(data)
        assert target.read_bytes() == data
        modes[name] = stat.S_IMODE(target.stat().st_mode)
        assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    assert modes == {name: 0o644 for name in ATOMIC}                # what open(path, "w") makes under umask 022


def test_mode_follows_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        for name, atomic in ATOMIC.items():
            with atomic(tmp_path / f"{name}.txt") as tmp:
                tmp.write_text("x")
            assert stat.S_IMODE((tmp_path / f"{name}.txt").stat().st_mode) == 0o600, name
    finally:
        os.umask(old)


@pytest.mark.parametrize("name", list(ATOMIC))
def test_an_exception_in_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path, name):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with ATOMIC[name](target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    # A block that fails before writing anything leaves no target and no temp either.
    fresh = tmp_path / "fresh.json"
    with pytest.raises(KeyError):
        with ATOMIC[name](fresh):
            raise KeyError("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("name", list(ATOMIC))
def test_a_block_that_removes_its_temp_is_an_error_and_leaves_nothing(tmp_path, name):
    with pytest.raises(FileNotFoundError):
        with ATOMIC[name](tmp_path / "out.txt") as tmp:
            tmp.unlink()
    assert list(tmp_path.iterdir()) == []


def test_sana_eval_io_writes_whole_files_with_the_same_mode(tmp_path, umask_022):
    text = sana_io.write_text(tmp_path / "a" / "t.md", "ü\n")
    blob = sana_io.write_bytes(tmp_path / "a" / "b.bin", b"\xff\x00")
    assert text.read_bytes() == "ü\n".encode() and blob.read_bytes() == b"\xff\x00"
    assert {stat.S_IMODE(p.stat().st_mode) for p in (text, blob)} == {0o644}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin", "t.md"]


def test_save_figure_writes_a_png_and_nothing_when_the_plot_fails(tmp_path, monkeypatch):
    from matplotlib.figure import Figure  # heavy, and only this test needs it

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    path = sana_io.save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = path.read_bytes()

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        sana_io.save_figure(fig, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
