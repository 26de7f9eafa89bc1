"""The table registry against the paper transcription, the recipe runners against diffusers, and the needs checks."""
from __future__ import annotations

import ast
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from sana_eval.reproduce import needs as N
from sana_eval.reproduce.runners import PLANNED, RUNNERS, evaluate_table
from sana_eval.tables import TABLES, Need, PaperValue, TableError, Tolerance, get_table
from sana_eval.tables.schema import Column, RowSpec, build_table

PAPER_JSON = Path(__file__).resolve().parent / "data" / "paper_tables.json"
TABLES_PKG = Path(__file__).resolve().parents[1] / "sana_eval" / "tables"


# --- the paper's printed numbers (tests/data/paper_tables.json, extracted from the transcription by
# scripts/extract_paper_tables.py, a parser independent of the registry) ---------------------------------------

def _paper() -> dict[int, dict]:
    return {int(n): t for n, t in json.loads(PAPER_JSON.read_text())["tables"].items()}


def test_paper_data_lists_all_fourteen_tables():
    assert sorted(_paper()) == list(range(1, 15))
    assert sum(len(t["rows"]) for t in _paper().values()) == 112


@pytest.mark.parametrize("number", range(1, 15))
def test_every_paper_number_matches_the_transcription(number):
    """Each registry row equals the paper's row (same numbers, same order) and no row is missing or extra."""
    table = get_table(f"table{number}")
    expected = Counter((r["group"], r["row"], tuple(r["values"].values())) for r in _paper()[number]["rows"])
    ours = Counter((row.group, row.label, tuple(c.paper.text for c in row.cells.values())) for row in table.rows)
    assert ours == expected
    assert all(len(r["values"]) == len(table.columns) for r in _paper()[number]["rows"])


def test_source_tags_follow_the_transcription():
    assert {n: get_table(f"table{n}").source for n in _paper()} == {n: t["source_tag"] for n, t in _paper().items()}


# --- registry shape --------------------------------------------------------------------------------------------

def test_registry_holds_tables_1_to_14_in_order():
    assert list(TABLES) == [f"table{i}" for i in range(1, 15)]
    assert [t.number for t in TABLES.values()] == list(range(1, 15))
    assert {get_table(k).source for k in ("table2", "table3", "table4")} == {"P-img"}
    assert all(get_table(f"table{i}").verified for i in (1, *range(5, 15)))


def test_each_table_is_defined_exactly_once_in_the_source():
    ids = []
    for path in TABLES_PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "build_table":
                ids += [kw.value.value for kw in node.keywords if kw.arg == "id"]
    assert sorted(ids, key=lambda i: int(i[5:])) == list(TABLES)


def test_lookup_accepts_short_forms_and_suggests_close_ids():
    assert get_table("7") is get_table("Table 7") is get_table("table7")
    with pytest.raises(KeyError, match=r"unknown table 'tabel7'; did you mean table7"):
        get_table("tabel7")
    with pytest.raises(TableError, match="did you mean"):
        get_table("table15")


def test_every_cell_has_a_recipe_or_a_stated_reason():
    for table in TABLES.values():
        for row in table.rows:
            for key, cell in row.cells.items():
                assert cell.recipe or row.no_recipe or cell.paper.value is None, (table.id, row.id, key)
                if cell.recipe:
                    assert cell.recipe.kind in RUNNERS or cell.recipe.kind in PLANNED
                    assert cell.recipe.command.startswith("sana-eval ")
                    for need in cell.recipe.needs:
                        assert need.kind in N.CHECKS
                        assert need.kind != "dataset" or need.name in N.DATASETS


