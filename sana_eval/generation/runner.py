"""Resumable image generation for a benchmark: per-image seeds, atomic files, manifests, work spread over processes.

The images on disk plus `manifest*.jsonl` (read and written by generation/manifest.py) are the contract between
generation and scoring (docs/generation.md).
Guarantees:
- every image's seed is `sample_seed(seed, item id, k)`: independent of batch size, order, shard and GPU count
  (docs/generation.md §2; SANA's own launcher seeds one generator per shard instead);
- batches are fixed chunks of the benchmark's files, the same whatever the number of processes or shards (ranks
  and shards only choose which chunks they make), and a resumed run regenerates a whole chunk, so 1 or N processes,
  and a run killed at any moment and rerun with any number of processes, write the same bytes as one uninterrupted
  process even where `generate_fn`'s numerics depend on the batch it sees (GPU kernels);
- an image is kept on rerun only if its bytes hash to what the manifest recorded; a rerun with a different
  configuration into the same folder is refused.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image
from tqdm.auto import tqdm

from sana_eval import folder_lock
from sana_eval.distributed import SINGLE_PROCESS, World
from sana_eval.generation.layouts import Layout, OutputFile, get_layout
from sana_eval.generation.manifest import (
    MANIFEST_SCHEMA,
    GenerationError,
    ManifestWriter,
    RunConfigMismatchError,
    canon,
    file_sha256,
    first_difference,
    is_recorded,
    manifest_name,
    read_run,
    refuse_other_batch_sizes,
    remove_stale_temps,
)
from sana_eval.generation.prompt_sets import Benchmark, Item, PromptSet, get_benchmark
from sana_eval.generation.subsets import subset_items
from sana_eval.io import write_bytes

GenerateFn = Callable[[list[str], list[int]], torch.Tensor | np.ndarray | Sequence[Any]]
SEED_RULE = "sha256('sana-eval/v1/{seed}/{item_id}/{k}')[:8] big-endian & (2**63 - 1)"


@dataclass(frozen=True)
class RunSummary:
    out_dir: Path
    manifest: Path
    files: int               # files this run is responsible for (after limit and shard)
    kept: int                # already on disk with the recorded hash
    written: int             # written by this call (by all its processes)
    images_generated: int    # images `generate_fn` made (a resumed chunk regenerates its kept files too)
    seconds: float
    world_size: int = 1      # processes that shared the work


def sample_seed(seed: int, item_id: str, k: int) -> int:
    """The noise seed of image `k` of item `item_id`: a pure function of the three (docs/generation.md §2)."""
    digest = hashlib.sha256(f"sana-eval/v1/{seed}/{item_id}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """`"i/n"` (0 <= i < n) -> (i, n); None stays None."""
    if text is None or isinstance(text, tuple):
        shard = text
    else:
        try:
            i, n = (int(part) for part in text.split("/"))
            shard = (i, n)
        except ValueError:
            raise GenerationError(f"shard {text!r}: expected i/n, e.g. 0/8") from None
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise GenerationError(f"shard {shard[0]}/{shard[1]}: need 0 <= i < n")
    return shard


def select_shard(chunks: Sequence[range], shard: tuple[int, int] | None) -> list[range]:
    """Chunks whose position in the benchmark order is i mod n: balanced, and the same on every machine."""
    if shard is None:
        return list(chunks)
    i, n = shard
    return [c for pos, c in enumerate(chunks) if pos % n == i]


def _as_images(out: Any, n: int) -> list[np.ndarray]:
    """`generate_fn` output -> n arrays (H, W, 3) uint8."""
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    if isinstance(out, np.ndarray):
        if out.dtype != np.uint8 or out.ndim != 4 or out.shape[-1] != 3:
            raise GenerationError(f"generate_fn returned {out.dtype} {tuple(out.shape)}; expected uint8 (B, H, W, 3)")
        images = list(out)
    else:
        images = []
        for img in out:
            if isinstance(img, Image.Image) and img.mode != "RGB":
                raise GenerationError(f"generate_fn returned a {img.mode} PIL image; expected RGB")
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
                raise GenerationError(f"generate_fn returned an image {img.dtype} {tuple(img.shape)}; "
                                      f"expected uint8 (H, W, 3)")
            images.append(img)
    if len(images) != n:
        raise GenerationError(f"generate_fn returned {len(images)} images for {n} prompts")
    return images


@dataclass(frozen=True)
class GenerationSpec:
    """What a run makes besides the model: the run's identity (run_config, seed, layout) and which of its files.

    `run_config` (JSON) names everything that decides the pixels (weights, sampler, steps, cfg, resolution, dtype,
    ...); a folder holds one run, so a rerun with another run_config, seed or layout is refused.
    """

    run_config: dict[str, Any]
    seed: int = 0
    limit: int | None = None               # the benchmark's first `limit` items; None: all
    subset: int | None = None              # `subset` items keeping the category mix (generation/subsets.py)
    batch_size: int = 1                    # prompts per `generate_fn` call
    shard: str | tuple[int, int] | None = None   # "i/n": the chunks whose position is i mod n
    layout: str | None = None              # None: the benchmark's default layout
    data: str | os.PathLike | None = None  # prompt file or folder when given a Benchmark; ignored for a PromptSet
    progress: bool = True                  # tqdm bar on stderr
    encode_workers: int = 4                # threads encoding and writing files while the next batch generates


@dataclass(frozen=True)
class CheckedRun:
    """A run's prompts, layout and shard, after every check that needs no file of the output folder."""

    prompts: PromptSet
    layout: Layout
    shard: tuple[int, int] | None


