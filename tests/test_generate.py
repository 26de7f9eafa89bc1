"""The resumable runner: seeds, atomic files, manifest, kill-and-rerun equality, sharding, refusal of other runs."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sana_eval.folder_lock import LOCK_NAME
from sana_eval.generation import prompt_sets as B
from sana_eval.generation.manifest import GenerationError, RunConfigMismatchError, read_run
from sana_eval.generation.runner import (
    GenerationSpec,
    generate_benchmark,
    parse_shard,
    run_generation,
    sample_seed,
)

GENEVAL_LINES = [
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
    '{"tag": "two_object", "include": [{"class": "cup", "count": 1}, {"class": "dog", "count": 1}], '
    '"prompt": "a photo of a cup and a dog"}',
    '{"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"}',
]
DPG_FILES = {"0.txt": "A red cube.", "1.txt": "Two birds.", "whoops3.txt": "A lamp."}
MJHQ = {"z9": {"category": "food", "prompt": "a cake"}, "a1": {"category": "logo", "prompt": "a logo"},
        "m5": {"category": "art", "prompt": "a painting"}, "b2": {"category": "people", "prompt": "a face"}}
CONFIG = {"weights": "tiny", "steps": 20, "cfg": 4.5, "sampler": "flow_dpm-solver", "resolution": 8}


def image_of(prompt: str, seed: int) -> np.ndarray:
    """A deterministic stand-in for the pipeline: pixels are a pure function of (prompt, seed)."""
    key = int.from_bytes(hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[:8], "big")
    return np.random.default_rng(key).integers(0, 256, (8, 8, 3), dtype=np.uint8)


def invariant_fn(prompts, seeds):
    return np.stack([image_of(p, s) for p, s in zip(prompts, seeds)])


def batch_dependent_fn(prompts, seeds):
    """Like GPU kernels whose last bits depend on the batch: pixels shift with the batch's size and first seed."""
    shift = (len(prompts) + seeds[0]) % 7
    return np.stack([image_of(p, s) + np.uint8(shift) for p, s in zip(prompts, seeds)])


class Killed(Exception):
    pass


def dies_after(n_images: int, fn):
    made = [0]

    def wrapped(prompts, seeds):
        if made[0] + len(prompts) > n_images:
            raise Killed
        made[0] += len(prompts)
        return fn(prompts, seeds)
    return wrapped


@pytest.fixture
def prompts(tmp_path) -> dict[str, B.PromptSet]:
    """Prompt sets read from tiny files in the official schemas (sha pins checked off: not the official files)."""
    (tmp_path / "g.jsonl").write_text("\n".join(GENEVAL_LINES) + "\n")
    (tmp_path / "dpg").mkdir()
    for name, text in DPG_FILES.items():
        (tmp_path / "dpg" / name).write_text(text)
    (tmp_path / "meta_data.json").write_text(json.dumps(MJHQ))
    ir = tmp_path / "ir.json"
    ir.write_text(json.dumps([{"id": "005695-0057", "prompt": "a vehicle"}, {"id": "005784-0093", "prompt": "space"}]))
    load = lambda name, path: B.get_benchmark(name).load(path, verify=False)  # noqa: E731
    return {"geneval": load("geneval", tmp_path / "g.jsonl"), "dpg": load("dpg", tmp_path / "dpg"),
            "mjhq30k": load("mjhq30k", tmp_path / "meta_data.json"), "imagereward": load("imagereward", ir)}


