"""Reconstruction metrics (paper Table 1) against torchmetrics' functional forms, a hand PSNR and pytorch-fid."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torchmetrics.functional.image.lpips as tm_lpips
import torchvision
from PIL import Image
from pytorch_fid import fid_score
from pytorch_fid.inception import InceptionV3
from torchmetrics.functional.image import learned_perceptual_image_patch_similarity, structural_similarity_index_measure

from _fid_weights import make_random_fid_weights, write_images
from metrics.fid import FIDConfig
from metrics.images import folder_image_set
from metrics.recon import ReconConfig, reconstruction_metrics

R = 32  # image size, encoder resolution and FID img_size in these tests


@pytest.fixture
def setup(tmp_path_factory, monkeypatch):
    hub = tmp_path_factory.mktemp("hub")
    _, sha = make_random_fid_weights(hub)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    # LPIPS backbone: ImageNet weights would need a download, so both sides get the same seeded random one
    # (the LPIPS linear layers are the real ones torchmetrics ships).
    def random_backbone(net, pretrained=False):
        torch.manual_seed(123)
        return getattr(torchvision.models, net)(weights=None).features
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", random_backbone)
    monkeypatch.setattr("metrics.recon.lpips_backbone_file", lambda net: hub / f"random-{net}-backbone")
    fid = FIDConfig(img_size=R, weights_sha256=sha, device="cpu", num_workers=0, allow_few_images=True,
                    batch_size=4)
    return ReconConfig(resolution=R, batch_size=2, num_workers=0, device="cpu", fid=fid)


def _autoencode(x: torch.Tensor) -> torch.Tensor:
    """A deterministic 'reconstruction': contrast change plus a ripple."""
    h = torch.arange(x.shape[-2], dtype=x.dtype).view(-1, 1)
    return x * 0.8 + 0.1 + 0.03 * torch.sin(h / 3.0)


def test_psnr_ssim_lpips_rfid_equal_references(setup, tmp_path):
    paths = write_images(tmp_path / "orig", 3, (R, R), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reconstruction_metrics(_autoencode, folder_image_set(tmp_path / "orig"), setup)

    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    x = x.float() / 255
    y_u8 = np.floor(np.clip(_autoencode(x).numpy() * 255 + 0.5, 0, 255)).astype(np.uint8)
    y = torch.from_numpy(y_u8).float() / 255
    mse = ((y.double() - x.double()) ** 2).mean(dim=(1, 2, 3))
    psnr = 10 * torch.log10(1 / mse)
    ssim = structural_similarity_index_measure(y, x, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                               data_range=1.0, reduction="none")
    lpips = learned_perceptual_image_patch_similarity(y, x, net_type="alex", reduction="none", normalize=True)
    for k, p in enumerate(paths):
        got = res.per_item[p.stem]
        assert got["psnr"] == pytest.approx(float(psnr[k]), rel=1e-5)
        assert got["ssim"] == pytest.approx(float(ssim[k]), abs=1e-5)
        assert got["lpips"] == pytest.approx(float(lpips[k]), abs=1e-5)
    assert res.aggregate["psnr"] == pytest.approx(float(psnr.mean()), rel=1e-5)
    assert float(lpips.min()) > 0  # the random backbone still separates the two images

    # rFID = pytorch-fid's FID between the originals and the reconstructions saved losslessly.
    rec = tmp_path / "rec"
    rec.mkdir()
    for k, p in enumerate(paths):
        Image.fromarray(y_u8[k].transpose(1, 2, 0)).save(rec / p.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = InceptionV3([3])
        a = fid_score.get_activations(paths, model, 3, device="cpu", num_workers=0)
        b = fid_score.get_activations(sorted(rec.glob("*.png")), model, 3, device="cpu", num_workers=0)
        expected = fid_score.calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False),
                                                        b.mean(0), np.cov(b, rowvar=False))
    assert res.aggregate["rfid"] == pytest.approx(expected, rel=1e-5)
    lp = res.protocol["lpips"]
    assert lp["net"] == "alex" and res.protocol["ssim"]["kernel_size"] == 11 and res.protocol["resolution"] == R


def test_identical_reconstruction_rfid_zero(setup, tmp_path):
    write_images(tmp_path / "orig", 3, (R, R), seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = reconstruction_metrics(lambda x: x.clone(), folder_image_set(tmp_path / "orig"), setup)
    assert abs(res.aggregate["rfid"]) < 1e-2
    assert res.aggregate["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert res.aggregate["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert res.aggregate["psnr"] == float("inf")