def test_known_inconsistencies_are_attached_to_their_cells():
    def refs(table_id, row_id, key):
        return {n.ref for n in get_table(table_id).notes_for(row_id, key)}

    assert "docs/tables.md §6.2" in refs("table10", "512 x 512 / Sana-1.6B", "params")
    assert "docs/tables.md §6.2" in refs("table11", "512 x 512 / Sana-1.6B", "params")
    assert "docs/tables.md §6.3" in refs("table14", "4096 x 4096 / Sana-0.6B", "latency")
    assert "docs/tables.md §6.4" in refs("table14", "4096 x 4096 / Sana-1.6B", "throughput")
    assert "docs/tables.md §6.5" in refs("table7", "512 x 512 / Sana-0.6B", "speedup")
    assert "docs/tables.md §6.1" in refs("table7", "1024 x 1024 / Sana-1.6B", "geneval")
    assert "docs/tables.md §6.11" in refs("table6", "Sana-0.6B", "heads")
    assert "docs/tables.md §6.7" in refs("table9", "T5-XXL", "latency")
    assert "params-0.6B" in refs("table6", "Sana-0.6B", "params")


def test_table_round_trips_through_its_dict():
    for table in TABLES.values():
        assert type(table).from_dict(table.to_dict()) == table


def test_table_needs_are_derived_from_recipes():
    needs = get_table("table7").needs
    assert Need("code", "sana_eval.bench.peers",
                "timing of the speedup baseline black-forest-labs/FLUX.1-dev with diffusers") in needs
    assert len(needs) == len(set(needs))
    assert get_table("table2").needs == ()


def test_bad_definitions_fail_with_the_table_and_row_named():
    col = Column("fid", "FID", "", False, Tolerance("abs", 0.1))
    with pytest.raises(TableError, match=r"t: row 'a' \(g\) has 2 values for 1 columns"):
        build_table(id="t", number=0, title="", caption="", source="P", columns=(col,),
                    rows=[RowSpec("a", "g", ("1", "2"))])
    with pytest.raises(TableError, match="duplicate row ids"):
        build_table(id="t", number=0, title="", caption="", source="P", columns=(col,),
                    rows=[RowSpec("a", "g", ("1",)), RowSpec("a", "g", ("2",))])
    with pytest.raises(TableError, match="neither a plain number"):
        PaperValue("1.0x")


# --- tolerance rules (hand-computed) ---------------------------------------------------------------------------

def test_tolerance_rules():
    rounding = Tolerance("rounding")
    assert not rounding.accepts(PaperValue("590"), 591.747872)       # 592 at the printed precision
    assert rounding.accepts(PaperValue("1604"), 1604.462752)
    assert rounding.accepts(PaperValue("0.6"), 0.591747872)
    assert not rounding.accepts(PaperValue("0.6"), 1.604462752)
    absolute = Tolerance("abs", 0.25)
    assert absolute.accepts(PaperValue("5.81"), 6.06) and not absolute.accepts(PaperValue("5.81"), 6.07)
    relative = Tolerance("rel", 0.15)
    assert relative.accepts(PaperValue("0.8"), 0.92) and not relative.accepts(PaperValue("0.8"), 0.93)
    assert relative.accepts(PaperValue("0.0"), 0.049)                 # printed "0.0" covers [0, 0.05)
    assert not relative.accepts(PaperValue("0.0"), 0.051)
    assert not Tolerance("exact").accepts(PaperValue("-"), 0.0)


# --- the architecture runner against diffusers (independent implementation) ------------------------------------

def _diffusers_parameter_count(heads: int, depth: int, cross_heads: int, width: int) -> int:
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        model = diffusers.SanaTransformer2DModel(
            in_channels=32, out_channels=32, num_attention_heads=heads, attention_head_dim=32, num_layers=depth,
            num_cross_attention_heads=cross_heads, cross_attention_head_dim=width // cross_heads,
            cross_attention_dim=width, caption_channels=2304, mlp_ratio=2.5, sample_size=32, patch_size=1)
    return sum(p.numel() for p in model.parameters())


