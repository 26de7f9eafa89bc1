"""Checkpoint comparison: known-answer deltas and intervals, the GenEval and FID rules, refusals, exit codes,
report files. References: closed forms, scipy.stats.bootstrap, pytorch-fid, GenEval's summary_scores rule."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy import stats

from metrics.base import ProtocolMismatchError, Result, sha256_file
from metrics.fid import FIDStats, frechet_distance, save_stats
from sana_eval.compare.bootstrap import frechet_distance_eigh
from sana_eval.compare.deltas import CompareError, compare, compare_results, parse_fail_rule
from sana_eval.compare.report import compare_command
from sana_eval.results import ResultsError, read_results, write_results

PROTO = {"metric": "clip_score", "model": "ViT-L-14", "versions": {"torch": "2.4", "numpy": "2.0"}}


def mean_result(values, metric="clip_score", protocol=PROTO) -> Result:
    per_item = {f"p{i:03d}": {metric: float(v)} for i, v in enumerate(values)}
    return Result(metric, protocol, {metric: float(np.mean(values))}, per_item)


# ----------------------------------------------------------------------------------------------------------------
# Per-prompt means.

def test_constant_shift_gives_the_shift_and_a_degenerate_interval(tmp_path):
    a = np.random.default_rng(0).normal(28.0, 2.0, size=200)
    write_results([mean_result(a)], tmp_path / "a.json")
    write_results([mean_result(a + 0.375)], tmp_path / "b.json")
    row = compare(tmp_path / "a.json", tmp_path / "b.json", n_boot=300, device="cpu").row("clip_score")
    assert row.delta == pytest.approx(0.375, abs=1e-12)
    assert row.ci == pytest.approx((0.375, 0.375), abs=1e-12)
    assert row.verdict == "better" and row.higher_is_better


def test_paired_interval_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, 60)
    b = a + rng.normal(0.2, 0.5, 60)          # paired: B shares A's per-prompt difficulty
    row = compare_results({"clip_score": mean_result(a)}, {"clip_score": mean_result(b)}, n_boot=4000, seed=3,
                          device="cpu").row("clip_score")
    ref = stats.bootstrap((a, b), lambda x, y: y.mean() - x.mean(), paired=True, vectorized=False,
                          n_resamples=4000, method="percentile", rng=np.random.default_rng(7)).confidence_interval
    width = ref.high - ref.low
    assert row.ci[0] == pytest.approx(ref.low, abs=0.08 * width)
    assert row.ci[1] == pytest.approx(ref.high, abs=0.08 * width)
    # Pairing matters: the unpaired interval is much wider, so agreement above is not an accident.
    unpaired = stats.bootstrap((a, b), lambda x, y: y.mean() - x.mean(), paired=False, vectorized=False,
                               n_resamples=1000, method="percentile", rng=np.random.default_rng(7))
    assert unpaired.confidence_interval.high - unpaired.confidence_interval.low > 1.5 * width


def test_interval_covers_the_true_delta_about_95_percent_of_the_time():
    hits, repeats = 0, 200
    for seed in range(repeats):
        rng = np.random.default_rng(1000 + seed)
        a, b = rng.normal(1.0, 1.0, 40), rng.normal(1.3, 1.5, 40)     # true delta 0.3
        lo, hi = compare_results({"clip_score": mean_result(a)}, {"clip_score": mean_result(b)}, n_boot=200,
                                 seed=seed, device="cpu").row("clip_score").ci
        hits += lo <= 0.3 <= hi
    # Percentile intervals undercover slightly at n=40; 200 repeats give a binomial s.d. of 1.5 points.
    assert 0.88 <= hits / repeats <= 0.99


def test_same_seed_same_interval_other_seed_other_interval():
    rng = np.random.default_rng(2)
    ra, rb = {"clip_score": mean_result(rng.normal(size=50))}, {"clip_score": mean_result(rng.normal(size=50))}
    ci = [compare_results(ra, rb, n_boot=200, seed=s, device="cpu").row("clip_score").ci for s in (5, 5, 6)]
    assert ci[0] == ci[1] and ci[0] != ci[2]


# ----------------------------------------------------------------------------------------------------------------
# GenEval: overall = unweighted mean of per-tag image accuracies (docs/protocols.md §3.5).

def geneval_images(rng, prompts_per_tag, counting_cap=1.0):
    """Image-level rows (prompt id, tag, correct) as GenEval's results.jsonl holds them."""
    rows = []
    for tag, n in prompts_per_tag.items():
        for p in range(n):
            k = 3 if (tag == "position" and p == 0) else 4        # one prompt lost an image
            cap = counting_cap if tag == "counting" else 1.0
            correct = rng.random(k) < rng.uniform(0, cap)
            if tag == "counting":
                correct[0] = False                                 # leaves room for the +1 image below
            rows += [(f"{tag}-{p:02d}", tag, bool(c)) for c in correct]
    return rows


