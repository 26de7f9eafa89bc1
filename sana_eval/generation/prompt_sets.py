"""Prompt sets of the SANA metric suite (docs/protocols.md §0), each pinned to its official upstream file.

Prompts are read from, in order: a path the caller names; $SANA_EVAL_DATA (a folder with geneval/, dpg_bench/,
imagereward/, mjhq30k/ sub-folders, like shared/data); the cache ($SANA_EVAL_CACHE, default ~/.cache/sana-eval);
a download into the cache. Every file is checked against its sha256 pin before a prompt is used.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Literal

from huggingface_hub import hf_hub_download

from model.weights_io import atomic_path, sha256_file
from sana_eval.generation.prompt_files import (  # noqa: F401  (re-exported: callers read the errors from here)
    BenchmarkError,
    DataUnavailableError,
    IntegrityError,
    Item,
    PromptFileError,
    UnknownBenchmarkError,
    check_ids,
    parse_dpg,
    parse_geneval,
    parse_imagereward,
    parse_mjhq,
    parse_prompt_file,
)


@dataclass(frozen=True)
class Source:
    """An official prompt file (or folder of files) upstream, pinned to one revision and one sha256."""
    host: Literal["github", "hf-dataset"]
    repo: str
    revision: str            # full commit hash; "main" only where no pin could be obtained
    path: str                # file or folder inside the repository
    sha256: str | None       # of the file; of a folder, of its `sha256sum`-style listing; None = not pinned yet
    tree: str | None = None  # git tree sha1 of a folder; the GitHub API lists its files by it
    base_url: str = ""       # download host (default per `host`); tests and mirrors override it
    api_url: str = "https://api.github.com"

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def is_folder(self) -> bool:
        return self.tree is not None

    def url(self, rel: str = "") -> str:
        path = f"{self.path}/{rel}" if rel else self.path
        if self.host == "github":
            return f"{self.base_url or 'https://raw.githubusercontent.com'}/{self.repo}/{self.revision}/{path}"
        return f"{self.base_url or 'https://huggingface.co'}/datasets/{self.repo}/resolve/{self.revision}/{path}"


@dataclass(frozen=True)
class PromptSet:
    """A benchmark's items as loaded, with where they came from and the hash that was checked."""
    benchmark: Benchmark
    items: tuple[Item, ...]
    origin: str              # the file or folder read
    sha256: str | None       # of that file (folder: of its listing)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the items themselves (ids, prompts, image counts, metadata), whatever file they came from."""
        digest = hashlib.sha256()
        for it in self.items:
            digest.update(json.dumps([it.id, it.prompt, it.n_images, it.metadata], sort_keys=True).encode())
            digest.update(b"\n")
        return digest.hexdigest()


Parser = Callable[[Path, int], list[Item]]