def test_table6_recipe_matches_diffusers_and_flags_the_06b_count():
    results = {(r.row, r.column): r for r in evaluate_table(get_table("table6"))}
    expected = {"Sana-0.6B": _diffusers_parameter_count(36, 28, 16, 1152),
                "Sana-1.6B": _diffusers_parameter_count(70, 20, 20, 2240)}
    assert expected == {"Sana-0.6B": 591_747_872, "Sana-1.6B": 1_604_462_752}
    for row, count in expected.items():
        assert results[row, "params"].reproduced * 1e6 == pytest.approx(count, abs=0.5)
        assert f"{count:,} parameters" in results[row, "params"].detail
    assert results["Sana-0.6B", "params"].verdict == "differs"
    assert "printed decimals" in results["Sana-0.6B", "params"].reason
    assert results["Sana-1.6B", "params"].verdict == "reproduced"
    for row in expected:
        for key in ("width", "depth", "ffn", "heads"):
            assert results[row, key].verdict == "reproduced", (row, key)


def test_params_cells_of_tables_7_10_11_run_and_the_sic_typo_differs():
    for table_id in ("table7", "table10", "table11"):
        results = {(r.row, r.column): r for r in evaluate_table(get_table(table_id))}
        sana = [k for k in results if k[1] == "params" and "/ Sana-" in k[0]]
        assert len(sana) == 4
        typo = table_id != "table7"
        for key in sana:
            verdict = "differs" if typo and key[0] == "512 x 512 / Sana-1.6B" else "reproduced"
            assert results[key].verdict == verdict, (table_id, key)


# --- needs checks on this machine ------------------------------------------------------------------------------

def test_gpu_need_reflects_cuda_availability():
    reasons = N.unmet((Need("gpu", "A100", "timing"),))
    assert reasons == ([] if torch.cuda.is_available() else ["needs a CUDA GPU (A100, timing)"])


def test_weights_need_looks_under_the_env_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(N.WEIGHTS_ENV, str(tmp_path))
    need = Need("weights", "Efficient-Large-Model/Sana_600M_1024px", "transformer")
    missing = Need("weights", "nobody/no-such-checkpoint-7f3a", "x")
    assert N.unmet((need,)) and "Efficient-Large-Model/Sana_600M_1024px" in N.unmet((need,))[0]
    (tmp_path / "Efficient-Large-Model" / "Sana_600M_1024px").mkdir(parents=True)
    (tmp_path / "Efficient-Large-Model" / "Sana_600M_1024px" / "model.safetensors").write_bytes(b"x")
    assert N.unmet((need,)) == []
    assert N.unmet((missing,)) == ["needs weights nobody/no-such-checkpoint-7f3a (x), not found under "
                                   "$SANA_EVAL_WEIGHTS or in the HF cache"]


def test_dataset_and_code_needs(tmp_path, monkeypatch):
    monkeypatch.setenv(N.DATA_ENV, str(tmp_path))
    geneval = Need("dataset", "geneval_prompts", "geneval")
    assert N.unmet((geneval,)) == [f"needs GenEval prompts at {tmp_path}/geneval/evaluation_metadata.jsonl "
                                   f"(set $SANA_EVAL_DATA)"]
    (tmp_path / "geneval").mkdir()
    (tmp_path / "geneval" / "evaluation_metadata.jsonl").write_text("{}\n")
    assert N.unmet((geneval,)) == []
    assert N.unmet((Need("metric", "no_such_metric_xyz", "scorer"),)) == [
        "needs metric no_such_metric_xyz, not implemented yet (scorer)"]
    assert N.unmet((Need("code", "model.config", "presets"),)) == []
    with pytest.raises(ValueError, match="unknown dataset need 'mjhq'"):
        N.unmet((Need("dataset", "mjhq"),))


