"""Image sets on disk, their DataLoader, and batched feature extraction through the feature cache."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from metrics.base import ONE_PROCESS, FeatureCache, MetricError, WorkShare, image_key

IMAGE_EXTENSIONS = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageItem:
    """One image file; `id` is the sample id (MJHQ key, file stem), `category` the MJHQ category."""
    id: str
    path: Path
    category: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class ImageSet:
    """An ordered image set with the identity that reference statistics are keyed by."""
    name: str            # e.g. "MJHQ-30K" or a folder path
    revision: str        # dataset revision, or a content id of the folder's index file
    items: tuple[ImageItem, ...]

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, category: str) -> ImageSet:
        return ImageSet(self.name, self.revision, tuple(i for i in self.items if i.category == category))

    def first(self, n: int) -> ImageSet:
        if n > len(self.items):
            raise MetricError(f"{self.name}: asked for the first {n} images, only {len(self.items)} exist")
        return ImageSet(self.name, self.revision, self.items[:n])

    @property
    def categories(self) -> list[str]:
        return sorted({i.category for i in self.items if i.category is not None})


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MetricError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def folder_image_set(folder: str | os.PathLike) -> ImageSet:
    """All images of a flat folder, id = file stem, in name order."""
    files = list_images(folder)
    if not files:
        raise MetricError(f"image folder {folder} has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return ImageSet(str(Path(folder).resolve()), "folder", tuple(ImageItem(p.stem, p) for p in files))


def generated_like(reference: ImageSet, folder: str | os.PathLike, ext: str = ".jpg") -> ImageSet:
    """The generated counterpart of `reference`: `<folder>/<id><ext>` for each reference id, in order."""
    folder = Path(folder)
    items = tuple(ImageItem(i.id, folder / f"{i.id}{ext}", i.category, i.prompt) for i in reference.items)
    missing = [i.path for i in items if not i.path.is_file()]
    if missing:
        raise MetricError(f"{len(missing)} generated images missing, first: {missing[0]}")
    return ImageSet(str(folder.resolve()), "generated", items)


class ImageFileDataset(torch.utils.data.Dataset):
    """(index, transform(PIL image)) for each path; converted to RGB first unless the transform does it itself
    (ImageReward converts after resizing, and the order changes the pixels)."""

    def __init__(self, paths: Sequence[Path], indices: Sequence[int], transform: Callable, convert_rgb: bool = True):
        self.paths, self.indices, self.transform = list(paths), list(indices), transform
        self.convert_rgb = convert_rgb

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            with Image.open(self.paths[i]) as img:
                img = img.convert("RGB") if self.convert_rgb else img.copy()
        except OSError as e:
            raise MetricError(f"cannot read image {self.paths[i]}: {e}") from None
        return i, self.transform(img)


def _worker_errors_as_raised(loader: torch.utils.data.DataLoader) -> Iterator:
    """The loader's batches; a MetricError of a worker process (an unreadable image) with its own one-line message,
    where the DataLoader re-raises it with the worker's traceback as the text."""
    try:
        yield from loader
    except MetricError as err:
        text = str(err)
        if "Original Traceback" not in text:
            raise
        raise MetricError(text.rpartition(f"{MetricError.__name__}: ")[2].strip()) from None


def extract_features(paths: Sequence[Path], transform: Callable, encode: Callable[[torch.Tensor], np.ndarray],
                     cache: FeatureCache | None, *, batch_size: int, num_workers: int, desc: str,
                     key_mode: str = "stat", flush_every: int = 20, pin_memory: bool = False,
                     share: WorkShare = ONE_PROCESS) -> np.ndarray:
    """Features of every path, in order; cached ones are read back, the rest computed in batches.

    `encode` maps a CPU batch (B, ...) to a (B, D) float array; it owns the device and dtype. Split across
    processes (`share`), each computes its blocks of `batch_size` paths and all read the others' from the cache.
    """
    share.require_cache(cache, desc)
    keys = [image_key(p, key_mode) for p in paths]
    have = [cache.get(k) if cache is not None else None for k in keys]
    todo = [i for i, f in enumerate(have) if f is None and share.owns(i, batch_size)]
    if todo:
        loader = torch.utils.data.DataLoader(
            ImageFileDataset(paths, todo, transform), batch_size=batch_size, shuffle=False,
            num_workers=num_workers, pin_memory=pin_memory, drop_last=False)
        with tqdm(total=len(todo), desc=desc, unit="img", dynamic_ncols=True) as bar:
            for step, (idx, batch) in enumerate(_worker_errors_as_raised(loader)):
                feats = np.asarray(encode(batch))
                if feats.ndim != 2 or feats.shape[0] != len(idx):
                    raise MetricError(f"{desc}: encoder returned shape {feats.shape} for a batch of {len(idx)}")
                for i, f in zip(idx.tolist(), feats):
                    have[i] = f
                if cache is not None:
                    cache.put([keys[i] for i in idx.tolist()], feats)
                    if (step + 1) % flush_every == 0:
                        cache.flush()
                bar.update(len(idx))
        if cache is not None:
            cache.flush()
    if not paths:
        raise MetricError(f"{desc}: no images")
    if share.split:
        have = share.gather(cache, keys, desc)
    return np.stack(have)
