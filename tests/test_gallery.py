"""Sample galleries of image runs: sections per GenEval tag / MJHQ category, every image linked, thumbnails."""
from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from sana_eval.folder_lock import LOCK_NAME
from sana_eval.generation import prompt_sets as B
from sana_eval.generation.gallery import GalleryError, write_gallery
from sana_eval.generation.runner import GenerationSpec, run_generation

GENEVAL = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "prompt": "a photo of a red car"},
    {"tag": "single_object", "include": [{"class": "cow", "count": 1}], "prompt": "a photo of a <cow> & calf"},
]
MJHQ = {"z9": {"category": "food", "prompt": "a cake"}, "a1": {"category": "logo", "prompt": "a logo"},
        "m5": {"category": "food", "prompt": "a pie"}}


def invariant_fn(prompts, seeds):
    """A deterministic stand-in for the pipeline (as in test_generate.py): 8-px pixels from (prompt, seed)."""
    keys = [int.from_bytes(hashlib.sha256(f"{p}|{s}".encode()).digest()[:8], "big") for p, s in zip(prompts, seeds)]
    return np.stack([np.random.default_rng(k).integers(0, 256, (8, 8, 3), dtype=np.uint8) for k in keys])


class Page(HTMLParser):
    """The page as a reader sees it: section titles in order, each item's prompt text, links and thumbnails."""

    def __init__(self):
        super().__init__()
        self.sections, self.prompts, self.links, self.thumbs = [], [], [], []
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2" or (tag == "p" and attrs.get("class") == "prompt"):
            self._in = tag
            (self.sections if tag == "h2" else self.prompts).append("")
        elif tag == "a" and not attrs["href"].startswith("#"):
            self.links.append(attrs["href"])
        elif tag == "img":
            self.thumbs.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            target = self.sections if self._in == "h2" else self.prompts
            target[-1] += data


def parse(page) -> Page:
    parser = Page()
    parser.feed(page.read_text())
    return parser


def generate(tmp_path, name: str, **kw):
    if name == "geneval":
        src = tmp_path / "evaluation_metadata.jsonl"
        src.write_text("\n".join(json.dumps(x) for x in GENEVAL) + "\n")
    elif name == "mjhq30k":
        src = tmp_path / "meta_data.json"
        src.write_text(json.dumps(MJHQ))
    else:
        src = tmp_path / "prompts"
        src.mkdir()
        for i, text in enumerate(("A red cube.", "Two birds.")):
            (src / f"{i}.txt").write_text(text)
    out = tmp_path / "run"
    run_generation(B.get_benchmark(name).load(src, verify=False), out, invariant_fn,
                   GenerationSpec(run_config={"t": 1}, progress=False, **kw))
    return out


def test_geneval_gallery_has_a_section_per_tag_with_four_samples_per_prompt(tmp_path):
    out = generate(tmp_path, "geneval")
    page = write_gallery(out, "geneval")
    assert page == out / "gallery.html"
    seen = parse(page)
    assert seen.sections == ["single_object (2)", "colors (1)"]
    assert seen.prompts == ["00000 a photo of a bench", "00002 a photo of a <cow> & calf", "00001 a photo of a red car"]
    assert seen.links == [f"{i}/samples/{k:05d}.png" for i in ("00000", "00002", "00001") for k in range(4)]
    assert len(seen.thumbs) == 12 and all((out / link).is_file() for link in seen.links)
    for thumb in seen.thumbs:
        with Image.open(out / thumb) as img:
            assert img.format == "JPEG" and img.size == (8, 8)      # never enlarged past the 8-px samples
    # no temporary files left (the writers' lock stays: it is how a second command into the folder is refused)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [LOCK_NAME]


def test_mjhq_gallery_is_per_category_and_dpg_shows_its_grids(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "d").mkdir()
    mjhq = generate(tmp_path / "m", "mjhq30k")
    seen = parse(write_gallery(mjhq, "mjhq30k"))
    assert seen.sections == ["food (2)", "logo (1)"] and seen.links == ["z9.jpg", "m5.jpg", "a1.jpg"]
    dpg = generate(tmp_path / "d", "dpg")
    seen = parse(write_gallery(dpg, "dpg"))
    assert seen.prompts == ["0 A red cube.", "1 Two birds."] and seen.links == ["0.png", "1.png"]
    with Image.open(dpg / seen.thumbs[0]) as img:
        assert img.size == (16, 16)                                  # the whole 2x2 grid


def test_large_images_get_small_thumbnails_remade_only_when_the_image_changes(tmp_path):
    out = generate(tmp_path, "geneval", limit=1)
    big = Image.new("RGB", (1024, 512), (200, 10, 10))
    big.save(out / "00000" / "samples" / "00001.png")             # stands in for a 1024-px sample
    write_gallery(out, "geneval")
    thumb = out / "gallery" / "00000__samples__00001.jpg"
    with Image.open(thumb) as img:
        assert img.size == (256, 128)
    stamp = thumb.stat().st_mtime_ns
    write_gallery(out, "geneval")
    assert thumb.stat().st_mtime_ns == stamp


def test_wrong_benchmark_or_a_folder_without_a_run_is_refused(tmp_path):
    out = generate(tmp_path, "geneval", limit=1)
    with pytest.raises(GalleryError, match="a run of 'geneval', not 'mjhq30k'"):
        write_gallery(out, "mjhq30k")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="empty: no `sana-eval generate` manifest"):
        write_gallery(tmp_path / "empty", "geneval")