def test_unmet_cells_say_why_and_how_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv(N.DATA_ENV, str(tmp_path))
    monkeypatch.setenv(N.WEIGHTS_ENV, str(tmp_path))
    results = {(r.row, r.column): r for r in evaluate_table(get_table("table7"))}
    fid = results["1024 x 1024 / Sana-0.6B", "fid"]
    assert fid.verdict == "not run"
    assert any("MJHQ-30K reference images" in r for r in fid.reasons)
    assert any("Efficient-Large-Model/Sana_600M_1024px" in r for r in fid.reasons)
    assert not any("needs runner" in r for r in fid.reasons)  # the runner exists; weights and data are missing
    assert "--cfg 4.5" in fid.command and "--steps 20" in fid.command and "--metrics fid" in fid.command
    assert "sana-eval score --benchmark mjhq30k" in fid.command
    assert results["1024 x 1024 / FLUX-dev", "fid"].reasons == ("competitor model; this harness reproduces Sana only",)
    assert results["1024 x 1024 / DALLE3", "fid"].reasons == ("the paper reports no number for this cell",)
    assert all(r.reasons for r in results.values() if r.verdict == "not run")


def test_recipe_commands_parse_with_the_real_cli():
    """Every command a report prints runs as written."""
    import shlex

    from sana_eval.cli.main import build_parser

    checked = 0
    for table in TABLES.values():
        for row in table.rows:
            for recipe in (cell.recipe for cell in row.cells.values() if cell.recipe is not None):
                for part in recipe.command.split("&&"):
                    argv = shlex.split(part.strip())
                    assert argv[0] == "sana-eval", recipe.command
                    build_parser().parse_args(argv[1:])
                    checked += 1
    assert checked > 50


def test_peer_parameter_counts_come_from_their_published_configs():
    results = {(r.row, r.column): r for r in evaluate_table(get_table("table7"))}
    sdxl = results["1024 x 1024 / SDXL", "params"]
    assert sdxl.verdict == "reproduced" and sdxl.reproduced == pytest.approx(2.567, abs=1e-3)
    assert results["1024 x 1024 / FLUX-dev", "params"].reproduced == pytest.approx(11.90, abs=0.01)
    lumina = results["1024 x 1024 / LUMINA-Next", "params"]
    assert lumina.verdict == "differs" and "peer params" in lumina.notes
    assert results["1024 x 1024 / DALLE3", "params"].verdict == "not run"


def test_geneval_and_dpg_cells_run_the_papers_scorers_and_say_so():
    """Compared cells use SANA's toolkit's protocols (docs/protocols.md §9); the alternative is only shown beside."""
    checked = 0
    for table_id, keys in (("table7", ("geneval", "dpg")), ("table10", ("overall", "counting")),
                           ("table11", ("overall", "entity"))):
        table = get_table(table_id)
        for row in (r for r in table.rows if "/ Sana-" in r.id):
            for key in keys:
                settings = row.cells[key].recipe.settings
                if settings["benchmark"] == "geneval":
                    assert (settings["geneval_protocol"], settings["beside_geneval_protocol"]) == ("sana", "official")
                    assert settings["detector_weights"] == "geneval/mask2former-swin-s-coco"
                else:
                    assert (settings["dpg_mode"], settings["beside_dpg_mode"]) == ("official", "fixed")
                assert "docs/protocols.md §9" in {n.ref for n in table.notes_for(row.id, key)}
                checked += 1
    assert checked == 4 * 6


def test_512px_cells_sweep_both_checkpoint_revisions_shifts():
    """512 px configs shipped flow_shift 1.0, revised to 3.0 after the paper: compared at 1.0, 3.0 beside it."""
    for table_id, key in (("table7", "fid"), ("table10", "overall"), ("table11", "overall")):
        for row in (r for r in get_table(table_id).rows if r.id.startswith("512 x 512 / Sana-")):
            recipe = row.cells[key].recipe
            assert (recipe.settings["shift"], recipe.settings["beside_shift"]) == (1.0, 3.0)
            assert "--shift 1.0" in recipe.command and "--shift 3.0" in recipe.command
        row = next(r for r in get_table(table_id).rows if r.id == "1024 x 1024 / Sana-1.6B")
        assert "shift" not in row.cells[key].recipe.settings and "--shift" not in row.cells[key].recipe.command
