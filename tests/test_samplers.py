"""Flow samplers (model/samplers.py) against docs/model.md §5's tables, diffusers' schedulers and a closed-form ODE."""
from __future__ import annotations

import pytest
import torch

from model.samplers import (
    classifier_free_guidance,
    dpm_timesteps,
    flow_dpm_sigmas,
    flow_dpm_solver,
    flow_euler,
    flow_euler_sigmas,
    perturbed_attention_guidance,
)

diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference scheduler implementation")
# diffusers' own numpy-2 deprecation noise in DPMSolverMultistepScheduler.set_timesteps.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

DIM = 48


# ----------------------------------------------------------------------------------------------------------------
# A Gaussian data distribution x0 ~ N(mu, diag(std^2)) has a closed-form flow: the exact velocity
# v(x, sigma) = E[eps - x0 | x_sigma = x] and the exact ODE map x_sigma -> x_0 (a per-dimension affine transport).

class GaussianFlow:
    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.mu = 0.5 * torch.randn(DIM, generator=gen, dtype=torch.float64)
        self.std = torch.linspace(0.3, 2.0, DIM, dtype=torch.float64)

    def _marginal_var(self, sigma):
        return (1 - sigma) ** 2 * self.std**2 + sigma**2

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sigma = (t.to(torch.float64) / 1000).view(-1, 1)  # (B, 1)
        var = self._marginal_var(sigma)
        centred = x.double() - (1 - sigma) * self.mu
        x0_mean = self.mu + (1 - sigma) * self.std**2 / var * centred
        eps_mean = sigma / var * centred
        return (eps_mean - x0_mean).to(x.dtype)

    def state_at(self, z: torch.Tensor, sigma: float) -> torch.Tensor:
        """The point at noise level sigma on the ODE trajectory that ends at mu + std z."""
        return (1 - sigma) * self.mu + self._marginal_var(torch.tensor(sigma, dtype=torch.float64)).sqrt() * z


def _diffusers_dpm_states(velocity, x, steps, shift):
    # The scheduler exactly as diffusers' Sana conversion builds it (scripts/convert_sana_to_diffusers.py).
    scheduler = diffusers.DPMSolverMultistepScheduler(
        flow_shift=shift, use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    scheduler.set_timesteps(steps)
    states = []
    for t in scheduler.timesteps:
        v = velocity(x, t.expand(x.shape[0]) * 1.0)  # SanaPipeline: timestep * timestep_scale (float)
        x = scheduler.step(v, t, x, return_dict=False)[0]
        states.append(x)
    return scheduler.timesteps.tolist(), states


def _diffusers_euler_states(velocity, x, steps, shift):
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    states = []
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t.expand(x.shape[0])), t, x, return_dict=False)[0]
        states.append(x)
    return scheduler.timesteps.tolist(), states


def _run_recording(sampler, velocity, x, steps, shift, **kwargs):
    calls, states = [], []

    def recording_velocity(x_in, t):
        calls.append(t.clone())
        return velocity(x_in, t)

    out = sampler(recording_velocity, x, steps, shift, callback=lambda info: states.append(info["x"]), **kwargs)
    return out, calls, states


def _assert_states_close(ours, reference, rel):
    assert len(ours) == len(reference)
    for i, (a, b) in enumerate(zip(ours, reference)):
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        assert err <= rel * scale, f"step {i}: max |ours - diffusers| = {err:.3g} > {rel} * {scale:.3g}"


# ----------------------------------------------------------------------------------------------------------------
# Golden schedules typed in from docs/model.md §5.1 / §5.2.