def check_run(benchmark: Benchmark | PromptSet, spec: GenerationSpec) -> CheckedRun:
    """Refuse a spec that cannot run, before anything is written."""
    prompts = benchmark if isinstance(benchmark, PromptSet) else benchmark.load(spec.data)
    bench = prompts.benchmark
    lay: Layout = get_layout(spec.layout or bench.layout)
    if lay.name not in bench.layouts:
        raise GenerationError(f"layout {lay.name!r} is not one {bench.name} scorers read ({', '.join(bench.layouts)})")
    if spec.batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {spec.batch_size}")
    if spec.encode_workers < 1:
        raise GenerationError(f"encode_workers must be >= 1, got {spec.encode_workers}")
    if spec.limit is not None and spec.limit < 0:
        raise GenerationError(f"limit must be >= 0, got {spec.limit}")
    if spec.subset is not None and (spec.subset < 1 or spec.limit is not None):
        raise GenerationError(f"subset must be >= 1 and cannot be combined with limit (got subset {spec.subset}, "
                              f"limit {spec.limit})")
    shard = parse_shard(spec.shard)
    try:
        canon(spec.run_config)
    except (TypeError, ValueError) as err:
        raise GenerationError(f"run_config is not JSON-serialisable ({err})") from None
    return CheckedRun(prompts, lay, shard)


def run_generation(benchmark: Benchmark | PromptSet, out_dir: str | os.PathLike, generate_fn: GenerateFn,
                   spec: GenerationSpec, world: World = SINGLE_PROCESS) -> RunSummary:
    """Make every image of `benchmark` (first `spec.limit` items, `spec.shard`) that `out_dir` does not hold yet.

    `generate_fn(prompts, seeds)` returns one uint8 (H, W, 3) image per prompt (a (B, H, W, 3) tensor/array or
    a list of RGB PIL images); it is called with at most `spec.batch_size` prompts. Every process of `world`
    calls this with the same arguments; each makes every `world.size`-th chunk still to do. The folder is held
    against other commands meanwhile (sana_eval/folder_lock.py).
    """
    checked = check_run(benchmark, spec)
    with folder_lock.writing(Path(out_dir), world):
        return fill_folder(checked, Path(out_dir), generate_fn, spec, world)