@dataclass(frozen=True)
class Benchmark:
    """A prompt set, its pin and the on-disk layout its scorer reads (docs/architecture.md §3.2)."""
    name: str
    version: str
    title: str
    n_images: int                      # images per prompt
    n_items: int | None                # prompts in the official set; checked on load
    layout: str                        # default `layouts.LAYOUTS` key
    layouts: tuple[str, ...]           # every layout its scorers accept
    data_subdir: str                   # sub-folder of $SANA_EVAL_DATA and of the cache
    source: Source | None              # None: a local prompt file (`prompts:FILE`)
    parse: Parser = field(repr=False, compare=False)
    local: Path | None = None          # `prompts:FILE`: the file
    # Whether SANA's generation script for this benchmark prepends the CHI prompt (docs/protocols.md §0): its
    # MJHQ and GenEval scripts do, its DPG and ImageReward scripts do not. A pipeline mirrors it to match SANA.
    sana_chi: bool = True

    def items(self, data: str | os.PathLike | None = None) -> Iterator[Item]:
        yield from self.load(data).items

    def load(self, data: str | os.PathLike | None = None, *, verify: bool = True) -> PromptSet:
        """Items from `data` (a file or folder), else $SANA_EVAL_DATA, else the cache, else a download."""
        path = self._locate(data)
        digest = self._check(path, verify)
        items = tuple(self.parse(path, self.n_images))
        check_ids(items, path)
        if verify and self.n_items is not None and len(items) != self.n_items:
            raise IntegrityError(f"{path}: {len(items)} prompts, the {self.name} set has {self.n_items}")
        return PromptSet(self, items, str(path), digest)

    # -- locating the data ---------------------------------------------------------------------

    def _locate(self, data: str | os.PathLike | None) -> Path:
        if self.source is None:
            return self._local_file(Path(data) if data is not None else self.local)
        name = self.source.name
        if data is not None:
            found = self._find_in(Path(data))
            if found is None:
                raise DataUnavailableError(f"{self.name}: no {name} at {data} (nor in {Path(data) / self.data_subdir})")
            return found
        if os.environ.get("SANA_EVAL_DATA"):
            found = self._find_in(Path(os.environ["SANA_EVAL_DATA"]))
            if found is not None:
                return found
        cached = self.cache_path()
        if cached.exists():
            return cached
        return self._download(cached)

    def _local_file(self, path: Path | None) -> Path:
        if path is None or not path.is_file():
            raise DataUnavailableError(f"{self.name}: prompt file {path} not found")
        return path

    def _find_in(self, root: Path) -> Path | None:
        name = self.source.name
        if root.is_file():
            return None if self.source.is_folder else root
        for cand in (root / name, root / self.data_subdir / name):
            if cand.exists():
                return cand
        if self.source.is_folder and root.is_dir() and any(root.glob("*.txt")):
            return root  # the prompt folder itself
        return None

    def cache_path(self) -> Path:
        root = Path(os.environ.get("SANA_EVAL_CACHE") or Path.home() / ".cache" / "sana-eval")
        return root / self.data_subdir / self.source.revision / self.source.name

    # -- integrity -------------------------------------------------------------------------------

    def _check(self, path: Path, verify: bool) -> str | None:
        if self.source is None:
            return sha256_file(path)
        if self.source.is_folder:
            if not path.is_dir():
                raise BenchmarkError(f"{self.name}: {path} should be a folder of <item_id>.txt prompt files")
            digest = hashlib.sha256(folder_listing(path).encode()).hexdigest()
        else:
            digest = sha256_file(path)
        expected = self.source.sha256
        if verify and expected is None:
            warnings.warn(f"{self.name}: {self.source.name} is not pinned yet; its sha256 is {digest}", stacklevel=3)
        elif verify and digest != expected:
            detail = _first_folder_difference(path, expected) if self.source.is_folder else ""
            raise IntegrityError(f"{path}: sha256 {digest}, expected {expected}"
                                 f"{' (' + detail + ')' if detail else ''} — not the official {self.name} file")
        return digest

    # -- download ---------------------------------------------------------------------------------

    def _download(self, target: Path) -> Path:
        src = self.source
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if src.is_folder:
                _download_github_folder(src, target)
            elif src.host == "github":
                data = _http_get(src.url())
                _require_sha(data, src.sha256, src.url())
                with atomic_path(target) as tmp:
                    tmp.write_bytes(data)
            else:
                _download_hf(src, target)
        except (urllib.error.URLError, OSError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", None) or err
            raise DataUnavailableError(
                f"{self.name}: {src.name} is not on disk and could not be downloaded from {src.url()} ({reason}); "
                f"pass a folder holding it (--data DIR) or set SANA_EVAL_DATA to a folder with "
                f"{self.data_subdir}/{src.name}") from None
        return target


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.read()


def _require_sha(data: bytes, expected: str | None, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and actual != expected:
        raise IntegrityError(f"{what}: sha256 {actual}, expected {expected}")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _download_github_folder(src: Source, target: Path) -> None:
    """Every `.txt` blob of the pinned git tree, checked by blob sha1 and, together, by the listing's sha256."""
    listing_url = f"{src.api_url}/repos/{src.repo}/git/trees/{src.tree}"
    tree = json.loads(_http_get(listing_url))
    if tree.get("truncated"):
        raise DataUnavailableError(f"{listing_url}: the tree listing is truncated")
    blobs = [(e["path"], e["sha"]) for e in tree.get("tree", []) if e.get("type") == "blob"
             and e["path"].endswith(".txt")]

    def fetch(entry: tuple[str, str]) -> tuple[str, bytes]:
        name, blob_sha = entry
        data = _http_get(src.url(name))
        if _git_blob_sha1(data) != blob_sha:
            raise IntegrityError(f"{src.url(name)}: git blob sha1 {_git_blob_sha1(data)}, expected {blob_sha}")
        return name, data

    with ThreadPoolExecutor(8) as pool:
        files = dict(pool.map(fetch, blobs))
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        listing = folder_listing(tmp)
        _require_sha(listing.encode(), src.sha256, f"{listing_url} (listing of {len(files)} files)")
        (target.parent / f"{target.name}.sha256").write_text(listing)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download_hf(src: Source, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            got = hf_hub_download(src.repo, src.path, repo_type="dataset", revision=src.revision, local_dir=tmp,
                                  endpoint=src.base_url or None)
        except Exception as err:  # the hub raises many types (offline, 404, auth); all mean "not available"
            first = str(err).strip().split(". ")[0].splitlines()[0][:160] if str(err).strip() else ""
            raise ConnectionError(f"{type(err).__name__}: {first}") from None
        _require_sha(Path(got).read_bytes(), src.sha256, src.url())
        os.replace(got, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def folder_listing(folder: Path) -> str:
    """`sha256sum`-format listing of the folder's `.txt` files in name order (the DPG pin hashes this text)."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".txt" and p.is_file())
    return "".join(f"{sha256_file(folder / n)}  {n}\n" for n in names)


def _first_folder_difference(folder: Path, expected: str) -> str:
    """Names the first file that differs, using a pinned listing saved beside the folder, if there is one."""
    for ref in (folder.parent / f"{folder.name}.sha256", folder / f"{folder.name}.sha256"):
        if ref.is_file() and sha256_file(ref) == expected:
            want = dict(reversed(line.split("  ", 1)) for line in ref.read_text().splitlines())
            have = dict(reversed(line.split("  ", 1)) for line in folder_listing(folder).splitlines())
            for name in sorted(want.keys() | have.keys()):
                if name not in have:
                    return f"{folder / name} is missing"
                if name not in want:
                    return f"{folder / name} is not in the official set"
                if want[name] != have[name]:
                    return f"{folder / name}: sha256 {have[name]}, expected {want[name]}"
    count = sum(1 for p in folder.glob("*.txt"))
    return f"{count} .txt files; the listing of their sha256s differs"


# ----------------------------------------------------------------------------------------------
# Registry (docs/architecture.md §4.5: typed entries, "did you mean" lookup).

BENCHMARKS: dict[str, Benchmark] = {}
ALIASES = {"dpg-bench": "dpg", "dpg_bench": "dpg", "dpgbench": "dpg", "mjhq": "mjhq30k", "mjhq-30k": "mjhq30k",
           "image_reward": "imagereward", "image-reward": "imagereward"}


def register(bench: Benchmark) -> Benchmark:
    if bench.name in BENCHMARKS:
        raise BenchmarkError(f"benchmark {bench.name!r} registered twice")
    BENCHMARKS[bench.name] = bench
    return bench


register(Benchmark(
    "geneval", "1", "GenEval (djghosh13/geneval), 553 prompts x 4 images", 4, 553, "geneval", ("geneval",),
    "geneval", Source("github", "djghosh13/geneval", "af4902f24d3ca90ebbb446dd9891a59e0f82725f",
                      "prompts/evaluation_metadata.jsonl",
                      "5c48e0813e812e3c373fa5c8ed07a8f0a483be30272b4427b0559c8048e67c13"),
    parse_geneval))
register(Benchmark(
    "dpg", "1", "DPG-Bench (TencentQQGYLab/ELLA), 1065 prompts x 4 images in a 2x2 grid", 4, 1065, "dpg",
    ("dpg", "dpg-sana"), "dpg_bench",
    Source("github", "TencentQQGYLab/ELLA", "3c228f1dc6c4d3cad0a47493816151a419f14db3", "dpg_bench/prompts",
           "317085a5cddf9620595bb38cba7b9fa25ecfb081846bc91b840c98366d46f56e",
           tree="ac3ba27bf2e1c3ec189fe2e00681f75f4b78d683"),
    parse_dpg, sana_chi=False))
register(Benchmark(
    "imagereward", "1", "ImageReward benchmark (THUDM/ImageReward), 100 prompts x 10 images", 10, 100,
    "imagereward", ("imagereward", "imagereward-png"), "imagereward",
    Source("github", "THUDM/ImageReward", "c1392c6dd0fd6ecd6d416c96959ab744a6d0a8fb",
           "benchmark/benchmark-prompts.json", "34682e824ebb3ad8e2531b3cde1b362dc72e1e29946ff6fab77bb49e9edb4b21"),
    parse_imagereward, sana_chi=False))
register(Benchmark(
    "mjhq30k", "1", "MJHQ-30K (playgroundai/MJHQ-30K), 30000 prompts x 1 image (FID, CLIP score)", 1, 30000,
    "mjhq", ("mjhq", "mjhq-png"), "mjhq30k",
    # Not pinned yet: the hub was unreachable while this was written (shared/data/mjhq30k/SOURCE.md). Loading
    # warns with the actual sha256, which is recorded with every run; pin revision + sha256 here once known.
    Source("hf-dataset", "playgroundai/MJHQ-30K", "main", "meta_data.json", None),
    parse_mjhq))


def prompt_file_benchmark(path: str | os.PathLike, n_images: int = 1) -> Benchmark:
    """`prompts:FILE`: a local prompt file (see `parse_prompt_file`), written flat as `<id>[_<k>].png`."""
    path = Path(path)
    # Named by the file name only: a rerun from another working directory is the same run (items are hashed).
    return Benchmark(f"prompts:{path.name}", "1", f"prompts from {path}", n_images, None, "flat-png",
                     ("flat-png", "flat-jpeg"), "prompts", None, parse_prompt_file, local=path)


def get_benchmark(name: str) -> Benchmark:
    if name.startswith("prompts:"):
        if not name[len("prompts:"):]:
            raise UnknownBenchmarkError("prompts:FILE needs a file name, e.g. prompts:my_prompts.txt")
        return prompt_file_benchmark(name[len("prompts:"):])
    key = ALIASES.get(name.lower(), name.lower())
    if key in BENCHMARKS:
        return BENCHMARKS[key]
    close = difflib.get_close_matches(name.lower(), [*BENCHMARKS, *ALIASES, "prompts:FILE"], n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(dict.fromkeys(ALIASES.get(c, c) for c in close))}?" if close else ""
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}{hint} (known: {', '.join(BENCHMARKS)}, prompts:FILE)")
