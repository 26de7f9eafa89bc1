"""`sana-eval compare … --html OUT/index.html`: one static page (no server, no CDN; opens from a file offline) with
the metric table and its intervals, per-category plots (PNG data URIs), and the same prompts' images of every
checkpoint side by side (lazy thumbnails, filter by benchmark/category, sort by a per-prompt score delta).

Thumbnails are the generate runs' own (`gallery/*.jpg` in each run folder, shared with `gallery.html`), linked by
relative paths, so the page works wherever OUT and the runs keep their places relative to each other.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metrics.base import Result, sha256_file
from sana_eval.compare.deltas import CompareError, Comparison, per_prompt_deltas
from sana_eval.compare.plots import delta_figure, values_figure
from sana_eval.generation.gallery import thumbnail
from sana_eval.generation.manifest import read_run
from sana_eval.io import write_text
from sana_eval.provenance import collect
from sana_eval.results import to_frame

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:110em}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}td:nth-child(-n+3){text-align:left}
tr.better td{background:#e6f4e6}tr.worse td{background:#fbe3e3}.plots img{max-width:32%;vertical-align:top}
.controls{margin:1em 0}.prompt{border-top:1px solid #ddd;padding:.5em 0}.text{font-size:.85em;margin:.2em 0}
.id{color:#888}.gain{font-size:.8em;color:#555}figure{display:inline-block;margin:0 .6em 0 0;vertical-align:top}
figcaption{font-size:.75em;color:#555;max-width:16em;overflow-wrap:anywhere}.thumb{border:1px solid #ddd}"""
# Filters and sorts the prompt rows in place; the rows carry data-cat and data-g<j> (gain j; "" when absent).
SCRIPT = """(function(){
var box=document.getElementById('prompts'),cat=document.getElementById('cat'),sort=document.getElementById('sort');
var rows=Array.prototype.slice.call(box.children);
function apply(){var c=cat.value,s=sort.value,list=rows.slice();
 if(s!=='order'){var k='g'+s.slice(1),up=s[0]==='a';list.sort(function(x,y){
  var a=x.dataset[k],b=y.dataset[k];if(a===''&&b==='')return 0;if(a==='')return 1;if(b==='')return -1;
  return up?a-b:b-a;});}
 list.forEach(function(r){r.hidden=c!=='all'&&r.dataset.cat!==c;box.appendChild(r);});
 document.getElementById('shown').textContent=list.filter(function(r){return !r.hidden;}).length;}
cat.addEventListener('change',apply);sort.addEventListener('change',apply);apply();})();"""


@dataclass(frozen=True)
class Checkpoint:
    name: str                              # as shown: the results file's path
    results: Mapping[str, Result]
    images: Path | None                    # its `sana-eval generate` run folder; None: no images shown


def find_images(results: Mapping[str, Result]) -> Path | None:
    """The image folder a bundle's results record (provenance "images") that is a `sana-eval generate` run."""
    for result in results.values():
        folder = result.provenance.get("images")
        if isinstance(folder, str) and any(Path(folder).glob("manifest*.jsonl")):
            return Path(folder)
    return None


def _data_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _run_images(folder: Path) -> tuple[str, bool, dict[str, tuple[str, str]]]:
    """(benchmark, whether its images are grids, item -> (first image file, prompt)) of a generate run, in manifest
    order."""
    identity, records = read_run(folder)
    if not records:
        raise CompareError(f"{folder}: no `sana-eval generate` manifest with images")
    first: dict[str, tuple[int, str, str]] = {}
    for file, rows in records.items():
        row = rows[-1]
        k = row["k"][0]
        if (folder / file).is_file() and (row["item"] not in first or k < first[row["item"]][0]):
            first[row["item"]] = (k, file, row["prompt"])
    return (identity.get("benchmark", {}).get("name", "images"), "grid" in identity.get("layout", {}),
            {i: (f, p) for i, (_, f, p) in first.items()})


def _label(i: int) -> str:
    return "A" if i == 0 else f"B{i}"


def _metric_table(comparisons: Sequence[Comparison]) -> str:
    frame = pd.concat([to_frame(c.to_dict()).assign(candidate=_label(j)) for j, c in enumerate(comparisons, 1)],
                      ignore_index=True)
    pct = f"{100 * comparisons[0].confidence:g}% CI"
    shown = pd.DataFrame({
        "B": frame["candidate"], "metric": frame["metric"], "key": frame["key"],
        "value A": frame["a"].map("{:.4f}".format), "value B": frame["b"].map("{:.4f}".format),
        "Δ = B − A": frame["delta"].map("{:+.4f}".format),
        pct: [("—" if pd.isna(lo) else f"[{lo:+.4f}, {hi:+.4f}]") for lo, hi in zip(frame["ci_low"], frame["ci_high"])],
        "better": frame["higher_is_better"].map({True: "higher", False: "lower"}),
        "verdict": frame["verdict"], "method": frame["method"]})
    table = shown.to_html(index=False, border=0, table_id="metrics", na_rep="—")
    # Colour each row by its verdict: pandas writes plain <tr>; one class per body row, in order.
    head, body = table.split("<tbody>", 1)
    parts = body.split("<tr>")
    body = parts[0] + "".join(f'<tr class="{v.split()[0]}">{p}' for v, p in zip(frame["verdict"], parts[1:]))
    return head + "<tbody>" + body


