"""The comparison page (`sana-eval compare A B C --html`): what it holds, read as HTML, and how it renders in a real
browser (headless Chromium: no console error, the table and every thumbnail visible, the filter and the sort work),
with a screenshot; the sample gallery renders there too. The browser tests skip, saying why, without Chromium."""
from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metrics.base import Result, sha256_file
from sana_eval.cli.main import main
from sana_eval.generation import prompt_sets as B
from sana_eval.generation.gallery import write_gallery
from sana_eval.generation.runner import GenerationSpec, run_generation
from sana_eval.results import write_results

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
    {"tag": "counting", "include": [{"class": "cow", "count": 2}], "prompt": "a photo of two cows"},
    {"tag": "colors", "include": [{"class": "cup", "count": 1, "color": "blue"}], "prompt": "a photo of a blue cup"},
]
# Per checkpoint: the fraction of each prompt's 4 images GenEval would judge correct (A is the baseline).
CORRECT = {"A": [0.5, 0.25, 0.0, 1.0], "B": [0.75, 0.75, 0.25, 0.5], "C": [1.0, 0.0, 0.5, 1.0]}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
NO_CHROMIUM = "no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs it when apt-get is there)"


def painter(hue: int):
    """A stand-in for the pipeline: a 96-px picture from (prompt, seed), tinted per checkpoint."""
    def generate(prompts, seeds):
        out = []
        for p, s in zip(prompts, seeds):
            key = int.from_bytes(hashlib.sha256(f"{p}|{s}".encode()).digest()[:4], "big")
            y, x = np.mgrid[0:96, 0:96]
            cy, cx, r = 30 + key % 36, 30 + (key >> 8) % 36, 14 + (key >> 16) % 12
            img = np.stack([x * 2 + hue, y * 2 + (key % 64), np.full_like(x, 255 - hue)], -1) % 256
            img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = [(key >> 4) % 256, 255 - hue, (key >> 12) % 256]
            out.append(img.astype(np.uint8))
        return np.stack(out)
    return generate


def geneval_result(name: str, run: Path) -> Result:
    per_item, tags = {}, {}
    for i, (entry, frac) in enumerate(zip(GENEVAL, CORRECT[name])):
        per_item[f"{i:05d}"] = {f"geneval/{entry['tag']}": frac, "n_images": 4}
        tags.setdefault(entry["tag"], []).append(frac)
    aggregate = {f"geneval/{t}": float(np.mean(v)) for t, v in tags.items()}
    aggregate = {"geneval": float(np.mean(list(aggregate.values()))), **aggregate}
    return Result("geneval", {"metric": "geneval", "detector": "transformers"}, aggregate, per_item,
                  {"images": str(run.resolve())})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three checkpoints' GenEval runs (4 prompts x 4 images) and their results bundles."""
    root = tmp_path_factory.mktemp("page")
    src = root / "evaluation_metadata.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in GENEVAL) + "\n")
    bundles = []
    for hue, name in zip((0, 80, 160), CORRECT):
        run = root / f"run_{name}"
        run_generation(B.get_benchmark("geneval").load(src, verify=False), run, painter(hue),
                       GenerationSpec(run_config={"checkpoint": name}, progress=False))
        bundles.append(write_results([geneval_result(name, run)], root / f"{name}.json"))
    return root, bundles


@pytest.fixture(scope="module")
def page(runs):
    root, bundles = runs
    out = root / "cmp" / "index.html"
    assert main(["compare", *map(str, bundles), "--html", str(out), "--n-boot", "200"]) == 0
    return out


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.thumbs, self.urls, self.options, self.prompts = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and a.get("class"):
            self.rows.append(a["class"])
        if tag == "img" and a.get("class") == "thumb":
            self.thumbs.append(a["src"])
            assert a["loading"] == "lazy"
        if tag == "option":
            self.options.append(a["value"])
        if tag == "div" and a.get("class") == "prompt":
            self.prompts.append(a)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def test_page_holds_the_table_plots_and_every_checkpoints_images_by_relative_path(page, runs):
    seen = Page()
    seen.feed(page.read_text())
    # 2 candidates x (overall + 3 tags) compared rows; thumbnails: 4 prompts x 3 checkpoints.
    assert len(seen.rows) == 8 and len(seen.thumbs) == 12
    assert [p["data-cat"] for p in seen.prompts] == ["geneval · single_object", "geneval · colors",
                                                       "geneval · counting", "geneval · colors"]
    # The sort keys are the per-prompt gains: B - A of prompt 00001 (colors) is 0.75 - 0.25.
    assert float(seen.prompts[1]["data-g0"]) == 0.5 and float(seen.prompts[1]["data-g1"]) == -0.25
    assert {"all", "geneval · colors", "geneval · counting", "geneval · single_object"} <= set(seen.options)
    # Offline: nothing fetched from elsewhere; every relative link resolves next to the page.
    for url in seen.urls:
        assert url.startswith("data:image/png;base64,") or not re.match(r"^[a-z]+:", url), url
        if not url.startswith("data:"):
            assert (page.parent / url).is_file(), url
    with Image.open(page.parent / seen.thumbs[0]) as img:
        assert img.format == "JPEG" and img.size == (96, 96)
    # Provenance: every input with its sha256, and this machine's record.
    record = json.loads(html.unescape(re.search(r'<pre id="provenance">(.*?)</pre>', page.read_text(), re.S)[1]))
    assert [i["sha256"] for i in record["inputs"]] == [sha256_file(b) for b in runs[1]]
    assert record["provenance"]["seeds"] == {"bootstrap": 0} and record["provenance"]["utc_time"]


