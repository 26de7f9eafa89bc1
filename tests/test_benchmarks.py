"""Prompt sets: parsing the official schemas, locating data, sha256 pins, downloads, the registry."""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.server
import json
import os
import re
import threading
from pathlib import Path

import pytest

from sana_eval.generation import prompt_sets as B
from sana_eval.generation.layouts import LAYOUTS

GENEVAL_LINES = [
    '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}',
    '{"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}], '
    '"prompt": "a photo of two cups"}',
    '{"tag": "position", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, '
    '"position": ["left of", 0]}], "prompt": "a photo of a cat left of a dog"}',
]
DPG_FILES = {"0.txt": "A red cube.", "10.txt": "Two birds.", "2.txt": "A lamp.",
             "countbench4.txt": "Four apples on a table.\n", "diffusiondb25.txt": " an elaborate painting"}
IMAGEREWARD = [{"id": "005695-0057", "prompt": "a concept art of a vehicle, cyberpunk"},
               {"id": "005784-0093", "prompt": "desolate space, cinematic"}]
MJHQ = {"zeta": {"category": "food", "prompt": "a cake"}, "alpha": {"category": "logo", "prompt": "a logo"},
        "mid": {"category": "art", "prompt": "a painting"}}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listing(files: dict[str, str]) -> str:
    return "".join(f"{sha(files[n].encode())}  {n}\n" for n in sorted(files))


@pytest.fixture
def data_root(tmp_path) -> Path:
    """A folder shaped like shared/data, holding tiny files in the official schemas."""
    root = tmp_path / "data"
    (root / "geneval").mkdir(parents=True)
    (root / "geneval" / "evaluation_metadata.jsonl").write_text("\n".join(GENEVAL_LINES) + "\n")
    (root / "dpg_bench" / "prompts").mkdir(parents=True)
    for name, text in DPG_FILES.items():
        (root / "dpg_bench" / "prompts" / name).write_text(text)
    (root / "imagereward").mkdir()
    (root / "imagereward" / "benchmark-prompts.json").write_text(json.dumps(IMAGEREWARD, indent=4))
    (root / "mjhq30k").mkdir()
    (root / "mjhq30k" / "meta_data.json").write_text(json.dumps(MJHQ))
    return root


def pinned_to(name: str, root: Path, **source_changes) -> B.Benchmark:
    """The registered benchmark with its sha256 pin moved to the fixture's file (everything else as registered)."""
    bench = B.get_benchmark(name)
    path = bench._find_in(root)
    digest = sha(listing(DPG_FILES).encode()) if bench.source.is_folder else sha(path.read_bytes())
    return dataclasses.replace(bench, n_items=None,
                               source=dataclasses.replace(bench.source, **{"sha256": digest, **source_changes}))


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SANA_EVAL_DATA", raising=False)
    monkeypatch.setenv("SANA_EVAL_CACHE", str(tmp_path / "cache"))


def test_geneval_items_keep_index_order_and_the_whole_line_as_metadata(data_root):
    ps = pinned_to("geneval", data_root).load(data_root)
    assert [it.id for it in ps.items] == ["00000", "00001", "00002"]
    assert [it.metadata for it in ps.items] == [json.loads(line) for line in GENEVAL_LINES]
    assert [it.prompt for it in ps.items] == [json.loads(line)["prompt"] for line in GENEVAL_LINES]
    assert {it.n_images for it in ps.items} == {4}
    assert ps.sha256 == sha((data_root / "geneval" / "evaluation_metadata.jsonl").read_bytes())


def test_dpg_items_are_file_stems_in_name_order_with_stripped_prompts(data_root):
    ps = pinned_to("dpg", data_root).load(data_root / "dpg_bench")
    assert [it.id for it in ps.items] == sorted(n[:-4] for n in DPG_FILES)
    assert {it.id: it.prompt for it in ps.items} == {n[:-4]: t.strip() for n, t in DPG_FILES.items()}
    assert ps.sha256 == sha(listing(DPG_FILES).encode())