def summary_scores(rows):
    """GenEval's `summary_scores.py` rule: per-tag mean over images, then the mean over tags."""
    by_tag = defaultdict(list)
    for _, tag, c in rows:
        by_tag[tag].append(c)
    tags = {f"geneval/{t}": float(np.mean(v)) for t, v in by_tag.items()}
    return {"geneval": float(np.mean(list(tags.values()))), **tags,
            "geneval/images_correct": float(np.mean([c for _, _, c in rows]))}


def geneval_result(rows, aggregate=None) -> Result:
    per_prompt = defaultdict(list)
    for pid, tag, c in rows:
        per_prompt[(pid, tag)].append(c)
    per_item = {pid: {f"geneval/{tag}": float(np.mean(cs)), "n_images": len(cs)}
                for (pid, tag), cs in per_prompt.items()}
    return Result("geneval", {"metric": "geneval", "detector": "mask2former"},
                  aggregate or summary_scores(rows), per_item)


def test_geneval_uses_tag_means_and_a_per_tag_shift_moves_only_its_tag():
    rng = np.random.default_rng(4)
    tags = {"single_object": 7, "two_object": 9, "counting": 6, "position": 5}
    rows_a = geneval_images(rng, tags)
    # B: one more correct image in every counting prompt -> that tag's accuracy rises by exactly 1/4.
    flipped, rows_b = set(), []
    for pid, tag, c in rows_a:
        if tag == "counting" and pid not in flipped and not c:
            flipped.add(pid)
            c = True
        rows_b.append((pid, tag, c))
    assert len(flipped) == tags["counting"]
    comp = compare_results({"geneval": geneval_result(rows_a)}, {"geneval": geneval_result(rows_b)},
                           n_boot=300, device="cpu")
    assert comp.row("geneval/counting").delta == pytest.approx(0.25, abs=1e-12)
    assert comp.row("geneval/counting").ci == pytest.approx((0.25, 0.25), abs=1e-12)
    assert comp.row("geneval").delta == pytest.approx(0.25 / len(tags), abs=1e-12)
    assert comp.row("geneval").ci == pytest.approx((0.25 / len(tags),) * 2, abs=1e-12)
    assert comp.row("geneval/two_object").ci == pytest.approx((0.0, 0.0), abs=1e-12)
    assert comp.row("geneval/images_correct").ci is None                     # not a per-prompt rule
    assert "stratified by tag" in comp.row("geneval").method


def test_geneval_refuses_an_overall_that_is_not_the_mean_of_tags():
    rows = geneval_images(np.random.default_rng(5), {"single_object": 4, "colors": 9})
    agg = summary_scores(rows)
    image_mean = {**agg, "geneval": agg["geneval/images_correct"]}           # the wrong rule
    assert agg["geneval"] != pytest.approx(image_mean["geneval"])
    with pytest.raises(CompareError, match="aggregate 'geneval' is .* per-item convention"):
        compare_results({"geneval": geneval_result(rows, image_mean)}, {"geneval": geneval_result(rows)},
                        n_boot=10, device="cpu")


def test_geneval_resamples_within_tags_so_a_one_prompt_tag_is_never_lost():
    # A --limit subset may hold a single prompt of some tag; a plain resample of 40 ids drops it ~37% of
    # the time, leaving the overall score undefined. Within-tag resampling keeps every tag.
    rng = np.random.default_rng(6)
    tags = {"single_object": 20, "counting": 19, "colors": 1}
    comp = compare_results({"geneval": geneval_result(geneval_images(rng, tags))},
                           {"geneval": geneval_result(geneval_images(rng, tags))}, n_boot=300, device="cpu")
    lo, hi = comp.row("geneval").ci
    assert lo < hi and np.isfinite([lo, hi]).all()
    assert comp.row("geneval/colors").ci[0] == comp.row("geneval/colors").ci[1]   # one prompt: fixed


