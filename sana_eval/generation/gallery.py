"""A static HTML page of an image run's samples, grouped as its benchmark reports them (issue "Reproduce the
paper's tables": browsable sample grids per category/tag): GenEval per tag, MJHQ-30K per category, DPG-Bench and
ImageReward per prompt. Thumbnails are small JPEGs in `gallery/` next to the page; each links to the full image.
"""
from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from sana_eval.generation.manifest import read_run
from sana_eval.generation.prompt_sets import get_benchmark
from sana_eval.io import write_bytes, write_text

GALLERY = "gallery.html"
THUMBS = "gallery"
THUMB_PX = 256                             # longest side of a one-image thumbnail; grids get 1.5x
THUMB_QUALITY = 80
# benchmark -> the metadata key that names an item's section (GenEval reports per tag, MJHQ per category)
SECTION_KEY = {"geneval": "tag", "mjhq30k": "category"}
STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:90em}nav a{margin-right:1em}
.item{display:inline-block;vertical-align:top;margin:0 1em 1.2em 0;max-width:34em}
.prompt{font-size:.85em;margin:.2em 0}.id{color:#888}img{margin:2px;border:1px solid #ddd}
pre{font-size:.75em;background:#f6f6f6;padding:.5em;overflow-x:auto}"""


class GalleryError(ValueError):
    """A folder that is not a `sana-eval generate` run of the named benchmark."""


@dataclass(frozen=True)
class Entry:
    item: str
    prompt: str
    files: tuple[str, ...]                 # image files, relative to the run folder, in image order


def _origin(run_dir: Path) -> str | None:
    """The prompt file the run was generated from, as its first manifest's header records it."""
    for path in sorted(run_dir.glob("manifest*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.readline()).get("source", {}).get("origin")
    return None


def _prompt_items(run_dir: Path, bench: str) -> dict[str, dict]:
    """item id -> metadata, in benchmark order, from the prompt file the run recorded ({} when it is gone)."""
    origin = _origin(run_dir)
    if not origin or not Path(origin).exists():
        return {}
    return {it.id: it.metadata for it in get_benchmark(bench).load(origin, verify=False).items}


def _sections(run_dir: Path, bench: str, entries: list[Entry]) -> dict[str, list[Entry]]:
    """Entries by section, in benchmark order; GenEval tags come from the run's own metadata.jsonl sidecars, MJHQ
    categories from the prompt file (one section when it is gone)."""
    key = SECTION_KEY.get(bench)
    meta = _prompt_items(run_dir, bench)
    order = {item: i for i, item in enumerate(meta)}
    if bench == "geneval":
        meta = {e.item: json.loads((run_dir / e.item / "metadata.jsonl").read_text()) for e in entries}
    out: dict[str, list[Entry]] = {}
    for entry in sorted(entries, key=lambda e: (order.get(e.item, len(order)), len(e.item), e.item)):
        out.setdefault(str(meta.get(entry.item, {}).get(key, "all prompts")), []).append(entry)
    return out


def _entries(run_dir: Path) -> tuple[dict, list[Entry]]:
    identity, records = read_run(run_dir)
    if not records:
        raise GalleryError(f"{run_dir}: no `sana-eval generate` manifest with images")
    by_item: dict[str, list[tuple[int, str, str]]] = {}
    for file, rows in records.items():
        row = rows[-1]
        if (run_dir / file).is_file():
            by_item.setdefault(row["item"], []).append((row["k"][0], file, row["prompt"]))
    entries = [Entry(item, files[0][2], tuple(f for _, f, _ in sorted(files))) for item, files in by_item.items()]
    return identity, entries


def thumbnail(run_dir: Path, file: str, grid: bool) -> str:
    """`gallery/<file with / as __>.jpg`, remade only when the image is newer."""
    source = run_dir / file
    rel = f"{THUMBS}/{file.replace('/', '__').rsplit('.', 1)[0]}.jpg"
    target = run_dir / rel
    if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
        side = int(THUMB_PX * (1.5 if grid else 1))
        with Image.open(source) as img:
            small = img.convert("RGB")
            small.thumbnail((side, side))
        jpeg = io.BytesIO()
        small.save(jpeg, format="JPEG", quality=THUMB_QUALITY)
        write_bytes(target, jpeg.getvalue())
    return rel


def render_html(run_dir: Path, bench: str, identity: dict, sections: dict[str, list[Entry]],
                thumbs: dict[str, str]) -> str:
    esc = html.escape
    n_items = sum(len(v) for v in sections.values())
    n_images = len(thumbs)
    config = identity.get("run_config", {})
    shown = {k: config[k] for k in ("weights", "weights_sha256", "resolution", "sampling", "conventions")
             if k in config}
    anchors = {name: f"s{i}" for i, name in enumerate(sections)}
    out = ["<!doctype html>", '<html><head><meta charset="utf-8">',
           f"<title>{esc(bench)} samples: {esc(run_dir.name)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{esc(bench)} samples: {esc(run_dir.name)}</h1>",
           f"<p>{n_items} prompts, {n_images} image files, seed {esc(str(identity.get('seed')))}; "
           f"click a thumbnail for the full image.</p>",
           f"<pre>{esc(json.dumps(shown, indent=1))}</pre>"]
    if len(sections) > 1:
        out.append("<nav>" + "".join(f'<a href="#{anchors[name]}">{esc(name)} ({len(entries)})</a>'
                                     for name, entries in sections.items()) + "</nav>")
    for name, entries in sections.items():
        out.append(f'<section id="{anchors[name]}"><h2>{esc(name)} ({len(entries)})</h2>')
        for e in entries:
            images = "".join(f'<a href="{esc(f)}"><img src="{esc(thumbs[f])}" loading="lazy" alt="{esc(f)}"></a>'
                             for f in e.files)
            out.append(f'<div class="item"><p class="prompt"><span class="id">{esc(e.item)}</span> '
                       f"{esc(e.prompt)}</p>{images}</div>")
        out.append("</section>")
    out.append("</body></html>\n")
    return "\n".join(out)


def write_gallery(run_dir: str | Path, benchmark: str) -> Path:
    """`run_dir/gallery.html` (+ `run_dir/gallery/*.jpg`) for a `sana-eval generate` run of `benchmark`."""
    run_dir = Path(run_dir)
    bench = get_benchmark(benchmark)
    identity, entries = _entries(run_dir)
    recorded = identity.get("benchmark", {}).get("name")
    if recorded != bench.name:
        raise GalleryError(f"{run_dir}: a run of {recorded!r}, not {bench.name!r}")
    sections = _sections(run_dir, bench.name, entries)
    grid = "grid" in identity.get("layout", {})          # DPG's 2x2 grids get larger thumbnails
    thumbs = {f: thumbnail(run_dir, f, grid) for e in entries for f in e.files}
    return write_text(run_dir / GALLERY, render_html(run_dir, bench.name, identity, sections, thumbs))
