"""Report files (md/json/csv), the index, reruns from JSON, provenance, and atomic writes."""
from __future__ import annotations

import csv
import hashlib
import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from sana_eval import provenance as P
from sana_eval.io import write_text
from sana_eval.reproduce import report as report_module
from sana_eval.reproduce.report import read_report
from sana_eval.reproduce.run import reproduce, rerun
from sana_eval.tables import get_table


@pytest.fixture(scope="module")
def table6_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    return out, reproduce(["table6"], out, version="v1")


def test_reproduce_writes_md_json_csv_png_and_the_index(table6_run):
    out, paths = table6_run
    assert paths == [out / "v1" / "table6.json", out / "v1" / "table6.md", out / "v1" / "table6.csv",
                     out / "v1" / "table6.png", out / "README.md"]
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in out.rglob("*")) == sorted(["v1", "table6.json", "table6.md", "table6.csv",
                                                             "table6.png", "README.md"])   # no temporary files left


def test_the_figure_plots_every_cell_that_ran_and_is_linked(table6_run):
    from PIL import Image

    md = (table6_run[0] / "v1" / "table6.md").read_text()
    assert "![Table 6: reproduced vs. paper, relative difference per cell](table6.png)" in md
    with Image.open(table6_run[0] / "v1" / "table6.png") as img:
        assert img.format == "PNG" and img.size[0] == 960                  # 8 in at 120 dpi


def test_the_figure_has_one_bar_and_one_label_per_cell_that_ran(table6_run, monkeypatch):
    figures = []
    monkeypatch.setattr(report_module, "save_figure", lambda fig, path: figures.append(fig) or path)
    report_module.plot_report(read_report(table6_run[0] / "v1" / "table6.json"), table6_run[0] / "unused.png")
    (ax,) = figures[0].axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 10 and "Sana-0.6B · #Param (M)" in labels      # 2 rows x 5 columns of Table 6
    assert len(ax.patches) == 2 * 10                                      # the tolerance band and the bar, per cell


def test_reports_link_the_protocol_differences(table6_run):
    md = (table6_run[0] / "v1" / "table6.md").read_text()
    assert "## Protocols" in md and "`docs/protocols.md` §9" in md
    docs = (Path(__file__).resolve().parents[1] / "docs" / "protocols.md").read_text()
    assert "## 9. Differences at a glance" in docs                    # the section the reports point at


def test_a_table_where_no_cell_ran_has_no_figure(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "table2.png").write_bytes(b"a plot from an earlier run")
    paths = reproduce(["table2"], tmp_path, version="v")      # Table 2 is a training ablation: nothing runs
    assert [p.name for p in paths] == ["table2.json", "table2.md", "table2.csv", "README.md"]
    assert not (tmp_path / "v" / "table2.png").exists()       # a stale figure would contradict the report
    assert ".png" not in (tmp_path / "v" / "table2.md").read_text()


def test_markdown_shows_paper_vs_ours_verdicts_notes_and_provenance(table6_run):
    md = (table6_run[0] / "v1" / "table6.md").read_text()
    assert md.startswith("# Table 6: Architecture details of the proposed Sana")
    assert "**9 reproduced, 1 differ, 0 failed, 0 not run** of 10 cells" in md
    assert ("| Sana-0.6B | 1152 → 1152 ✓ | 28 → 28 ✓ | 2880 → 2880 ✓ | 36 → 36 ✓ [n1] | 590 → 591.7 ✗ [n2] |"
            in md)
    assert "| Sana-1.6B | #Param (M) | 1604 | 1604.5 | +0.5 | reproduced | 1,604,462,752 parameters" in md
    assert "591,747,872" in md and "Reported as a difference, not hidden by tolerance" in md
    assert "after rounding to the paper's printed decimals" in md
    assert "## Provenance" in md and "torch " in md


