"""MJHQ-30K through the Hugging Face cache (docs/protocols.md §1.1): offline from a cache laid out as huggingface_hub
lays it out, a one-line error naming the download command when the cache lacks it, and a local folder still taken."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants as hub_constants
from PIL import Image

from metrics.base import MetricError
from metrics.mjhq import MJHQ_CATEGORIES, mjhq
from sana_eval.scoring.scorers import MJHQSource

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMIT = "4f9a3c1d2b7e8f60a1b2c3d4e5f60718293a4b5c"   # a hub commit hash: 40 hex digits
# one image per category, so that every category folder exists in the archive, in an order that is not sorted
IDS = [f"{i:02d}{hashlib.sha256(c.encode()).hexdigest()[:6]}" for i, c in enumerate(MJHQ_CATEGORIES)][::-1]


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _dataset_files() -> tuple[bytes, bytes, dict[str, bytes]]:
    """meta_data.json, the image archive (`mjhq30k_imgs/<category>/<id>.jpg`) and each id's JPEG bytes."""
    categories = dict(zip(IDS, reversed(MJHQ_CATEGORIES)))
    meta = json.dumps({i: {"category": categories[i], "prompt": f"prompt of {i}"} for i in IDS}).encode()
    jpegs = {i: _jpeg(k) for k, i in enumerate(IDS)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in IDS:
            z.writestr(f"mjhq30k_imgs/{categories[i]}/{i}.jpg", jpegs[i])
    return meta, buf.getvalue(), jpegs


def _hub_cache(root: Path) -> tuple[bytes, dict[str, bytes]]:
    """`root` laid out as huggingface_hub's cache after `hf download playgroundai/MJHQ-30K ... --repo-type dataset`:
    datasets--<owner>--<name>/{blobs/<hash>, refs/main, snapshots/<commit>/<file> -> ../../blobs/<hash>}."""
    meta, archive, jpegs = _dataset_files()
    repo = root / "datasets--playgroundai--MJHQ-30K"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, data in (("meta_data.json", meta), ("mjhq30k_imgs.zip", archive)):
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    return meta, jpegs


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 set after huggingface_hub was imported (its constants keep the import-time value), and the
    hub cache pointed at an empty folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HOME", str(tmp_path / "hf-home"))
    return tmp_path / "hub"


def test_offline_it_loads_from_the_hub_cache_in_a_fresh_process(tmp_path):
    """The environment as a user sets it before running: HF_HUB_OFFLINE=1, HF_HUB_CACHE, HF_HOME."""
    meta, jpegs = _hub_cache(tmp_path / "hub")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": str(REPO_ROOT)}
    code = ("import json; from metrics.mjhq import mjhq; s = mjhq(4); print(json.dumps({'revision': s.revision, "
            "'items': [[i.id, str(i.path), i.category, i.prompt] for i in s.items]}))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["revision"] == f"playgroundai/MJHQ-30K@{COMMIT}, meta-sha256:{hashlib.sha256(meta).hexdigest()}"
    assert [i for i, *_ in got["items"]] == IDS[:4]                       # meta_data.json's key order, first N
    extracted = tmp_path / "hf-home" / "sana-eval" / f"MJHQ-30K-{COMMIT}"
    for item_id, path, category, prompt in got["items"]:
        assert Path(path) == extracted / "mjhq30k_imgs" / category / f"{item_id}.jpg"
        assert Path(path).read_bytes() == jpegs[item_id] and prompt == f"prompt of {item_id}"


def test_the_archive_is_unzipped_once_into_the_cache_dir(offline, tmp_path):
    _hub_cache(offline)
    first = mjhq(cache_dir=tmp_path / "features")
    target = tmp_path / "features" / f"MJHQ-30K-{COMMIT}"
    assert [i.path.parent.parent for i in first.items] == [target / "mjhq30k_imgs"] * len(IDS)
    marker = target / "mjhq30k_imgs" / "art" / "marker"
    marker.write_text("a second unzip would not keep this")
    again = MJHQSource(cache_dir=str(tmp_path / "features"), limit=3).load()
    assert again.items == first.items[:3] and again.revision == first.revision and marker.is_file()
    assert [p.name for p in (tmp_path / "features").iterdir()] == [target.name]   # no temporary folder left


def test_a_missing_cache_says_what_to_run_once_online(offline):
    for source in (MJHQSource(), MJHQSource(cache_dir=str(offline.parent / "features"), limit=2)):
        with pytest.raises(MetricError) as err:
            source.load()
        message = str(err.value)
        assert "\n" not in message
        assert ("run once online `hf download playgroundai/MJHQ-30K meta_data.json mjhq30k_imgs.zip --repo-type "
                "dataset`, or pass a local MJHQ-30K folder (--mjhq DIR)") in message
        assert "HF_HUB_OFFLINE" in message and str(offline) in message
    assert not (offline.parent / "features").exists()


def test_a_cache_with_the_prompts_but_no_archive_names_the_archive(offline):
    _hub_cache(offline)
    (offline / "datasets--playgroundai--MJHQ-30K" / "snapshots" / COMMIT / "mjhq30k_imgs.zip").unlink()
    with pytest.raises(MetricError, match=r"mjhq30k_imgs\.zip of dataset playgroundai/MJHQ-30K@main not in the "):
        MJHQSource().load()


def test_a_local_folder_is_still_taken_offline_without_a_cache(offline, tmp_path):
    meta, archive, _ = _dataset_files()
    folder = tmp_path / "MJHQ-30K"
    folder.mkdir()
    (folder / "meta_data.json").write_bytes(meta)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        z.extractall(folder)
    images = MJHQSource(folder=str(folder), limit=2).load()
    assert [i.id for i in images.items] == IDS[:2]
    assert images.revision == f"meta-sha256:{hashlib.sha256(meta).hexdigest()}"


def test_a_corrupt_archive_in_the_cache_is_named_and_leaves_nothing_behind(offline, tmp_path):
    _hub_cache(offline)
    blob = (offline / "datasets--playgroundai--MJHQ-30K" / "snapshots" / COMMIT / "mjhq30k_imgs.zip").resolve()
    blob.write_bytes(b"PK\x03\x04 cut short by an interrupted download")
    with pytest.raises(MetricError, match=rf"snapshots/{COMMIT}/mjhq30k_imgs\.zip: not a readable zip .*; fetch it "
                                          r"again with `hf download .* --force-download`"):
        mjhq(cache_dir=tmp_path / "features")
    assert list((tmp_path / "features").iterdir()) == []


def test_a_local_folder_with_the_archive_still_zipped_says_so(tmp_path):
    meta, archive, _ = _dataset_files()
    (tmp_path / "meta_data.json").write_bytes(meta)          # what `hf download ... --local-dir DIR` leaves
    (tmp_path / "mjhq30k_imgs.zip").write_bytes(archive)
    with pytest.raises(MetricError, match=r"no folder with the MJHQ category folders .*; unzip mjhq30k_imgs\.zip"):
        mjhq(folder=tmp_path)