def test_mjhq_keeps_json_key_order_and_category(data_root):
    ps = pinned_to("mjhq30k", data_root).load(data_root)
    assert [it.id for it in ps.items] == ["zeta", "alpha", "mid"]  # file order, not sorted
    assert [it.metadata["category"] for it in ps.items] == ["food", "logo", "art"]
    assert {it.n_images for it in ps.items} == {1}


def test_imagereward_ids_and_ten_images(data_root):
    items = list(pinned_to("imagereward", data_root).items(data_root / "imagereward" / "benchmark-prompts.json"))
    assert [(it.id, it.prompt, it.n_images) for it in items] == [(e["id"], e["prompt"], 10) for e in IMAGEREWARD]


def test_data_is_found_by_env_then_cache(data_root, monkeypatch, tmp_path):
    bench = pinned_to("geneval", data_root)
    monkeypatch.setenv("SANA_EVAL_DATA", str(data_root))
    assert bench.load().origin == str(data_root / "geneval" / "evaluation_metadata.jsonl")
    monkeypatch.setenv("SANA_EVAL_DATA", str(tmp_path / "empty"))  # set, but without this benchmark: fall through
    cached = bench.cache_path()
    assert cached == tmp_path / "cache" / "geneval" / bench.source.revision / "evaluation_metadata.jsonl"
    cached.parent.mkdir(parents=True)
    cached.write_bytes((data_root / "geneval" / "evaluation_metadata.jsonl").read_bytes())
    assert bench.load().origin == str(cached)


def test_sha256_mismatch_names_file_and_both_hashes(data_root):
    bench = B.get_benchmark("geneval")  # the real pin; the fixture is not the official file
    path = data_root / "geneval" / "evaluation_metadata.jsonl"
    with pytest.raises(B.IntegrityError) as err:
        bench.load(data_root)
    msg = str(err.value)
    assert str(path) in msg and bench.source.sha256 in msg and sha(path.read_bytes()) in msg and "\n" not in msg
    assert len(bench.load(data_root, verify=False).items) == 3


def test_dpg_mismatch_names_the_changed_file_using_the_listing_beside_it(data_root):
    bench = pinned_to("dpg", data_root)
    folder = data_root / "dpg_bench" / "prompts"
    (folder.parent / "prompts.sha256").write_text(listing(DPG_FILES))
    (folder / "2.txt").write_text("A lamp!")
    with pytest.raises(B.IntegrityError, match=re.escape(f"{folder / '2.txt'}: sha256 {sha(b'A lamp!')}, "
                                                         f"expected {sha(b'A lamp.')}")):
        bench.load(folder)
    (folder / "2.txt").unlink()
    with pytest.raises(B.IntegrityError, match="2.txt is missing"):
        bench.load(folder)


@pytest.mark.parametrize("content,message", [
    (GENEVAL_LINES[0] + "\n" + '{"tag": "colors", "include": [' + "\n", r"line 2: bad JSON"),
    (GENEVAL_LINES[0] + "\n" + '{"tag": "colors", "include": []}' + "\n", r"line 2: no 'prompt' key"),
    ("\n" + GENEVAL_LINES[0] + "\n", r"line 1: empty line"),
    ('[1, 2]\n', r"line 1: expected a JSON object"),
])
def test_malformed_geneval_file_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text(content)
    with pytest.raises(B.PromptFileError, match=re.escape(str(path)) + ".*" + message):
        B.get_benchmark("geneval").load(path, verify=False)