# ----------------------------------------------------------------------------------------------------------------
# FID: bootstrap over images against fixed reference statistics.

def test_frechet_distance_matches_pytorch_fid():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(80, 6)), rng.normal(size=(90, 6)) @ rng.normal(size=(6, 6)) + 0.5
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance_eigh(*args) == pytest.approx(calculate_frechet_distance(*args), rel=1e-9)


@pytest.mark.parametrize("n, d", [(80, 6), (300, 64), (600, 256)])
def test_bootstrap_frechet_numerics_agree_with_the_reported_fid(n, d):
    """The bootstrap's eigh route and the reported FID's scipy-sqrtm route (metrics.fid.frechet_distance) agree
    within 1e-9 relative on random full-rank statistics: the stated tolerance (sana_eval.compare.bootstrap)."""
    rng = np.random.default_rng(d)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n + 10, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.5
    args = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance_eigh(*args) == pytest.approx(frechet_distance(*args), rel=1e-9)


def fid_result(tmp_path, name, feats, stats, reference_sha=None) -> Result:
    np.save(tmp_path / f"{name}.npy", feats)
    value = calculate_frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), stats.mu, stats.sigma)
    prov = {"features": f"{name}.npy", "features_sha256": sha256_file(tmp_path / f"{name}.npy"),
            "reference_stats": "ref.npz", "reference_stats_sha256": {"all": reference_sha or stats.sha256}}
    return Result("fid", {"metric": "fid", "dims": feats.shape[1]}, {"fid": float(value), "fid/art": 7.0}, {},
                  prov)


@pytest.fixture
def fid_files(tmp_path):
    n, d = 400, 4
    shift = np.array([0.6, -0.8, 0.0, 0.0])                                   # |shift|^2 = 1
    a = np.random.default_rng(9).normal(size=(n, d))
    stats = save_stats(tmp_path / "ref.npz", FIDStats(np.zeros(d), np.eye(d), {"dataset": "toy"}))
    write_results([fid_result(tmp_path, "fa", a, stats)], tmp_path / "a.json")
    write_results([fid_result(tmp_path, "fb", a + shift, stats)], tmp_path / "b.json")
    return tmp_path, a, shift, stats


def test_fid_delta_and_interval_for_a_mean_shift(fid_files):
    tmp_path, a, shift, _ = fid_files
    row = compare(tmp_path / "a.json", tmp_path / "b.json", n_boot=1000, device="cpu").row("fid")
    # Same covariance, reference N(0, I): FID_B - FID_A = |mu_A + m|^2 - |mu_A|^2 exactly.
    assert row.delta == pytest.approx(shift @ shift + 2 * shift @ a.mean(0), abs=1e-9)
    assert not row.higher_is_better and row.verdict == "worse"
    lo, hi = row.ci
    assert lo < 1.0 < hi                                                       # the population delta |m|^2
    # Independent sides: s.d. of the delta ~ sqrt(4|m|^2/N + 4d/N^2) (mean term dominates).
    n, d = a.shape
    expected = 2 * 1.96 * np.sqrt(4 / n + 4 * d / n ** 2)
    assert hi - lo == pytest.approx(expected, rel=0.25)


def test_fid_sides_are_resampled_independently(fid_files):
    tmp_path = fid_files[0]
    row = compare(tmp_path / "a.json", tmp_path / "a.json", n_boot=300, device="cpu").row("fid")
    # A shared draw would give exactly [0, 0] for a run against itself; independent draws do not.
    assert row.delta == 0.0 and row.ci[0] < 0.0 < row.ci[1]


def test_fid_without_features_is_point_only_and_other_references_are_refused(fid_files):
    tmp_path, a, shift, stats = fid_files
    rows = compare(tmp_path / "a.json", tmp_path / "b.json", n_boot=20, device="cpu")
    assert rows.row("fid/art").ci is None and rows.row("fid/art").delta == 0.0
    bare = {"fid": Result("fid", {"metric": "fid", "dims": 4}, {"fid": 1.0}, {}, {})}
    row = compare_results(bare, bare, n_boot=20, device="cpu").row("fid")
    assert row.ci is None and "no features" in row.method
    other = {"fid": fid_result(tmp_path, "fo", a, stats, reference_sha="0" * 64)}
    with pytest.raises(CompareError, match="different reference statistics"):
        compare_results(read_results(tmp_path / "a.json"), other, n_boot=20, device="cpu")