def test_out_is_refused_for_more_than_two_runs(runs, tmp_path, capsys):
    _, bundles = runs
    assert main(["compare", *map(str, bundles), "--out", str(tmp_path / "o"), "--n-boot", "10"]) == 2
    assert "--out writes one A/B comparison; 3 runs given" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------------------------------------------
# In a real browser.

# Runs first in the page: records console errors, uncaught exceptions and failed loads; after the load it scrolls
# through the page (the thumbnails are lazy), then exercises the filter and the sort, and writes what it saw into
# <pre id="probe"> for --dump-dom.
PROBE = """<script>(function(){var errors=[];window.__probe=errors;
var e0=console.error;console.error=function(){errors.push('console.error: '+Array.prototype.join.call(arguments,' '));
 e0.apply(console,arguments);};
window.addEventListener('error',function(e){errors.push(e.message||('failed to load '+(e.target.src||e.target.href)));
},true);
function visible(el){var r=el.getBoundingClientRect();return r.width>0&&r.height>0&&!el.closest('[hidden]');}
window.addEventListener('load',function(){window.scrollTo(0,document.body.scrollHeight);setTimeout(function(){
 var imgs=Array.prototype.slice.call(document.querySelectorAll('img'));var table=document.querySelector('table');
 var out={errors:errors,table_rows:table&&visible(table)?table.tBodies[0].rows.length:0,
  images:imgs.filter(function(i){return visible(i)&&i.complete&&i.naturalWidth>0;}).length,
  thumbs:imgs.filter(function(i){return i.classList.contains('thumb')&&i.complete&&i.naturalWidth>0;}).length};
 var cat=document.getElementById('cat'),sort=document.getElementById('sort');
 if(cat){cat.value='geneval · colors';cat.dispatchEvent(new Event('change'));
  out.colors=Array.prototype.filter.call(document.querySelectorAll('.prompt'),visible).length;
  cat.value='all';cat.dispatchEvent(new Event('change'));sort.value='a0';sort.dispatchEvent(new Event('change'));
  out.ascending=Array.prototype.map.call(document.querySelectorAll('.prompt'),function(p){return p.dataset.g0;});}
 var pre=document.createElement('pre');pre.id='probe';pre.textContent=JSON.stringify(out);
 document.body.appendChild(pre);},500);});})();</script>"""


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=10000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def render(page: Path) -> tuple[dict, str]:
    """What the probe saw in `page` (a copy beside it carries the probe), and Chromium's stderr."""
    probed = page.with_name(f"probe-{page.name}")
    probed.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    try:
        done = chromium("--window-size=1280,1000", "--dump-dom", probed.as_uri())
    finally:
        probed.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page never finished loading; Chromium said: {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")), done.stderr


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_page_renders_in_chromium_without_errors_and_shows_every_image(page, tmp_path):
    seen, stderr = render(page)
    assert seen["errors"] == [] and console_lines(stderr) == []
    assert seen["table_rows"] == 8
    assert seen["thumbs"] == 12 and seen["images"] == 12 + 3     # + the values plot and two delta plots
    assert seen["colors"] == 2
    gains = [float(g) for g in seen["ascending"]]
    assert gains == sorted(gains) and len(gains) == 4
    # The screenshot: a real picture of the page (docs/compare-page.png is made this way; see the README).
    shot = Path(os.environ.get("SANA_EVAL_PAGE_SCREENSHOT", tmp_path / "page.png")).resolve()
    chromium("--window-size=1280,1500", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as img:
        assert img.size == (1280, 1500)
        colours = len(img.convert("RGB").resize((320, 375)).getcolors(maxcolors=320 * 375))
    assert colours > 500                                         # not a blank or an error page


def test_a_sample_gallery_renders_in_chromium_too(runs):
    root, _ = runs
    gallery = write_gallery(root / "run_A", "geneval")
    seen, stderr = render(gallery)
    assert seen["errors"] == [] and console_lines(stderr) == []
    assert seen["images"] == 16                                  # 4 prompts x 4 samples


def test_images_named_on_the_command_line_stand_in_for_unrecorded_ones(runs, tmp_path, capsys):
    root, _ = runs
    bare = []
    for name in ("A", "B"):
        r = geneval_result(name, root / f"run_{name}")
        bare.append(write_results([Result(r.metric, r.protocol, r.aggregate, r.per_item)], tmp_path / f"{name}.json"))
    out = tmp_path / "html" / "index.html"
    assert main(["compare", *map(str, bare), "--html", str(out), "--n-boot", "20"]) == 0
    assert 'class="thumb"' not in out.read_text() and "No images" in out.read_text()
    images = ["--images", str(root / "run_A"), "--images", str(root / "run_B")]
    assert main(["compare", *map(str, bare), "--html", str(out), "--n-boot", "20", *images]) == 0
    assert out.read_text().count('class="thumb"') == 8
    (tmp_path / "empty").mkdir()
    assert main(["compare", *map(str, bare), "--html", str(out), "--images", str(tmp_path / "empty")]) == 2
    assert "empty: no `sana-eval generate` manifest with images" in capsys.readouterr().err
