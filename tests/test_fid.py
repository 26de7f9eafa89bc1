"""FID (docs/protocols.md §1.2) against closed forms and pytorch-fid's own pipeline, on random Inception weights."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_fid import fid_score
from pytorch_fid.inception import InceptionV3

from _fid_weights import make_random_fid_weights, write_images
from metrics.base import MetricError, ProtocolMismatchError, Result
from metrics.fid import (
    FID,
    FID_WEIGHTS_FILE,
    FID_WEIGHTS_URL,
    FIDConfig,
    FIDStats,
    FIDWeightsError,
    ReferenceStatsMismatch,
    feature_stats,
    find_fid_weights,
    frechet_distance,
    load_stats,
    save_stats,
)
from metrics.images import ImageItem, ImageSet, folder_image_set, generated_like
from metrics.mjhq import MJHQ_CATEGORIES, mjhq_from_folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A torch hub dir holding random FID weights; pytorch-fid finds them there without downloading."""
    root = tmp_path_factory.mktemp("hub")
    path, sha = make_random_fid_weights(root)
    return root, path, sha


@pytest.fixture
def fid_factory(hub, monkeypatch, tmp_path):
    root, path, sha = hub
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(root))

    def make(**kw):
        kw.setdefault("num_workers", 0)
        kw.setdefault("device", "cpu")
        return FID(FIDConfig(weights_sha256=sha, **kw))
    return make


# ---------------------------------------------------------------------------------------------- math

def test_frechet_equal_covariance_is_squared_mean_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    sigma = a @ a.T + np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = float(np.sum((mu1 - mu2) ** 2))
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(expected, rel=1e-6, abs=1e-8)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(
        fid_score.calculate_frechet_distance(mu1, sigma, mu2, sigma), rel=1e-12)


def test_frechet_diagonal_covariances_closed_form():
    rng = np.random.default_rng(1)
    d1, d2 = rng.uniform(0.1, 3, size=5), rng.uniform(0.1, 3, size=5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(d1 + d2 - 2 * np.sqrt(d1 * d2))
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-9)


def test_feature_stats_float64_unbiased_covariance():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2100, 3)).astype(np.float32)
    mu, sigma = feature_stats(np.pad(x, ((0, 0), (0, 2045))), what="t")
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    assert mu.dtype == np.float64 and sigma.shape == (2048, 2048)
    np.testing.assert_allclose(sigma[:3, :3], xc.T @ xc / (len(x) - 1), rtol=1e-10)


def test_too_few_images_and_nan_features():
    feats = np.random.default_rng(3).normal(size=(100, 2048))
    with pytest.raises(MetricError, match="100 images, FID needs at least 2048"):
        feature_stats(feats, what="gen")
    with pytest.warns(UserWarning, match="at least 2048"):
        feature_stats(feats, what="gen", allow_few=True)
    feats[5, 7] = np.nan
    with pytest.raises(MetricError, match="1 images have non-finite"):
        feature_stats(feats, what="gen", allow_few=True)


# ---------------------------------------------------------------------------------------------- weights

def test_missing_weights_error_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FIDWeightsError) as e:
        find_fid_weights()
    msg = str(e.value)
    assert FID_WEIGHTS_FILE in msg and FID_WEIGHTS_URL in msg and "\n" not in msg


def test_wrong_weights_sha256_refused(hub, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub[0]))
    fid = FID(FIDConfig(device="cpu"))  # pinned official sha256 vs the random file
    with pytest.raises(FIDWeightsError, match="is not the pinned"):
        _ = fid.encoder


def test_encoder_refuses_train_mode(fid_factory):
    enc = fid_factory().encoder
    enc.model.train()
    with pytest.raises(AssertionError, match="eval mode"):
        enc(torch.rand(1, 3, 32, 32))


# ---------------------------------------------------------------------------------------------- pipeline

def test_features_equal_pytorch_fid_get_activations(fid_factory, hub, tmp_path):
    """Non-square images: our Resize+CenterCrop pre-step vs PIL resize/crop done by hand, then pytorch-fid."""
    src = write_images(tmp_path / "src", 3, (48, 32), seed=0)
    done = tmp_path / "pre"
    done.mkdir()
    for p in src:  # Sana pre-step at img_size 16: shorter side -> 16 with PIL bilinear, centre crop
        Image.open(p).convert("RGB").resize((24, 16), Image.BILINEAR).crop((4, 0, 20, 16)).save(done / p.name)
    ours = fid_factory(img_size=16, batch_size=2).features(folder_image_set(tmp_path / "src"))
    model = InceptionV3([3])  # pytorch-fid's own loader, reading the same file from the hub cache
    ref = fid_score.get_activations(sorted(done.glob("*.png")), model, batch_size=2, device="cpu", num_workers=0)
    assert ours.dtype == np.float64 and ours.shape == (3, 2048)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert ref.std(axis=0).mean() > 1e-3  # features differ between images: a non-degenerate network


def test_score_refuses_fewer_than_2048_images_before_extracting(fid_factory, tmp_path, monkeypatch):
    write_images(tmp_path / "a", 2, (16, 16), seed=3)
    s = folder_image_set(tmp_path / "a")
    fid = fid_factory(img_size=16)
    monkeypatch.setattr(type(fid), "encoder", property(lambda self: pytest.fail("extracted before checking N")))
    with pytest.raises(MetricError, match="2 images, FID needs at least 2048"):
        fid.score(s, s, by_category=False)