def test_csv_has_one_line_per_cell_with_paper_values(table6_run):
    with open(table6_run[0] / "v1" / "table6.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = get_table("table6")
    assert [(r["row"], r["column"], r["paper"]) for r in rows] == [
        (row.id, key, cell.paper.text) for row in table.rows for key, cell in row.cells.items()]
    params = {r["row"]: r for r in rows if r["column"] == "params"}
    assert float(params["Sana-0.6B"]["reproduced"]) == pytest.approx(591.747872)
    assert float(params["Sana-0.6B"]["delta"]) == pytest.approx(1.747872)
    assert params["Sana-0.6B"]["verdict"] == "differs" and params["Sana-0.6B"]["notes"] == "params-0.6B"
    assert params["Sana-1.6B"]["command"] == "sana-eval reproduce table6"


def test_json_holds_table_results_provenance_and_resolved_config(table6_run):
    text = (table6_run[0] / "v1" / "table6.json").read_text()
    data = json.loads(text)
    assert data["schema"] == "sana-eval/table-report/1" and data["version"] == "v1"
    assert data["summary"] == {"reproduced": 9, "differs": 1, "failed": 0, "not run": 0}
    assert data["table"] == get_table("table6").to_dict()
    prov = data["provenance"]
    for key in ("git_commit", "git_dirty", "utc_time", "python", "packages", "platform", "cpu", "gpus",
                "gpu_driver", "cuda", "seeds", "config", "weights_sha256"):
        assert key in prov, key
    assert prov["packages"]["torch"] and "transformers" in prov["packages"]
    assert prov["config"]["presets"]["Sana_600M_1024px"]["hidden_size"] == 1152
    assert {"architecture", "generate_score", "reconstruction"} <= set(prov["config"]["runners"])
    hostname = socket.gethostname()
    if len(hostname) >= 6:
        assert hostname not in text
    report = read_report(table6_run[0] / "v1" / "table6.json")
    assert report.to_dict() == data


def test_rerun_uses_the_json_not_todays_registry(table6_run, tmp_path):
    source = json.loads((table6_run[0] / "v1" / "table6.json").read_text())
    # Edit the stored paper value: a rerun that read the registry instead would still say "differs".
    source["table"]["rows"][0]["cells"]["params"]["paper"] = "592"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(source))
    rerun(edited, tmp_path / "out", version="v2")
    again = json.loads((tmp_path / "out" / "v2" / "table6.json").read_text())
    params = {r["row"]: r for r in again["results"] if r["column"] == "params"}
    assert params["Sana-0.6B"]["paper"] == "592" and params["Sana-0.6B"]["verdict"] == "reproduced"
    assert params["Sana-1.6B"]["verdict"] == "reproduced"


def test_index_lists_every_version_newest_first(tmp_path):
    reproduce(["table6"], tmp_path, version="2026-01-01-aaaa")
    reproduce(["table2", "table6"], tmp_path, version="2026-02-01-bbbb")
    (tmp_path / "notes").mkdir()          # a folder without reports is not a version
    (tmp_path / "2026-01-15-cccc-bench").mkdir()          # ... but a bench run's Markdown is linked below
    (tmp_path / "2026-01-15-cccc-bench" / "speed.md").write_text("# speed\n")
    readme = reproduce(["table6"], tmp_path, version="2026-02-01-bbbb")[-1].read_text()
    assert "- `2026-01-15-cccc-bench`: [speed](2026-01-15-cccc-bench/speed.md)" in readme and "notes" not in readme
    lines = [line for line in readme.splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", line).group(1) for line in lines] == ["2026-02-01-bbbb", "2026-01-01-aaaa"]
    assert "[2](2026-02-01-bbbb/table2.md), [6](2026-02-01-bbbb/table6.md)" in lines[0]
    assert lines[0].endswith("| 9 | 1 | 0 | 4 |")      # table2 (4 not run) + table6


def test_skip_reasons_reach_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("SANA_EVAL_DATA", str(tmp_path / "no-data"))
    reproduce(["table10"], tmp_path, version="v")
    md = (tmp_path / "v" / "table10.md").read_text()
    assert "## Why cells were not run" in md
    assert "needs GenEval prompts at" in md and "needs weights Efficient-Large-Model/Sana_1600M_1024px" in md
    assert ("sana-eval generate --benchmark geneval --weights $SANA_EVAL_WEIGHTS/Sana_1600M_1024px "
            "--resolution 1024") in md
    row = next(line for line in md.splitlines() if line.startswith("| 512 x 512 / Sana-1.6B"))
    assert row.startswith("| 512 x 512 / Sana-1.6B | 0.6 → 1.60 ✗ [n1] | 0.66 · [n3] [n5] [n6] | 0.99 · [n5] [n6] |")
    # the scorer weights the paper's protocol needs, and the two flow shifts of the 512 px cells
    assert "needs weights geneval/mask2former-swin-s-coco (GenEval's detector: sana-eval convert-detector" in md
    assert "--shift 1.0" in md and "--shift 3.0" in md and "--geneval-protocol sana" in md
    assert "(docs/protocols.md §9; 512 x 512 / Sana-0.6B · overall" in md


def test_all_expands_to_every_table_once(tmp_path):
    paths = reproduce(["all", "table6"], tmp_path, version="v")
    assert [p.name for p in paths if p.suffix == ".json"] == [f"table{i}.json" for i in range(1, 15)]


def test_bad_inputs_fail_before_writing(tmp_path):
    with pytest.raises(KeyError, match="did you mean table7"):
        reproduce(["table6", "tabel7"], tmp_path)
    with pytest.raises(ValueError, match="must be letters, digits"):
        reproduce(["table6"], tmp_path, version="../escape")
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_when_writing_fails_midway(tmp_path):
    target = tmp_path / "table6.md"
    target.write_text("previous report\n")
    with pytest.raises(UnicodeEncodeError):
        write_text(target, "new text " * 1000 + "\ud800")   # a lone surrogate cannot be encoded: fails mid-write
    assert target.read_text() == "previous report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table6.md"]