def test_fid_features_that_do_not_give_the_reported_value_are_refused(fid_files):
    tmp_path, a, _, stats = fid_files
    r = fid_result(tmp_path, "fa", a, stats)
    bad = Result(r.metric, r.protocol, {**r.aggregate, "fid": r.aggregate["fid"] + 0.5}, {}, r.provenance)
    write_results([bad], tmp_path / "bad.json")
    with pytest.raises(CompareError, match="A fid: aggregate 'fid'"):
        compare(tmp_path / "bad.json", tmp_path / "b.json", n_boot=20, device="cpu")


# ----------------------------------------------------------------------------------------------------------------
# Refusals and the results bundle.

def test_protocol_mismatch_names_the_metric_and_first_differing_key():
    a = mean_result([1.0, 2.0])
    b = mean_result([1.0, 2.0], protocol={**PROTO, "versions": {"torch": "2.5", "numpy": "2.0"}})
    with pytest.raises(ProtocolMismatchError) as err:
        compare_results({"clip_score": a}, {"clip_score": b}, device="cpu")
    assert "clip_score" in str(err.value) and "'versions.torch'" in str(err.value)
    assert "\n" not in str(err.value)


def test_each_keys_direction_is_the_one_its_metric_declares():
    # recon declares a direction per key stem; image_reward one for all its keys, "image_reward_over_images" too.
    per_item = {f"i{k}": {"psnr": 30.0 + k, "ssim": 0.9, "lpips": 0.1 * k} for k in range(3)}
    recon = Result("recon", {"metric": "recon"}, {"rfid": 0.5, "psnr": 31.0, "ssim": 0.9, "lpips": 0.1}, per_item)
    ir = mean_result([0.5, 0.7], metric="image_reward", protocol={"m": 1})
    ir = Result(ir.metric, ir.protocol, {**ir.aggregate, "image_reward_over_images": 0.6}, ir.per_item)
    comp = compare_results({"recon": recon, "image_reward": ir}, {"recon": recon, "image_reward": ir}, n_boot=20,
                           device="cpu")
    assert {r.key: r.higher_is_better for r in comp.rows} == {
        "rfid": False, "psnr": True, "ssim": True, "lpips": False, "image_reward": True,
        "image_reward_over_images": True}
    mystery = {"mystery": mean_result([1.0, 2.0], metric="mystery")}
    with pytest.raises(CompareError, match="mystery: aggregate key 'mystery': direction unknown"):
        compare_results(mystery, mystery, n_boot=20, device="cpu")


def test_different_prompt_sets_and_non_finite_items_are_refused():
    with pytest.raises(CompareError, match="item 'p002' is only in run A"):
        compare_results({"clip_score": mean_result([1, 2, 3])}, {"clip_score": mean_result([1, 2])}, device="cpu")
    with pytest.raises(CompareError, match=r"per_item\['p001'\]\['clip_score'\] is missing or not a finite"):
        compare_results({"clip_score": mean_result([1, np.nan])}, {"clip_score": mean_result([1, 2])},
                        device="cpu")


def test_results_bundle_forms(tmp_path):
    clip, ir = mean_result([1.0, 3.0]), mean_result([0.5, 0.7], metric="image_reward", protocol={"m": 1})
    forms = {"single.json": clip.to_json(), "list.json": [clip.to_json(), ir.to_json()],
             "named.json": {"clip": clip.to_json(), "ir": ir.to_json()}}
    for name, data in forms.items():
        (tmp_path / name).write_text(json.dumps(data))
    write_results([clip, ir], tmp_path / "bundle.json")
    assert list(read_results(tmp_path / "single.json")) == ["clip_score"]
    for name in ("list.json", "named.json", "bundle.json"):
        got = read_results(tmp_path / name)
        assert list(got) == ["clip_score", "image_reward"] and got["image_reward"].aggregate["image_reward"] == 0.6
    (tmp_path / "dup.json").write_text(json.dumps([clip.to_json(), clip.to_json()]))
    with pytest.raises(ResultsError, match="dup.json: metric 'clip_score' appears twice"):
        read_results(tmp_path / "dup.json")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(ResultsError, match="junk.json: entry 0 is not a Result"):
        read_results(tmp_path / "junk.json")