SPEC_DPM_TIMESTEPS_20 = {
    3.0: [999, 982, 963, 944, 922, 899, 874, 847, 817, 785, 749, 710, 666, 617, 562, 499, 428, 345, 249, 136],
    4.0: [999, 986, 972, 957, 940, 922, 902, 881, 856, 829, 799, 765, 726, 682, 631, 571, 499, 413, 307, 173],
    6.0: [999, 991, 981, 971, 959, 947, 933, 917, 899, 879, 856, 830, 799, 763, 719, 666, 599, 513, 399, 239],
    1.0: list(range(999, 0, -50)),
}
SPEC_DPM_SIGMAS_20_S3 = [
    0.99967, 0.98242, 0.96394, 0.94409, 0.92272, 0.89964, 0.87464, 0.84746, 0.81781, 0.78534, 0.74962,
    0.71015, 0.6663, 0.61728, 0.56215, 0.49967, 0.42827, 0.34589, 0.24979, 0.13624, 0.0,
]
SPEC_EULER_TIMESTEPS_20_S3 = [
    1000.0, 981.875, 962.386, 941.373, 918.652, 894.003, 867.172, 837.855, 805.689, 770.239, 730.974, 687.244,
    638.24, 582.948, 520.074, 447.944, 364.352, 266.33, 149.787, 8.929,
]


@pytest.mark.parametrize("shift", sorted(SPEC_DPM_TIMESTEPS_20))
def test_dpm_timesteps_match_spec_table(shift):
    timesteps = dpm_timesteps(flow_dpm_sigmas(20, shift))
    assert timesteps.dtype == torch.int64
    assert timesteps.tolist() == SPEC_DPM_TIMESTEPS_20[shift]


def test_dpm_sigmas_match_spec_table():
    sigmas = flow_dpm_sigmas(20, 3.0)
    assert sigmas.dtype == torch.float64 and sigmas[-1].item() == 0.0
    torch.testing.assert_close(sigmas, torch.tensor(SPEC_DPM_SIGMAS_20_S3, dtype=torch.float64), rtol=0, atol=5e-6)