def tree(out: Path) -> dict[str, bytes]:
    """Every file the scorer sees (manifests and the writers' lock aside)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith("manifest") and p.name != LOCK_NAME}


def records(out: Path) -> dict[str, dict]:
    return {f: rows[-1] for f, rows in read_run(out)[1].items()}


def run(ps, out, fn=invariant_fn, **kw):
    kw.setdefault("run_config", CONFIG)
    kw.setdefault("progress", False)
    return run_generation(ps, out, fn, GenerationSpec(**kw))


def test_sample_seed_is_a_pure_function_of_seed_item_and_k():
    seeds = {sample_seed(s, i, k) for s in (0, 1) for i in ("00000", "00001", "0", "partiprompts97") for k in range(4)}
    assert len(seeds) == 32 and all(0 <= s < 2**63 for s in seeds)
    # docs/generation.md §2: the first 8 bytes of sha256("sana-eval/v1/{seed}/{item}/{k}"), big-endian, top bit
    # cleared; the hex digests below were computed with `sha256sum` on those strings.
    assert sample_seed(0, "00003", 2) == 0x6E76ECE3167FBE70
    assert sample_seed(7, "partiprompts97", 0) == 0x69D98B159AE3A1C5
    assert sample_seed(1, "0", 3) == 0xA76A21A960826BE3 - 2**63          # top bit set in the digest: cleared
    assert sample_seed(0, "00001", 0) == 0xAEF3586BD700B978 - 2**63


@pytest.mark.parametrize("name", ["geneval", "dpg", "mjhq30k", "imagereward"])
def test_files_and_manifest_follow_layout_and_seed_rule(prompts, tmp_path, name):
    ps, out, calls = prompts[name], tmp_path / "out", []

    def recording_fn(p, s):
        calls.append((list(p), list(s)))
        return invariant_fn(p, s)

    summary = run(ps, out, recording_fn, seed=7, batch_size=2)
    recs = records(out)
    n_images = sum(it.n_images for it in ps.items)
    assert summary.written == len(recs) and summary.images_generated == n_images and summary.kept == 0
    assert all(len(p) <= 2 for p, _ in calls)
    assert sorted(s for _, seeds in calls for s in seeds) == sorted(
        sample_seed(7, it.id, k) for it in ps.items for k in range(it.n_images))
    by_item = {it.id: it for it in ps.items}
    for path, rec in recs.items():
        data = (out / path).read_bytes()
        assert rec["sha256"] == hashlib.sha256(data).hexdigest()
        it = by_item[rec["item"]]
        assert rec["prompt"] == it.prompt and rec["seed"] == [sample_seed(7, it.id, k) for k in rec["k"]]
        expected = [image_of(it.prompt, s) for s in rec["seed"]]
        with Image.open(io.BytesIO(data)) as img:
            pixels = np.asarray(img.convert("RGB"))
        if name == "dpg":  # 2x2 grid, no padding, row-major tiles
            assert path == f"{it.id}.png" and pixels.shape == (16, 16, 3)
            tiles = [pixels[:8, :8], pixels[:8, 8:], pixels[8:, :8], pixels[8:, 8:]]
            for tile, exp in zip(tiles, expected):
                np.testing.assert_array_equal(tile, exp)
        elif name == "geneval":
            assert path == f"{it.id}/samples/{rec['k'][0]:05d}.png"
            np.testing.assert_array_equal(pixels, expected[0])
        else:  # JPEG like SANA: PIL defaults on the same pixels
            buf = io.BytesIO()
            Image.fromarray(expected[0]).save(buf, format="JPEG")
            assert data == buf.getvalue()
            assert path == (f"{it.id}.jpg" if it.n_images == 1 else f"{it.id}_{rec['k'][0]}.jpg")
    if name == "geneval":
        for i, line in enumerate(GENEVAL_LINES):
            assert (out / f"{i:05d}" / "metadata.jsonl").read_text() == line


@pytest.mark.parametrize("fn", [invariant_fn, batch_dependent_fn], ids=["invariant", "batch-dependent"])
def test_killed_at_any_image_then_rerun_equals_an_uninterrupted_run(prompts, tmp_path, fn):
    ps = prompts["geneval"]  # 12 images
    clean = tmp_path / "clean"
    run(ps, clean, fn, batch_size=3)
    for n in range(12):
        out = tmp_path / f"killed{n}"
        with pytest.raises(Killed):
            run(ps, out, dies_after(n, fn), batch_size=3)
        summary = run(ps, out, fn, batch_size=3)
        assert summary.kept == 3 * (n // 3) and summary.kept + summary.written == 12
        assert tree(out) == tree(clean) and records(out) == records(clean), f"killed after {n} images"


def test_killed_while_writing_a_batch_then_rerun_equals_an_uninterrupted_run(prompts, tmp_path):
    """A kill after image n is on disk but before its batch reached the manifest, for every n."""
    ps = prompts["geneval"]
    clean = tmp_path / "clean"
    run(ps, clean, batch_dependent_fn, batch_size=3)
    order = [json.loads(line)["file"] for line in (clean / "manifest.jsonl").read_text().splitlines()[1:]]
    for n in range(len(order) + 1):
        out = tmp_path / f"killed{n}"
        out.mkdir()
        for i in range(len(GENEVAL_LINES)):
            (out / f"{i:05d}").mkdir()
            (out / f"{i:05d}" / "metadata.jsonl").write_bytes((clean / f"{i:05d}" / "metadata.jsonl").read_bytes())
        for rel in order[:n]:
            (out / rel).parent.mkdir(exist_ok=True)
            (out / rel).write_bytes((clean / rel).read_bytes())
        lines = (clean / "manifest.jsonl").read_text().splitlines(keepends=True)
        (out / "manifest.jsonl").write_text("".join(lines[:1 + 3 * (n // 3)]))  # whole batches only
        run(ps, out, batch_dependent_fn, batch_size=3)
        assert tree(out) == tree(clean) and records(out) == records(clean), f"killed after writing {n} images"


def test_dpg_grids_complete_atomically_and_resume(prompts, tmp_path):
    ps = prompts["dpg"]
    clean, out = tmp_path / "clean", tmp_path / "out"
    run(ps, clean, batch_size=1)
    with pytest.raises(Killed):
        run(ps, out, dies_after(6, invariant_fn), batch_size=1)  # dies inside the second grid
    assert sorted(tree(out)) == ["0.png"]
    # another batch size would make the rest in other batches: refused before anything is written
    manifest = (out / "manifest.jsonl").read_bytes()
    with pytest.raises(RunConfigMismatchError, match=r"with --batch-size 1, now 4: .* rerun with --batch-size 1,"):
        run(ps, out, batch_size=4)
    assert sorted(tree(out)) == ["0.png"] and (out / "manifest.jsonl").read_bytes() == manifest
    assert run(ps, out, batch_size=1).written == 2
    assert tree(out) == tree(clean)


def test_corrupt_or_unrecorded_files_are_regenerated(prompts, tmp_path):
    ps = prompts["mjhq30k"]
    clean, out = tmp_path / "clean", tmp_path / "out"
    run(ps, clean, batch_dependent_fn, batch_size=2)
    run(ps, out, batch_dependent_fn, batch_size=2)
    (out / "z9.jpg").write_bytes((out / "z9.jpg").read_bytes()[:100])  # truncated
    (out / "m5.jpg").unlink()  # missing
    (out / ".a1.jpg.abc123.tmp").write_bytes(b"partial")  # a temp file left by a kill
    manifest = out / "manifest.jsonl"  # the last append cut short: b2.jpg is on disk but not recorded
    raw = manifest.read_bytes()
    manifest.write_bytes(raw[:raw.rstrip(b"\n").rfind(b"\n") + 1] + b'{"file": "b2.j')
    summary = run(ps, out, batch_dependent_fn, batch_size=2)
    assert (summary.kept, summary.written) == (1, 3)
    assert tree(out) == tree(clean) and records(out) == records(clean)
    lines = manifest.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # the cut line is gone


def test_rerun_with_another_config_is_refused(prompts, tmp_path):
    ps, out = prompts["imagereward"], tmp_path / "out"
    run(ps, out, limit=1)
    with pytest.raises(RunConfigMismatchError, match=r"run_config\.steps: 20 then, 21 now"):
        run(ps, out, run_config={**CONFIG, "steps": 21})
    with pytest.raises(RunConfigMismatchError, match=r"seed: 0 then, 1 now"):
        run(ps, out, seed=1)
    with pytest.raises(RunConfigMismatchError, match=r"layout"):
        run(ps, out, layout="imagereward-png")
    other = dataclasses.replace(ps, items=ps.items[::-1])
    other.__dict__.pop("fingerprint", None)
    with pytest.raises(RunConfigMismatchError, match=r"benchmark\.items_sha256"):
        run(other, out)
    summary = run(ps, out)  # a larger limit with the same config continues the run
    assert (summary.kept, summary.written) == (10, 10)


def test_shards_and_batch_sizes_make_the_same_images(prompts, tmp_path):
    ps = prompts["geneval"]
    ref = tmp_path / "ref"
    run(ps, ref, batch_size=1)
    sharded = tmp_path / "sharded"
    for i in range(3):
        run(ps, sharded, batch_size=5, shard=f"{i}/3")
    assert [p.name for p in sorted(sharded.glob("manifest*"))] == [f"manifest.shard-00{i}-of-003.jsonl"
                                                                   for i in range(3)]
    summary = run(ps, sharded, batch_size=1)  # another batch size, allowed: everything is already there
    assert (summary.kept, summary.written) == (12, 0)
    assert tree(sharded) == tree(ref) and records(sharded) == records(ref)
    assert parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "1", "a/b"):
        with pytest.raises(GenerationError, match="shard"):
            parse_shard(bad)


@pytest.mark.parametrize("name", ["geneval", "dpg"])
def test_encoding_workers_leave_bytes_and_manifest_order_unchanged(prompts, tmp_path, name):
    """Files are encoded and written by worker threads while the next chunk generates; rows keep a serial order."""
    ps = prompts[name]
    serial, pooled = tmp_path / "serial", tmp_path / "pooled"
    run(ps, serial, batch_dependent_fn, batch_size=4, encode_workers=1)
    run(ps, pooled, batch_dependent_fn, batch_size=4, encode_workers=3)
    lines = {out: (out / "manifest.jsonl").read_text().splitlines() for out in (serial, pooled)}
    assert lines[serial][1:] == lines[pooled][1:] and len(lines[serial]) > 2
    assert tree(serial) == tree(pooled)


def test_bad_generate_fn_output_and_arguments(prompts, tmp_path):
    ps = prompts["mjhq30k"]
    with pytest.raises(GenerationError, match=r"float32 \(1, 8, 8, 3\); expected uint8"):
        run(ps, tmp_path / "a", lambda p, s: np.zeros((len(p), 8, 8, 3), np.float32))
    with pytest.raises(GenerationError, match="returned 1 images for 2 prompts"):
        run(ps, tmp_path / "b", lambda p, s: invariant_fn(p[:1], s[:1]), batch_size=2)
    with pytest.raises(GenerationError, match="L PIL image"):
        run(ps, tmp_path / "c", lambda p, s: [Image.new("L", (8, 8)) for _ in p])
    with pytest.raises(GenerationError, match="not one mjhq30k scorers read"):
        run(ps, tmp_path / "d", layout="dpg")
    with pytest.raises(GenerationError, match="JSON"):
        run(ps, tmp_path / "e", run_config={"dtype": object()})
    with pytest.raises(GenerationError, match="encode_workers must be >= 1"):
        run(ps, tmp_path / "f", encode_workers=0)


def test_generate_benchmark_by_name_with_pil_output_and_progress(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    pil_fn = lambda p, s: [Image.fromarray(image_of(x, y)) for x, y in zip(p, s)]  # noqa: E731
    summary = generate_benchmark(f"prompts:{tmp_path / 'p.txt'}", tmp_path / "out", pil_fn,
                                 GenerationSpec(CONFIG, seed=3))
    assert summary.written == 2 and sorted(tree(tmp_path / "out")) == ["00000.png", "00001.png"]
    with Image.open(tmp_path / "out" / "00001.png") as img:
        np.testing.assert_array_equal(np.asarray(img), image_of("a dog", sample_seed(3, "00001", 0)))
    assert "prompts:p.txt" in capsys.readouterr().err  # tqdm bar