def test_malformed_json_files(tmp_path):
    bad = tmp_path / "benchmark-prompts.json"
    bad.write_text('[\n  {"id": "a", "prompt": "x"},\n  {"id": "b" "prompt": "y"}\n]')
    with pytest.raises(B.PromptFileError, match=re.escape(str(bad)) + r" line 3: bad JSON"):
        B.get_benchmark("imagereward").load(bad, verify=False)
    bad.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"prompt": "y"}]))
    with pytest.raises(B.PromptFileError, match=r"entry 1: no 'id' key"):
        B.get_benchmark("imagereward").load(bad, verify=False)
    meta = tmp_path / "meta_data.json"
    meta.write_text(json.dumps({"a": {"prompt": "x"}}))
    with pytest.raises(B.PromptFileError, match=r"entry 'a': no 'category' key"):
        B.get_benchmark("mjhq30k").load(meta, verify=False)


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n  a dog  \n")
    assert [(it.id, it.prompt) for it in B.get_benchmark(f"prompts:{txt}").items()] == [("00000", "a cat"),
                                                                                           ("00001", "a dog")]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"id": "x1", "prompt": "a cat", "style": "photo"}\n\n{"prompt": "a dog"}\n')
    items = list(B.get_benchmark(f"prompts:{jsonl}").items())
    assert [(it.id, it.prompt, it.metadata) for it in items] == [("x1", "a cat", {"style": "photo"}),
                                                                  ("00001", "a dog", {})]
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"k1": "a cat", "k2": {"prompt": "a dog", "category": "animals"}}))
    assert [(it.id, it.prompt) for it in B.get_benchmark(f"prompts:{js}").items()] == [("k1", "a cat"),
                                                                                         ("k2", "a dog")]
    js.write_text(json.dumps([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]))
    with pytest.raises(B.PromptFileError, match="'a' appears twice"):
        B.get_benchmark(f"prompts:{js}").load()
    js.write_text(json.dumps([{"id": "../evil", "prompt": "x"}]))
    with pytest.raises(B.PromptFileError, match="cannot be a file name"):
        B.get_benchmark(f"prompts:{js}").load()
    with pytest.raises(B.DataUnavailableError, match="not found"):
        B.get_benchmark(f"prompts:{tmp_path / 'missing.txt'}").load()


def test_registry_did_you_mean_and_aliases():
    with pytest.raises(B.UnknownBenchmarkError, match="did you mean geneval"):
        B.get_benchmark("genevl")
    with pytest.raises(B.UnknownBenchmarkError, match="did you mean imagereward"):
        B.get_benchmark("imagereword")
    assert B.get_benchmark("DPG-Bench").name == "dpg" and B.get_benchmark("mjhq").name == "mjhq30k"
    assert isinstance(B.UnknownBenchmarkError("x"), ValueError)


def test_every_registered_benchmark_is_well_formed():
    expected = {"geneval": (553, 4, "geneval"), "dpg": (1065, 4, "dpg"), "imagereward": (100, 10, "imagereward"),
                "mjhq30k": (30000, 1, "mjhq")}
    assert {n: (b.n_items, b.n_images, b.layout) for n, b in B.BENCHMARKS.items()} == expected
    assert [n for n, b in B.BENCHMARKS.items() if b.sana_chi] == ["geneval", "mjhq30k"]  # docs/protocols.md §0
    for bench in B.BENCHMARKS.values():
        assert bench.layout in bench.layouts and set(bench.layouts) <= set(LAYOUTS)
        src = bench.source
        if src.host == "github":  # pinned to a commit and a sha256
            assert re.fullmatch(r"[0-9a-f]{40}", src.revision) and re.fullmatch(r"[0-9a-f]{64}", src.sha256)
            assert src.url().startswith(f"https://raw.githubusercontent.com/{src.repo}/{src.revision}/")


# ----------------------------------------------------------------------------------------------
# Downloads, through a local HTTP server standing in for GitHub.

class _Server:
    def __init__(self, routes: dict[str, bytes]):
        routes_ = routes

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = routes_.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_into_cache_checks_sha_and_is_reused_offline(data_root):
    content = (data_root / "geneval" / "evaluation_metadata.jsonl").read_bytes()
    bench = B.get_benchmark("geneval")
    server = _Server({f"/{bench.source.repo}/{bench.source.revision}/{bench.source.path}": content})
    try:
        wrong = pinned_to("geneval", data_root, base_url=server.url, sha256="0" * 64)
        with pytest.raises(B.IntegrityError, match=f"sha256 {sha(content)}, expected {'0' * 64}"):
            wrong.load()
        assert not wrong.cache_path().exists()
        good = pinned_to("geneval", data_root, base_url=server.url)
        assert good.load().origin == str(good.cache_path())
    finally:
        server.close()
    assert good.cache_path().read_bytes() == content
    assert len(good.load().items) == 3  # server gone: served from the cache