def _prompt_rows(checkpoints: Sequence[Checkpoint], out_dir: Path, max_prompts: int
                 ) -> tuple[list[str], list[str], list[str], int, int]:
    """(row HTML, category options, sort labels, prompts shared, prompts shown)."""
    runs = {i: _run_images(c.images) for i, c in enumerate(checkpoints) if c.images is not None}
    if not runs:
        return [], [], [], 0, 0
    bench = next(iter(runs.values()))[0]
    shared = [item for item in next(iter(runs.values()))[2] if all(item in r[2] for r in runs.values())]
    base = checkpoints[0].results
    gains, labels = [], []
    for j, cand in enumerate(checkpoints[1:], start=1):
        deltas = per_prompt_deltas(base, cand.results)
        for metric, part in deltas.groupby("metric", sort=False):
            labels.append(f"{metric}, {_label(j)} − A")
            gains.append((dict(zip(part["item"], part["gain"])), dict(zip(part["item"], part["key"]))))
    esc = html.escape
    rows, cats = [], {}
    for item in shared[:max_prompts]:
        keys = [g[1].get(item) for g in gains]
        tag = next((k.split("/", 1)[1] for k in keys if k and "/" in k), None)
        cat = f"{bench} · {tag}" if tag else bench
        cats[cat] = None
        values = [g[0].get(item) for g in gains]
        data = " ".join(f'data-g{j}="{"" if v is None else repr(float(v))}"' for j, v in enumerate(values))
        shown_gains = ", ".join(f"{lab}: {v:+.4g}" for lab, v in zip(labels, values) if v is not None)
        figures = []
        for i, c in enumerate(checkpoints):
            label = _label(i)
            if i not in runs:
                figures.append(f"<figure><figcaption>{label}: no images</figcaption></figure>")
                continue
            folder, file = c.images, runs[i][2][item][0]
            thumb = os.path.relpath(folder / thumbnail(folder, file, grid=runs[i][1]), out_dir)
            full = os.path.relpath(folder / file, out_dir)
            figures.append(f'<figure><a href="{esc(full)}"><img class="thumb" src="{esc(thumb)}" loading="lazy" '
                           f'alt="{esc(item)}, {label}" title="{esc(c.name)}"></a>'
                           f"<figcaption>{label}</figcaption></figure>")
        rows.append(f'<div class="prompt" data-cat="{esc(cat)}" {data}><p class="text"><span class="id">'
                    f'{esc(item)}</span> {esc(runs[min(runs)][2][item][1])} <span class="gain">{esc(shown_gains)}'
                    f'</span></p>{"".join(figures)}</div>')
    return rows, list(cats), labels, len(shared), len(rows)


def render_page(checkpoints: Sequence[Checkpoint], comparisons: Sequence[Comparison], out_dir: Path,
                max_prompts: int = 300) -> str:
    esc = html.escape
    values = pd.concat([to_frame(c.results, _label(i)) for i, c in enumerate(checkpoints)], ignore_index=True)
    plots = [f'<img class="plot" alt="values per key" src="{_data_uri(values_figure(values))}">']
    plots += [f'<img class="plot" alt="{_label(j)} − A" src="{_data_uri(delta_figure(c, _label(j)))}">'
              for j, c in enumerate(comparisons, start=1)]
    rows, cats, labels, n_shared, n_shown = _prompt_rows(checkpoints, out_dir, max_prompts)
    sorts = ['<option value="order">prompt order</option>'] + [
        f'<option value="{d}{j}">{esc(lab)}: {"B worse first" if d == "a" else "B better first"}</option>'
        for j, lab in enumerate(labels) for d in "ad"]
    c0 = comparisons[0]
    names = "".join(f"<li>{_label(i)}: <code>{esc(c.name)}</code></li>"
                    for i, c in enumerate(checkpoints))
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Checkpoint comparison</title><style>{STYLE}</style></head><body>",
           "<h1>Checkpoint comparison</h1>", f"<ul>{names}</ul>",
           f"<p>Δ = B − A with {100 * c0.confidence:g}% percentile bootstrap intervals ({c0.n_boot} resamples, "
           f"seed {c0.seed}); rows are green where the interval says B is better, red where worse.</p>",
           "<h2>Metrics</h2>", _metric_table(comparisons),
           *[f"<p>{esc(n)}</p>" for c in comparisons for n in c.notes],
           "<h2>Per category</h2>", f'<div class="plots">{"".join(plots)}</div>', "<h2>Images</h2>"]
    if not rows:
        out.append("<p>No images: no run's results name a <code>sana-eval generate</code> folder "
                   "(pass <code>--images</code>).</p>")
    else:
        more = f" (the first {n_shown} of {n_shared} shared prompts)" if n_shown < n_shared else ""
        out += ['<div class="controls">Show <select id="cat"><option value="all">all</option>'
                + "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in cats)
                + f'</select> sort by <select id="sort">{"".join(sorts)}</select> '
                f'<span id="shown"></span> prompts shown{esc(more)}</div>',
                f'<div id="prompts">{"".join(rows)}</div>', f"<script>{SCRIPT}</script>"]
    record = {"inputs": [{"label": _label(i), "path": c.name, "images": None if c.images is None else str(c.images),
                          "sha256": sha256_file(c.name) if Path(c.name).is_file() else None}
                         for i, c in enumerate(checkpoints)],
              "provenance": collect(seeds={"bootstrap": c0.seed}).to_dict()}
    out += ["<h2>Provenance</h2>", f'<pre id="provenance">{esc(json.dumps(record, indent=1))}</pre>',
            "</body></html>\n"]
    return "\n".join(out)


def write_page(checkpoints: Sequence[Checkpoint], comparisons: Sequence[Comparison], path: Path,
               max_prompts: int = 300) -> Path:
    """The page at `path` (atomic); thumbnails the runs lack are made in their `gallery/` folders first."""
    text = render_page(checkpoints, comparisons, Path(path).resolve().parent, max_prompts)
    return write_text(Path(path), text)