# ----------------------------------------------------------------------------------------------------------------
# The CI gate and the report files.

@pytest.fixture
def geneval_runs(tmp_path):
    rng = np.random.default_rng(10)
    rows = geneval_images(rng, {"single_object": 30, "counting": 30})
    worse = [(p, t, False if t == "counting" and p < "counting-06" else c) for p, t, c in rows]
    clip = rng.normal(28, 1, 60)
    write_results([geneval_result(rows), mean_result(clip)], tmp_path / "a.json")
    write_results([geneval_result(worse), mean_result(clip + rng.normal(-0.05, 1, 60))], tmp_path / "b.json")
    drop = summary_scores(rows)["geneval"] - summary_scores(worse)["geneval"]
    assert 0.02 < drop < 0.1
    return tmp_path, drop


def test_fail_if_worse_exit_codes(geneval_runs, capsys):
    tmp, drop = geneval_runs
    a, b = tmp / "a.json", tmp / "b.json"
    assert compare_command(a, b, ["geneval:0.02"], None, n_boot=200) == 1
    assert "FAIL geneval: B is worse by" in capsys.readouterr().err
    assert compare_command(a, b, [f"geneval:{drop + 0.01}"], None, n_boot=200) == 0
    assert compare_command(b, a, ["geneval:0"], None, n_boot=200) == 0                 # B better
    assert compare_command(a, a, ["geneval:0", "clip_score:0"], None, n_boot=200) == 0  # identical
    # CLIP: B is a little worse by the point estimate, but well within the noise.
    assert compare_command(a, b, ["clip_score:0"], None, n_boot=200) == 1
    assert compare_command(a, b, ["clip_score:0"], None, n_boot=200, require_significant=True) == 0
    # GenEval's drop is also significant, so the stricter gate still fails.
    assert compare_command(a, b, ["geneval:0.02"], None, n_boot=200, require_significant=True) == 1
    with pytest.raises(CompareError, match="no compared key 'dpg'"):
        compare_command(a, b, ["dpg:1"], None, n_boot=20)
    for bad in ("geneval", "geneval:-1", "geneval:x", ":0.1"):
        with pytest.raises(CompareError, match="expected KEY:THRESHOLD"):
            parse_fail_rule(bad)


def test_report_files_are_written_atomically(geneval_runs, monkeypatch):
    tmp, _ = geneval_runs
    out = tmp / "cmp"
    assert compare_command(tmp / "a.json", tmp / "b.json", ["geneval:0.02"], out, n_boot=100, seed=4) == 1
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "compare.json").read_text())
    assert data["schema"] == "sana-eval/compare/1" and data["settings"]["seed"] == 4
    assert data["inputs"]["a"]["sha256"] == sha256_file(tmp / "a.json")
    assert [c["failed"] for c in data["checks"]] == [True]
    assert {r["key"] for r in data["rows"]} >= {"geneval", "geneval/counting", "clip_score"}
    md = (out / "compare.md").read_text()
    assert "| geneval |" in md and "- FAIL geneval" in md
    # A plot that dies half-written leaves the previous file as it was, and no temporary file.
    from matplotlib.figure import Figure
    before = (out / "compare.png").read_bytes()

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        compare_command(tmp / "a.json", tmp / "b.json", [], out, n_boot=50)
    assert (out / "compare.png").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["compare.json", "compare.md", "compare.png"]


def test_compare_command_line_exit_codes(tmp_path, capsys):
    from sana_eval.cli.main import main

    a = np.random.default_rng(1).normal(28.0, 1.0, size=50)
    write_results([mean_result(a)], tmp_path / "a.json")
    write_results([mean_result(a - 0.5)], tmp_path / "b.json")
    base = ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--n-boot", "100"]
    assert main([*base, "--fail-if-worse", "clip_score:1.0"]) == 0
    assert main([*base, "--fail-if-worse", "clip_score:0.1", "--out", str(tmp_path / "cmp")]) == 1
    assert (tmp_path / "cmp" / "compare.md").exists() and (tmp_path / "cmp" / "compare.png").exists()
    assert main([*base, "--fail-if-worse", "clip_score"]) == 2
    assert "clip_score" in capsys.readouterr().err
