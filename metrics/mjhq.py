"""MJHQ-30K reference data (docs/protocols.md §1.1): a local folder or the HF dataset, in meta_data.json key order."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from metrics.base import MetricError, sha256_file
from metrics.images import ImageItem, ImageSet

MJHQ_REPO = "playgroundai/MJHQ-30K"
# Not yet pinned to a commit: the hub was unreachable when this was written. The commit actually
# resolved is recorded as the set's revision, so every reference statistic names it.
MJHQ_REVISION = "main"
MJHQ_META = "meta_data.json"
MJHQ_ZIP = "mjhq30k_imgs.zip"
MJHQ_CATEGORIES = ("animals", "art", "fashion", "food", "indoor",
                   "landscape", "logo", "people", "plants", "vehicles")
DOWNLOAD_COMMAND = f"hf download {MJHQ_REPO} {MJHQ_META} {MJHQ_ZIP} --repo-type dataset"


def load_meta(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """{id: {"category", "prompt"}} with the file's key order kept (it is the sample order)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MetricError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict):
        raise MetricError(f"{path}: expected a JSON object of id -> {{category, prompt}}")
    for key, entry in meta.items():
        if not isinstance(entry, dict) or "category" not in entry or "prompt" not in entry:
            raise MetricError(f"{path}: entry {key!r} lacks 'category' or 'prompt'")
        if entry["category"] not in MJHQ_CATEGORIES:
            raise MetricError(f"{path}: entry {key!r} has unknown category {entry['category']!r}")
    return meta


def _images_root(root: Path) -> Path:
    """The folder holding the ten category folders: `root` itself, or one level below it."""
    for cand in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        if all((cand / c).is_dir() for c in MJHQ_CATEGORIES):
            return cand
    unzip = f"; unzip {MJHQ_ZIP} there first" if (root / MJHQ_ZIP).is_file() else ""
    raise MetricError(f"{root}: no folder with the MJHQ category folders ({', '.join(MJHQ_CATEGORIES)}){unzip}")


def mjhq_from_folder(root: str | os.PathLike, n: int | None = None, *, revision: str | None = None) -> ImageSet:
    """The first `n` (default all) MJHQ items of a local copy: `meta_data.json` + `<category>/<id>.jpg`."""
    root = Path(root)
    meta_path = root / MJHQ_META
    if not meta_path.is_file():
        raise MetricError(f"{meta_path} not found (MJHQ-30K layout: meta_data.json + <category>/<id>.jpg)")
    meta = load_meta(meta_path)
    ids = list(meta)[: (len(meta) if n is None else n)]
    if n is not None and len(ids) < n:
        raise MetricError(f"{meta_path} has {len(meta)} entries, asked for {n}")
    img_root = _images_root(root)
    items = tuple(ImageItem(k, img_root / meta[k]["category"] / f"{k}.jpg", meta[k]["category"], meta[k]["prompt"])
                  for k in ids)
    missing = [i.path for i in items if not i.path.is_file()]
    if missing:
        raise MetricError(f"{len(missing)} MJHQ images missing, first: {missing[0]}")
    return ImageSet("MJHQ-30K", revision or _meta_revision(meta_path), items)


def _meta_revision(meta_path: Path) -> str:
    """The set's content id: the sha256 of its meta_data.json (ids, categories, prompts and their order)."""
    return f"meta-sha256:{sha256_file(meta_path)}"


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now: huggingface_hub reads it once, at import, so a value set later would be missed."""
    return hub_constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _default_extract_dir() -> Path:
    """Where the image zip is unzipped when no folder is named: beside the HF cache, one folder per hub commit."""
    return Path(hub_constants.HF_HOME) / "sana-eval"


def fetch_mjhq(extract_dir: str | os.PathLike | None = None, *, revision: str = MJHQ_REVISION,
               local_files_only: bool = False) -> tuple[Path, str]:
    """meta_data.json and the image zip from the Hugging Face cache (downloaded into it unless offline:
    HF_HUB_OFFLINE=1 or `local_files_only`), the zip unzipped once into `extract_dir` (default
    `$HF_HOME/sana-eval`). Returns (folder in the local layout, resolved hub commit)."""
    offline = local_files_only or _hub_offline()
    got = {}
    for name in (MJHQ_META, MJHQ_ZIP):
        try:
            got[name] = Path(hf_hub_download(MJHQ_REPO, name, repo_type="dataset", revision=revision,
                                             local_files_only=offline))
        except (EntryNotFoundError, OSError, ValueError) as err:  # offline miss, no network, gated, bad revision
            why = (f"not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set"
                   if offline else f"not downloadable now ({type(err).__name__})")
            raise MetricError(f"MJHQ-30K: {name} of dataset {MJHQ_REPO}@{revision} {why}; run once online "
                              f"`{DOWNLOAD_COMMAND}`, or pass a local MJHQ-30K folder (--mjhq DIR)") from None
    commit = got[MJHQ_META].parent.name  # hub cache layout: .../snapshots/<commit>/<file>
    target = Path(extract_dir if extract_dir is not None else _default_extract_dir()) / f"MJHQ-30K-{commit}"
    if not (target / MJHQ_META).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".mjhq-", dir=target.parent))
        try:
            try:
                with zipfile.ZipFile(got[MJHQ_ZIP]) as z:
                    z.extractall(tmp)
            except zipfile.BadZipFile as err:
                raise MetricError(f"{got[MJHQ_ZIP]}: not a readable zip ({err}); fetch it again with "
                                  f"`{DOWNLOAD_COMMAND} --force-download`") from None
            shutil.copyfile(got[MJHQ_META], tmp / MJHQ_META)
            try:
                os.replace(tmp, target)
            except OSError:
                if not (target / MJHQ_META).is_file():  # else another process unzipped the same commit first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target, commit


def mjhq(n: int | None = None, *, folder: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | None = None, local_files_only: bool = False) -> ImageSet:
    """MJHQ-30K from a local folder if given, else from the Hugging Face cache (fetch_mjhq; unzipped into
    `cache_dir` when given). Its revision names meta_data.json's sha256 either way, and the hub commit."""
    if folder is not None:
        return mjhq_from_folder(folder, n)
    path, commit = fetch_mjhq(cache_dir, local_files_only=local_files_only)
    return mjhq_from_folder(path, n, revision=f"{MJHQ_REPO}@{commit}, {_meta_revision(path / MJHQ_META)}")