def fill_folder(checked: CheckedRun, out_dir: Path, generate_fn: GenerateFn, spec: GenerationSpec,
                world: World) -> RunSummary:
    """`run_generation`'s work, once the run is checked and the folder held."""
    start = time.perf_counter()
    run_config, seed, limit, batch_size = spec.run_config, spec.seed, spec.limit, spec.batch_size
    prompts, lay, shard = checked.prompts, checked.layout, checked.shard
    bench = prompts.benchmark
    identity = {"schema": MANIFEST_SCHEMA, "seed_rule": SEED_RULE, "seed": seed, "layout": lay.protocol(),
                "benchmark": {"name": bench.name, "version": bench.version, "items_sha256": prompts.fingerprint},
                "run_config": run_config}
    old_identity, records = read_run(out_dir)
    if old_identity and canon(old_identity) != canon(identity):
        raise RunConfigMismatchError(f"{out_dir} holds a different run ({first_difference(old_identity, identity)});"
                                     f" use another output folder")
    header = {"kind": "header", "identity": identity, "source": {"origin": prompts.origin, "sha256": prompts.sha256},
              "limit": limit, "subset": spec.subset, "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
              "batch_size": batch_size,
              "world_size": world.size, "rank": world.rank,
              "encoder": f"Pillow {PIL.__version__}", "created": datetime.now(UTC).isoformat()}
    manifest = out_dir / manifest_name(shard, world)

    items = subset_items(prompts.items[:limit], spec.subset)
    all_files = [(it, f) for it in items for f in lay.files(it)]
    # Fixed chunks of the benchmark's files, whatever the process count: a resumed chunk is remade whole, so
    # generate_fn sees the same batches.
    per_chunk = max(1, batch_size // max((len(f.ks) for _, f in all_files), default=1))
    chunks = select_shard([range(s, min(s + per_chunk, len(all_files)))
                           for s in range(0, len(all_files), per_chunk)], shard)
    files = {j: (*all_files[j], [sample_seed(seed, all_files[j][0].id, k) for k in all_files[j][1].ks])
             for c in chunks for j in c}
    done = {j: is_recorded(out_dir, records.get(f.path, ()), it, f, seeds) for j, (it, f, seeds) in files.items()}
    todo = [c for c in chunks if not all(done[j] for j in c)]
    if todo:  # every rank refuses alike: all read the same manifests before the barrier below
        refuse_other_batch_sizes(out_dir, batch_size)
    remove_stale_temps(out_dir, [manifest.name])
    if world.is_main:  # before any rank writes: another rank's temps are never taken for a killed run's
        sidecars = {rel: data for it, _, _ in files.values() for rel, data in lay.sidecars(it).items()}
        remove_stale_temps(out_dir, [f.path for _, f, _ in files.values()] + list(sidecars))
        for rel, data_bytes in sidecars.items():
            if file_sha256(out_dir / rel) != hashlib.sha256(data_bytes).hexdigest():
                write_bytes(out_dir / rel, data_bytes)
    world.barrier("the start of generation")
    writer = ManifestWriter(manifest, header)

    mine = todo[world.rank::world.size]
    written = generated = 0
    # Encoding a 1024 px PNG takes longer than the denoising of its batch: worker threads (Pillow and hashlib
    # release the GIL) encode and write a chunk while the next one generates. A chunk's manifest rows are
    # appended, in chunk order, once all its files are on disk, so the manifest is that of a serial run.
    pending: deque[list[Future[dict[str, Any]]]] = deque()
    with tqdm(total=sum(len(files[j][2]) for c in mine for j in c), desc=bench.name, unit="img",
              disable=not (spec.progress and world.is_main), dynamic_ncols=True) as bar, \
            ThreadPoolExecutor(spec.encode_workers, thread_name_prefix="encode") as pool:
        try:
            for c in mine:
                flat = [(files[j][0].prompt, sd) for j in c for sd in files[j][2]]
                images: list[np.ndarray] = []
                for s in range(0, len(flat), batch_size):
                    part = flat[s:s + batch_size]
                    images += _as_images(generate_fn([p for p, _ in part], [sd for _, sd in part]), len(part))
                    bar.update(len(part))
                generated += len(images)
                jobs = []
                for j in c:
                    own, images = images[:len(files[j][1].ks)], images[len(files[j][1].ks):]
                    if not done[j]:
                        jobs.append(pool.submit(_write_file, out_dir, lay, *files[j], own))
                pending.append(jobs)
                if len(pending) > 1:  # at most one chunk waits on the workers while the next generates
                    written += _record(writer, pending.popleft())
        finally:  # a failing generate_fn still records the chunks made before it, as a serial run would
            while pending:
                written += _record(writer, pending.popleft())
    world.barrier("the end of generation")
    counts = np.sum(world.gather((written, generated), "the end of generation"), axis=0)
    return RunSummary(out_dir, writer.path, len(files), sum(done.values()), int(counts[0]), int(counts[1]),
                      time.perf_counter() - start, world.size)


def _write_file(out_dir: Path, lay: Layout, it: Item, f: OutputFile, seeds: list[int],
                images: list[np.ndarray]) -> dict[str, Any]:
    """Encode and write one file atomically; its manifest row."""
    data_bytes = lay.render(images)
    write_bytes(out_dir / f.path, data_bytes)
    return {"file": f.path, "item": it.id, "k": list(f.ks), "prompt": it.prompt, "seed": seeds,
            "sha256": hashlib.sha256(data_bytes).hexdigest()}


def _record(writer: ManifestWriter, jobs: list[Future[dict[str, Any]]]) -> int:
    rows = [job.result() for job in jobs]
    writer.append(rows)
    return len(rows)


def generate_benchmark(benchmark_name: str, out_dir: str | os.PathLike, generate_fn: GenerateFn,
                       spec: GenerationSpec, world: World = SINGLE_PROCESS) -> RunSummary:
    """`sana-eval generate`: the named benchmark (see `prompt_sets.get_benchmark`) through `run_generation`."""
    return run_generation(get_benchmark(benchmark_name), out_dir, generate_fn, spec, world)