def test_provenance_records_versions_hashes_and_no_host_name(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x00" * 1000 + b"sana")
    prov = P.collect(seeds={"generation": 0}, config={"preset": "tiny"}, weights={"transformer": weights})
    assert prov.weights_sha256 == {"transformer": hashlib.sha256(b"\x00" * 1000 + b"sana").hexdigest()}
    assert prov.seeds == {"generation": 0} and prov.config == {"preset": "tiny"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", prov.utc_time)
    head = subprocess.run(["git", "-C", str(P.REPO_ROOT), "rev-parse", "--verify", "HEAD"], capture_output=True,
                          text=True)
    assert prov.git_commit == (head.stdout.strip() if head.returncode == 0 else None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-([0-9a-f]{8}|nocommit)(-dirty)?", P.default_version(prov))
    assert P.Provenance.from_dict(json.loads(json.dumps(prov.to_dict()))) == prov
    hostname = socket.gethostname()
    if len(hostname) >= 6:
        assert hostname not in json.dumps(prov.to_dict())


def test_a_tree_without_git_takes_its_commit_from_the_environment(monkeypatch):
    from sana_eval import provenance

    monkeypatch.setattr(provenance, "_git", lambda *args: None)
    monkeypatch.setenv("SANA_EVAL_GIT_COMMIT", "0123456789abcdef")
    monkeypatch.setenv("SANA_EVAL_GIT_DIRTY", "0")
    assert provenance.git_state() == ("0123456789abcdef", False)
    monkeypatch.delenv("SANA_EVAL_GIT_COMMIT")
    assert provenance.git_state() == (None, True)


def test_the_environment_commit_wins_over_a_stale_git_history(monkeypatch):
    """A copied tree (a GPU machine's working copy) may carry an older .git: the commit named wins."""
    from sana_eval import provenance

    monkeypatch.setattr(provenance, "_git", lambda *args: "fedcba9876543210" if args[0] == "rev-parse" else "")
    monkeypatch.setenv("SANA_EVAL_GIT_COMMIT", "0123456789abcdef")
    monkeypatch.delenv("SANA_EVAL_GIT_DIRTY", raising=False)
    assert provenance.git_state() == ("0123456789abcdef", True)
    monkeypatch.delenv("SANA_EVAL_GIT_COMMIT")
    assert provenance.git_state() == ("fedcba9876543210", False)


def test_a_report_links_the_sample_gallery_of_each_image_run_that_ran(tmp_path, monkeypatch):
    import dataclasses
    import os

    from sana_eval.provenance import collect
    from sana_eval.reproduce.images import run_folder
    from sana_eval.reproduce.report import TableReport, write_report
    from sana_eval.reproduce.runners import evaluate_table

    monkeypatch.setenv("SANA_EVAL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SANA_EVAL_DATA", str(tmp_path / "no-data"))
    table = get_table("table10")
    row = next(r for r in table.rows if r.id == "1024 x 1024 / Sana-1.6B")
    results = [dataclasses.replace(r, reproduced=0.7, verdict="differs") if (r.row, r.column) == (row.id, "colors")
               else r for r in evaluate_table(table)]
    page = run_folder(row.cells["colors"].recipe.settings) / "gallery.html"
    other = run_folder(next(r for r in table.rows if r.id != row.id and r.cells["colors"].recipe)
                       .cells["colors"].recipe.settings)
    (other / "gallery.html").parent.mkdir(parents=True)
    (other / "gallery.html").write_text("a run whose cells did not run here")
    version = tmp_path / "reports" / "v"

    def markdown() -> str:
        write_report(TableReport("v", table, collect(), tuple(results)), version)
        return (version / "table10.md").read_text()

    assert "Sample galleries" not in markdown()               # no page yet
    page.parent.mkdir(parents=True)
    page.write_text("<html></html>")
    md = markdown()
    links = re.findall(r"^- \[([^\]]+)\]\(([^)]+)\)$", md.split("## Sample galleries")[1], re.M)
    assert links[:1] == [("Sana_1600M_1024px-geneval-1024", os.path.relpath(page, version))]
    assert len(links) == 1 and (version / links[0][1]).resolve() == page.resolve()


def test_extra_numbers_are_report_columns_never_the_comparison(tmp_path, monkeypatch):
    """Table 10's counting cell compared with SANA's protocol; the official rule and the revised flow shift are
    extra columns of the Markdown tables, the CSV and the JSON (and the DataFrame), not compared."""
    import dataclasses

    from sana_eval.provenance import collect
    from sana_eval.reproduce.report import TableReport, write_report
    from sana_eval.reproduce.runners import evaluate_table
    from sana_eval.results import to_frame

    monkeypatch.setenv("SANA_EVAL_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SANA_EVAL_DATA", str(tmp_path / "no-data"))
    table = get_table("table10")
    cell = ("512 x 512 / Sana-0.6B", "counting")
    extras = {"geneval_protocol official": 0.41, "shift 3.0": 0.6}
    results = tuple(dataclasses.replace(r, reproduced=0.631, verdict="reproduced", reasons=(), extras=extras)
                    if (r.row, r.column) == cell else r for r in evaluate_table(table))
    version = tmp_path / "reports" / "v"
    write_report(TableReport("v", table, collect(), results), version)

    md = (version / "table10.md").read_text()
    grid = md.split("## Paper vs. reproduced")[1].split("\n\n")[1].splitlines()
    header = [h.strip() for h in grid[0].strip("|").split("|")]
    at = header.index("Counting")
    assert header[at + 1:at + 3] == ["Counting · geneval_protocol official", "Counting · shift 3.0"]
    assert header.count("Colors") == 1                                     # no empty extra columns elsewhere
    row = next(line for line in grid if line.startswith("| 512 x 512 / Sana-0.6B"))
    values = [v.strip() for v in row.strip("|").split("|")]
    assert values[at].startswith("0.63 → 0.631 ✓") and values[at + 1:at + 3] == ["0.410", "0.600"]
    ran = md.split("## Cells that ran")[1]
    assert ("| Row | Column | Paper | Ours | Δ | Verdict | geneval_protocol official | shift 3.0 | Detail |" in ran)
    assert "| 512 x 512 / Sana-0.6B | Counting | 0.63 | 0.631 | +0.001 | reproduced | 0.410 | 0.600 |" in ran

    with open(version / "table10.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_cell = {(r["row"], r["column"]): r for r in rows}
    assert float(by_cell[cell]["extras.geneval_protocol official"]) == 0.41
    assert float(by_cell[cell]["extras.shift 3.0"]) == 0.6 and float(by_cell[cell]["reproduced"]) == 0.631
    assert by_cell["512 x 512 / Sana-0.6B", "colors"]["extras.shift 3.0"] == ""
    data = json.loads((version / "table10.json").read_text())
    assert next(r for r in data["results"] if (r["row"], r["column"]) == cell)["extras"] == extras
    assert read_report(version / "table10.json").to_dict() == data
    frame = to_frame(version / "table10.json").set_index(["row", "column"])
    assert frame.loc[cell, "extras"] == extras and frame.loc["512 x 512 / Sana-0.6B", "colors"]["extras"] == {}
    assert frame.loc[cell, "reproduced"] == 0.631 and frame.loc[cell, "verdict"] == "reproduced"


def _installed(monkeypatch, tmp_path, version: str, direct_url: dict | None):
    """This code as `pip install .` leaves it: a tree without .git (inside a checkout's venv, where git would find
    the enclosing checkout), and a dist-info folder in the installed package's metadata format."""
    import importlib.metadata

    dist_info = tmp_path / f"sana_eval-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sana-eval\nVersion: {version}\n")
    if direct_url is not None:
        (dist_info / "direct_url.json").write_text(json.dumps(direct_url))
    monkeypatch.setattr(P, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(P, "_git", lambda *args: "fedcba9876543210fedcba9876543210fedcba98")  # the enclosing repo
    monkeypatch.setattr(P, "_distribution", lambda: importlib.metadata.PathDistribution(dist_info))
    monkeypatch.delenv("SANA_EVAL_GIT_COMMIT", raising=False)


def test_an_installed_package_names_reports_by_its_version_and_build_commit(tmp_path, monkeypatch):
    commit = "0123456789abcdef0123456789abcdef01234567"
    _installed(monkeypatch, tmp_path, "0.1.0", {"url": "https://github.com/x/sana-eval.git",
                                                "vcs_info": {"vcs": "git", "commit_id": commit}})
    prov = P.collect()
    assert (prov.git_commit, prov.git_dirty, prov.git_checkout, prov.package_version) == (commit, False, False,
                                                                                         "0.1.0")
    assert P.default_version(prov) == f"{prov.utc_time[:10]}-v0.1.0-01234567"
    assert P.Provenance.from_dict(json.loads(json.dumps(prov.to_dict()))) == prov
    paths = reproduce(["table6"], tmp_path / "reports")
    assert paths[0].parent.name == f"{prov.utc_time[:10]}-v0.1.0-01234567"
    md = paths[1].read_text()
    assert "sana-eval 0.1.0 installed, no git checkout (built from commit `01234567`)" in md.splitlines()[2]
    assert f"full build commit `{commit}`" in md and "fedcba98" not in md
    assert "| sana-eval 0.1.0 installed, no git checkout" in (tmp_path / "reports" / "README.md").read_text()


def test_an_installed_package_without_a_known_commit_says_so(tmp_path, monkeypatch):
    _installed(monkeypatch, tmp_path, "0.1.0", {"url": "file:///src/sana-eval", "dir_info": {}})   # `pip install .`
    prov = P.collect()
    assert prov.git_commit is None and not prov.git_checkout
    assert P.default_version(prov) == f"{prov.utc_time[:10]}-v0.1.0"
    assert prov.code == "sana-eval 0.1.0 installed, no git checkout (build commit unknown)"


def test_an_installed_setuptools_scm_build_names_its_commit_in_the_version(tmp_path, monkeypatch):
    _installed(monkeypatch, tmp_path, "0.2.dev3+g1a2b3c4d", None)
    prov = P.collect()
    assert prov.git_commit == "1a2b3c4d"
    assert P.default_version(prov) == f"{prov.utc_time[:10]}-v0.2.dev3_g1a2b3c4d-1a2b3c4d"


def test_reports_written_before_the_install_fields_and_extras_still_read(table6_run):
    data = json.loads((table6_run[0] / "v1" / "table6.json").read_text())
    for key in ("package_version", "git_checkout"):
        del data["provenance"][key]
    for cell in data["results"]:
        del cell["extras"]
    report = report_module.TableReport.from_dict(data)
    prov = report.provenance
    assert prov.git_checkout and prov.package_version is None and prov.code.startswith("commit `")
    assert all(r.extras == {} for r in report.results)
    assert report_module.render_csv(report) == (table6_run[0] / "v1" / "table6.csv").read_text()