def test_euler_timesteps_match_spec_table():
    sigmas = flow_euler_sigmas(20, 3.0)
    assert sigmas[0].item() == 1.0 and sigmas[-1].item() == 0.0
    expected = torch.tensor(SPEC_EULER_TIMESTEPS_20_S3, dtype=torch.float64)
    torch.testing.assert_close(1000 * sigmas[:-1], expected, rtol=0, atol=5e-4)


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, 4.0, 6.0, 2.5])
def test_schedules_match_diffusers(steps, shift):
    dpm = diffusers.DPMSolverMultistepScheduler(
        flow_shift=shift, use_flow_sigmas=True, prediction_type="flow_prediction"
    )
    dpm.set_timesteps(steps)
    sigmas = flow_dpm_sigmas(steps, shift)
    assert dpm_timesteps(sigmas).tolist() == dpm.timesteps.tolist()
    torch.testing.assert_close(sigmas.float(), dpm.sigmas, rtol=0, atol=0)  # diffusers stores the fp32 rounding

    euler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    euler.set_timesteps(steps)
    torch.testing.assert_close(flow_euler_sigmas(steps, shift).float(), euler.sigmas, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "bad", [{"steps": 0}, {"steps": 2.0}, {"shift": 0.0}, {"shift": -1.0}, {"shift": float("nan")}]
)
@pytest.mark.parametrize("schedule", [flow_dpm_sigmas, flow_euler_sigmas])
def test_schedules_reject_bad_arguments(schedule, bad):
    kwargs = {"steps": 20, "shift": 3.0, **bad}
    with pytest.raises(ValueError, match="steps|shift"):
        schedule(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Step-by-step parity with diffusers on the analytic velocity field (fp32 latents, as both pipelines keep them).

@pytest.mark.parametrize("steps", [1, 2, 5, 20])
@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_flow_dpm_solver_matches_diffusers_every_step(steps, shift):
    flow = GaussianFlow()
    x = torch.randn(3, DIM, generator=torch.Generator().manual_seed(1))
    ref_timesteps, ref_states = _diffusers_dpm_states(flow.velocity, x, steps, shift)
    out, calls, states = _run_recording(flow_dpm_solver, flow.velocity, x, steps, shift)
    assert len(calls) == steps  # NFE = N
    assert [c[0].item() for c in calls] == ref_timesteps  # integer timesteps, passed as float
    assert all(c.shape == (3,) and c.dtype == torch.float32 for c in calls)
    _assert_states_close(states, ref_states, rel=1e-6)
    assert out is states[-1] and out.dtype == torch.float32


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
@pytest.mark.parametrize("shift", [1.0, 3.0, 6.0])
def test_flow_euler_matches_diffusers_every_step(steps, shift):
    flow = GaussianFlow()
    x = torch.randn(3, DIM, generator=torch.Generator().manual_seed(2))
    ref_timesteps, ref_states = _diffusers_euler_states(flow.velocity, x, steps, shift)
    out, calls, states = _run_recording(flow_euler, flow.velocity, x, steps, shift)
    assert len(calls) == steps
    ours_timesteps = torch.tensor([c[0].item() for c in calls])
    torch.testing.assert_close(ours_timesteps, torch.tensor(ref_timesteps), rtol=1e-6, atol=0)
    _assert_states_close(states, ref_states, rel=1e-6)
    assert out is states[-1]


def test_nvlabs_data_prediction_is_the_same_formula():
    """NVlabs' (x - sigma eps_hat) / (1 - sigma) equals diffusers' x - sigma v exactly in float64; in fp32 the
    division by 1 - sigma ~ 3e-4 at the first step costs a few ulps more than the diffusers form
    (docs/model.md §5.1)."""
    flow = GaussianFlow()
    x = torch.randn(3, DIM, generator=torch.Generator().manual_seed(3))
    nv64 = flow_dpm_solver(flow.velocity, x.double(), 20, 3.0, x0_formula="nvlabs")
    hf64 = flow_dpm_solver(flow.velocity, x.double(), 20, 3.0, x0_formula="diffusers")
    assert nv64.dtype == torch.float64
    torch.testing.assert_close(nv64, hf64, rtol=1e-12, atol=1e-12)
    _, reference = _diffusers_dpm_states(flow.velocity, x, 20, 3.0)
    nv32 = flow_dpm_solver(flow.velocity, x, 20, 3.0, x0_formula="nvlabs")
    _assert_states_close([nv32], reference[-1:], rel=1e-4)
    with pytest.raises(ValueError, match="x0_formula"):
        flow_dpm_solver(flow.velocity, x, 20, 3.0, x0_formula="pixart")


# ----------------------------------------------------------------------------------------------------------------
# Accuracy against the exact ODE solution (paper §3.2: Flow-DPM-Solver converges in far fewer steps than Euler).

def test_dpm_solver_is_much_more_accurate_than_euler_at_20_steps():
    flow, shift = GaussianFlow(), 3.0
    z = torch.randn(256, DIM, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = flow.mu + flow.std * z

    def rms_error(sample):
        return ((sample - exact) ** 2).mean().sqrt().item()

    def dpm(steps):
        start = flow.state_at(z, flow_dpm_sigmas(steps, shift)[0].item())  # DPM starts at sigma_0 = shift(0.999)
        return rms_error(flow_dpm_solver(flow.velocity, start, steps, shift))

    def euler(steps):
        return rms_error(flow_euler(flow.velocity, flow.state_at(z, 1.0), steps, shift))

    # The closed form is the limit of the ODE: a fine Euler run reaches it up to its last jump from 1000 sigma ~ 0.5.
    assert euler(2000) < 2e-3
    dpm_errors = [dpm(n) for n in (10, 20, 50)]
    assert dpm_errors[0] > dpm_errors[1] > dpm_errors[2]
    assert dpm_errors[1] < 0.25 * euler(20)


# ----------------------------------------------------------------------------------------------------------------
# Interface: dtypes, callback, progress bar, errors.

def test_half_precision_latents_are_sampled_in_fp32():
    flow = GaussianFlow()
    seen = []

    def velocity(x, t):
        seen.append((x.dtype, t.dtype))
        return flow.velocity(x, t).to(torch.bfloat16)  # a bf16 model output is upcast before the update

    x = torch.randn(2, DIM, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    for sampler in (flow_dpm_solver, flow_euler):
        seen.clear()
        out = sampler(velocity, x, 4, 3.0)
        assert out.dtype == torch.float32
        assert set(seen) == {(torch.float32, torch.float32)}


def test_callback_reports_every_step():
    flow = GaussianFlow()
    x = torch.randn(2, DIM, generator=torch.Generator().manual_seed(6))
    infos = []
    out = flow_dpm_solver(flow.velocity, x, 5, 3.0, callback=infos.append)
    sigmas = flow_dpm_sigmas(5, 3.0).tolist()
    assert [info["i"] for info in infos] == list(range(5))
    assert [info["sigma"] for info in infos] == sigmas[:-1]
    assert [info["sigma_next"] for info in infos] == sigmas[1:]
    assert infos[-1]["x"] is out
    torch.testing.assert_close(infos[-1]["denoised"], out)  # lower_order_final: the result is x0-hat at sigma_{N-1}


def test_progress_bar_only_when_asked(capsys):
    flow = GaussianFlow()
    x = torch.randn(1, DIM, generator=torch.Generator().manual_seed(7))
    quiet = flow_euler(flow.velocity, x, 3, 3.0)
    assert capsys.readouterr().err == ""
    loud = flow_euler(flow.velocity, x, 3, 3.0, progress=True)
    assert "Flow-Euler" in capsys.readouterr().err
    flow_dpm_solver(flow.velocity, x, 3, 3.0, progress=True)
    assert "Flow-DPM-Solver" in capsys.readouterr().err
    assert torch.equal(quiet, loud)


def test_velocity_with_wrong_shape_is_rejected():
    x = torch.zeros(2, DIM)
    with pytest.raises(ValueError, match="velocity returned shape"):
        flow_dpm_solver(lambda x, t: x[:1], x, 2, 3.0)


# ----------------------------------------------------------------------------------------------------------------
# Guidance compositions.

def _branch_velocity(branches: int, calls: list):
    """A batched velocity whose output depends on the branch (position in the stacked batch), x and t."""
    def velocity(x, t):
        calls.append((x.shape[0], t.clone()))
        branch = torch.arange(branches, dtype=x.dtype).repeat_interleave(x.shape[0] // branches).view(-1, 1)
        return torch.sin(x * (1 + branch)) + branch * t.view(-1, 1) / 1000

    return velocity


def test_classifier_free_guidance_runs_one_doubled_batch():
    calls = []
    batched = _branch_velocity(2, calls)
    x = torch.randn(3, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 874.0, dtype=torch.float64)
    guided = classifier_free_guidance(batched, 4.5)(x, t)
    assert len(calls) == 1 and calls[0][0] == 6 and torch.equal(calls[0][1], torch.cat([t, t]))
    v_uncond, v_cond = torch.sin(x), torch.sin(2 * x) + t.view(-1, 1) / 1000  # branch 0 = uncond, 1 = cond
    torch.testing.assert_close(guided, v_uncond + 4.5 * (v_cond - v_uncond))
    torch.testing.assert_close(classifier_free_guidance(batched, 1.0)(x, t), v_cond)


def test_perturbed_attention_guidance_matches_diffusers_pag_mixin():
    from diffusers.pipelines.pag.pag_utils import PAGMixin

    class Reference(PAGMixin):
        def __init__(self, pag_scale):
            self._pag_scale, self._pag_adaptive_scale = pag_scale, 0.0
            self.pag_applied_layers = ["transformer_blocks.8"]

    calls = []
    batched = _branch_velocity(3, calls)
    x = torch.randn(2, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 499.0, dtype=torch.float64)
    guided = perturbed_attention_guidance(batched, cfg_scale=5.0, pag_scale=2.0)(x, t)
    assert len(calls) == 1 and calls[0][0] == 6
    expected = Reference(2.0)._apply_perturbed_attention_guidance(
        batched(torch.cat([x, x, x]), torch.cat([t, t, t])), True, 5.0, 499
    )
    torch.testing.assert_close(guided, expected)
    # PAG off (pag_scale 0) is plain CFG, as diffusers' PAG tests check.
    cfg_only = classifier_free_guidance(_branch_velocity(2, []), 5.0)(x, t)
    torch.testing.assert_close(perturbed_attention_guidance(batched, 5.0, 0.0)(x, t), cfg_only)


def test_guided_velocity_drives_a_sampler():
    flow = GaussianFlow()
    x = torch.randn(2, DIM, generator=torch.Generator().manual_seed(8))

    def batched(x2, t2):  # both branches see the same field, so any CFG scale leaves the flow unchanged
        return flow.velocity(x2, t2)

    plain = flow_dpm_solver(flow.velocity, x, 6, 3.0)
    torch.testing.assert_close(flow_dpm_solver(classifier_free_guidance(batched, 4.5), x, 6, 3.0), plain)