def test_dpg_folder_download_checks_blobs_and_listing(data_root):
    src = B.get_benchmark("dpg").source
    blob = {n: hashlib.sha1(b"blob %d\0" % len(t.encode()) + t.encode()).hexdigest() for n, t in DPG_FILES.items()}
    routes = {f"/{src.repo}/{src.revision}/{src.path}/{n}": t.encode() for n, t in DPG_FILES.items()}
    routes[f"/repos/{src.repo}/git/trees/{src.tree}"] = json.dumps(
        {"sha": src.tree, "truncated": False,
         "tree": [{"path": n, "type": "blob", "sha": blob[n]} for n in DPG_FILES]}).encode()
    server = _Server(routes)
    try:
        bench = pinned_to("dpg", data_root, base_url=server.url, api_url=server.url)
        ps = bench.load()
    finally:
        server.close()
    assert ps.origin == str(bench.cache_path()) and len(ps.items) == len(DPG_FILES)
    assert (bench.cache_path().parent / "prompts.sha256").read_text() == listing(DPG_FILES)


def test_offline_errors_are_one_line_and_say_how_to_provide_data(monkeypatch):
    bench = B.get_benchmark("imagereward")
    offline = dataclasses.replace(bench, source=dataclasses.replace(bench.source, base_url="http://127.0.0.1:9"))
    with pytest.raises(B.DataUnavailableError) as err:
        offline.load()
    msg = str(err.value)
    assert "\n" not in msg and "benchmark-prompts.json" in msg and "SANA_EVAL_DATA" in msg and "--data" in msg

    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(B.DataUnavailableError, match=r"mjhq30k: meta_data.json is not on disk.*mjhq30k/meta_data"):
        B.get_benchmark("mjhq30k").load()


# ----------------------------------------------------------------------------------------------
# The real files, when SANA_EVAL_DATA names a folder holding them (e.g. shared/data).

REAL = os.environ.get("SANA_EVAL_DATA_REAL") or os.environ.get("SANA_EVAL_DATA")


def _real(name: str) -> B.PromptSet:
    if not REAL:
        pytest.skip("set SANA_EVAL_DATA to a folder with the official prompt files to check them")
    bench = B.get_benchmark(name)
    if bench._find_in(Path(REAL)) is None:
        pytest.skip(f"{REAL} has no {bench.data_subdir}/{bench.source.name}")
    return bench.load(REAL)  # checks the sha256 pin and the count


def test_real_geneval():
    ps = _real("geneval")
    assert len(ps.items) == 553 and ps.sha256 == B.get_benchmark("geneval").source.sha256
    tags = collections.Counter(it.metadata["tag"] for it in ps.items)
    assert tags == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100,
                    "color_attr": 100}
    lines = Path(ps.origin).read_text().splitlines()
    assert [json.dumps(it.metadata) for it in ps.items] == lines  # metadata.jsonl round-trips byte for byte


def test_real_dpg():
    ps = _real("dpg")
    assert len(ps.items) == 1065
    sana = Path(ps.origin).parent / "sana_metadata.json"
    if sana.is_file():  # SANA's own copy: same ids, same (stripped) prompts, same order
        meta = json.loads(sana.read_text())
        assert [(it.id, it.prompt) for it in ps.items] == [(k, v["prompt"]) for k, v in meta.items()]


def test_real_imagereward():
    ps = _real("imagereward")
    assert len(ps.items) == 100 and len({it.id for it in ps.items}) == 100
    sana = Path(ps.origin).parent / "sana_benchmark-prompts-dict.json"
    if sana.is_file():
        assert [(it.id, it.prompt) for it in ps.items] == [(k, v["prompt"]) for k, v in
                                                           json.loads(sana.read_text()).items()]


def test_real_mjhq30k():
    with pytest.warns(UserWarning, match="not pinned"):
        ps = _real("mjhq30k")
    assert len(ps.items) == 30000
    assert collections.Counter(it.metadata["category"] for it in ps.items) == {
        c: 3000 for c in ("animals", "art", "fashion", "food", "indoor", "landscape", "logo", "people", "plants",
                          "vehicles")}