def _fake_mjhq(root):
    """MJHQ layout (all ten category folders) with two images in each of two categories."""
    for c in MJHQ_CATEGORIES:
        (root / c).mkdir(parents=True)
    meta = {}
    for j in range(2):
        for c in ("logo", "art"):  # key order differs from any sorted order
            meta[f"{c}{j}x"] = {"category": c, "prompt": f"a {c} picture {j}"}
    for k, (name, v) in enumerate(meta.items()):
        write_images(root / v["category"], 1, (16, 16), seed=k, ext=".jpg", names=[name])
    (root / "meta_data.json").write_text(json.dumps(meta))
    return list(meta)


def test_score_overall_equals_pytorch_fid_and_groups_categories(fid_factory, tmp_path):
    """Overall FID = pytorch-fid on the same files; per-category FID uses exactly that category's images.

    Generated "art" images are copies of the reference ones (FID ~ 0 only if grouped right); "logo" differs.
    Every sqrtm of a 2048x2048 matrix costs seconds on CPU, so the test makes as few as it can.
    """
    keys = _fake_mjhq(tmp_path / "mjhq")
    ref = mjhq_from_folder(tmp_path / "mjhq")
    assert [i.id for i in ref.items] == keys == ["logo0x", "art0x", "logo1x", "art1x"]
    assert ref.revision.startswith("meta-sha256:")
    assert [i.id for i in mjhq_from_folder(tmp_path / "mjhq", 3).items] == keys[:3]
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    for k, item in enumerate(ref.items):
        if item.category == "art":
            shutil.copyfile(item.path, gen_dir / item.path.name)
        else:
            write_images(gen_dir, 1, (16, 16), seed=50 + k, ext=".jpg", names=[item.id])
    gen = generated_like(ref, gen_dir)
    fid = fid_factory(img_size=16, batch_size=4, allow_few_images=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fid.score(gen, ref)
        model = InceptionV3([3])
        act_g = fid_score.get_activations([i.path for i in gen.items], model, 4, device="cpu", num_workers=0)
        act_r = fid_score.get_activations([i.path for i in ref.items], model, 4, device="cpu", num_workers=0)
        expected = fid_score.calculate_frechet_distance(act_g.mean(0), np.cov(act_g, rowvar=False),
                                                        act_r.mean(0), np.cov(act_r, rowvar=False))
    assert res.aggregate["fid"] == pytest.approx(expected, rel=1e-6)
    assert sorted(res.aggregate) == ["fid", "fid/art", "fid/logo"]
    assert abs(res.aggregate["fid/art"]) < 0.01 < res.aggregate["fid/logo"]
    assert set(res.provenance["reference_stats_sha256"]) == {"all", "art", "logo"}
    assert res.protocol["img_size"] == 16 and res.protocol["weights_sha256"] == fid.config.weights_sha256


def test_reference_stats_cache_refuses_mismatched_key(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    saved = save_stats(tmp_path / "s.npz", FIDStats(mu, sigma, {"dataset": "MJHQ-30K", "img_size": 512, "n": 30000}))
    back = load_stats(tmp_path / "s.npz", {"dataset": "MJHQ-30K", "img_size": 512, "n": 30000})
    np.testing.assert_array_equal(back.mu, mu)
    assert back.sha256 == saved.sha256
    with pytest.raises(ReferenceStatsMismatch, match="made for"):
        load_stats(tmp_path / "s.npz", {"dataset": "MJHQ-30K", "img_size": 1024, "n": 30000})
    (tmp_path / "s.npz.sha256").write_text("0" * 64 + "  s.npz\n")
    with pytest.raises(MetricError, match="differs from s.npz.sha256"):
        load_stats(tmp_path / "s.npz", {"dataset": "MJHQ-30K", "img_size": 512, "n": 30000})


def test_feature_cache_resumes_and_stats_cache_keyed_by_revision(fid_factory, tmp_path, monkeypatch):
    paths = write_images(tmp_path / "img", 3, (16, 16), seed=4)
    cache = str(tmp_path / "cache")
    first = fid_factory(img_size=16, batch_size=2, cache_dir=cache, allow_few_images=True)
    s = ImageSet("toy", "rev-a", tuple(ImageItem(p.stem, p) for p in paths))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = first.reference_stats(s)
    feats = first.features(s)
    second = fid_factory(img_size=16, batch_size=2, cache_dir=cache, allow_few_images=True)
    monkeypatch.setattr(type(second), "encoder", property(lambda self: pytest.fail("features were recomputed")))
    np.testing.assert_array_equal(second.features(s), feats)
    assert second.reference_stats(s).sha256 == stats.sha256
    with pytest.raises(ReferenceStatsMismatch):
        second.reference_stats(ImageSet("toy", "rev-b", s.items))
    with pytest.raises(ProtocolMismatchError):  # same folder, other img_size -> other protocol, other cache
        Result("fid", first.protocol, {"fid": 1.0}).merge(
            Result("fid", fid_factory(img_size=32).protocol, {"fid": 1.0}))
