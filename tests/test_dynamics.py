"""Unit statistics and the Jacobian spectrum along the theory's trajectories, against direct
computations (rnnlab.measure.dynamics)."""

import math

import pandas as pd
import pytest
import torch

from rnnlab.config import RunConfig
from rnnlab.measure import dynamics, names, probes
from rnnlab.model.activations import ACTIVATIONS
from rnnlab.model.elman import MemberWeights
from rnnlab.track import MemoryTracker
from rnnlab.train import train


def weights(w_ih, w_hh, b, activation) -> MemberWeights:
    return MemberWeights(
        *(torch.as_tensor(v, dtype=torch.float64) for v in (w_ih, w_hh, b)), activation
    )


def plain_z(m: MemberWeights, x: torch.Tensor) -> torch.Tensor:
    """z_t by the textbook loop, one sequence at a time."""
    phi = {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda z: z}[m.activation]
    L, B, _ = x.shape
    H = m.weight_hh.shape[0]
    z = torch.empty(L, B, H, dtype=torch.float64)
    for b in range(B):
        h = torch.zeros(H, dtype=torch.float64)
        for t in range(L):
            z[t, b] = m.weight_hh @ h + m.weight_ih @ x[t, b].double() + m.bias
            h = phi(z[t, b])
    return z


def test_relu_unit_statistics_on_a_hand_built_network():
    # unit 0: z = −0.1 always (dead); unit 1: z = x_t + 0.5 h1_{t−1} > 0 whenever x_t > 0;
    # unit 2: follows the sign of x_t (active about half the time)
    m = weights([[0.0], [1.0], [1.0]], [[0, 0, 0], [0, 0.5, 0], [0, 0, 0]], [-0.1, 0, 0], "relu")
    x = torch.tensor([1.0, -2.0, 3.0, 0.5, -1.0, 2.0, 1.0, -0.5, 1.5, 2.5, -3.0, 1.0])
    x = torch.stack([x, x.abs()], 1).unsqueeze(-1)  # (L=12, B=2, D=1): sequence 1 all positive
    out = dynamics.unit_statistics(m, x)
    z = plain_z(m, x)[1:]  # burn-in: L // 10 = 1 step
    active = z > 0
    assert out[names.UNITS_Q_HAT] == pytest.approx(float(z.pow(2).mean()), rel=1e-14)
    assert out[names.UNITS_SATURATED] == pytest.approx(float((~active).double().mean()))
    assert out[names.UNITS_DEAD] == pytest.approx(1 / 3)  # unit 0 only: 2 is active in seq 1
    assert 0 < out[names.UNITS_SATURATED] < 1


def test_tanh_saturation_threshold_is_one_percent_of_gamma():
    # one unit driven to z = x_t: φ′ = 1 − tanh² ≤ 0.01 ⇔ |z| ≥ atanh(√0.99) ≈ 2.993
    m = weights([[1.0]], [[0.0]], [0.0], "tanh")
    zs = torch.tensor([0.0, 0.0, 1.0, 2.9, 3.1, -3.5, -2.0, 10.0, 0.2, 0.3])
    out = dynamics.unit_statistics(m, zs.view(-1, 1, 1))
    assert ACTIVATIONS["tanh"].gamma == 1.0
    assert out[names.UNITS_SATURATED] == pytest.approx(3 / 9)  # after one step of burn-in
    assert out[names.UNITS_DEAD] == 0.0
    assert out[names.UNITS_Q_HAT] == pytest.approx(float(zs[1:].pow(2).mean()))


def test_linear_network_is_never_saturated():
    g = torch.Generator().manual_seed(0)
    m = weights(
        torch.randn(4, 2, generator=g), torch.randn(4, 4, generator=g) / 2, [0] * 4, "linear"
    )
    out = dynamics.unit_statistics(m, torch.randn(20, 3, 2, generator=g))
    assert out[names.UNITS_SATURATED] == 0.0 and out[names.UNITS_DEAD] == 0.0


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_jacobian_spectrum_equals_svdvals_of_the_explicit_product(activation):
    g = torch.Generator().manual_seed(1)
    H, D, L, B = 6, 2, 30, 3
    m = weights(
        torch.randn(H, D, generator=g),
        1.3 * torch.randn(H, H, generator=g) / math.sqrt(H),
        0.1 * torch.randn(H, generator=g),
        activation,
    )
    x = torch.randn(L, B, D, generator=g, dtype=torch.float64)
    z = plain_z(m, x)
    dphi = (1 - torch.tanh(z) ** 2) if activation == "tanh" else (z > 0).double()
    ks = [1, 2, 5, 17, 30]
    got = dynamics.jacobian_spectrum(m, x, ks)
    assert list(got["k"]) == ks
    checked = []
    for i, k in enumerate(ks):
        lmax, lmin, spreads = [], [], []
        for b in range(B):
            J = torch.eye(H, dtype=torch.float64)
            for t in range(L - 1, L - 1 - k, -1):  # ∂h_L/∂h_{L−k}: factors D_t W, t = L..L−k+1
                J = J @ torch.diag(dphi[t, b]) @ m.weight_hh
            sv = torch.linalg.svdvals(J)
            lmax.append(math.log(sv[0])), lmin.append(math.log(max(sv[-1], 1e-300)))
            spreads.append(lmax[-1] - lmin[-1])
        assert got["log_sv_max"][i] == pytest.approx(sum(lmax) / B, rel=1e-10, abs=1e-10)
        if max(spreads) < 20:  # well resolved in both
            assert got["log_sv_min"][i] == pytest.approx(sum(lmin) / B, rel=1e-8, abs=1e-8)
        elif min(spreads) > 32:  # beyond float64's resolution in both: unresolved
            assert math.isnan(got["log_sv_min"][i])
        checked.append(max(spreads) < 20)
    if activation == "tanh":  # both regimes exercised (a ReLU product is singular at once)
        assert any(checked) and not all(checked)
    summary = dynamics.jacobian_summary(got)
    assert summary[names.JAC_LOG_SV_MAX] == got["log_sv_max"][-1]


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.7])
def test_linear_scaled_orthogonal_every_singular_value_is_g_to_the_k(gain):
    g = torch.Generator().manual_seed(2)
    H, L = 16, 200
    q = torch.linalg.qr(torch.randn(H, H, generator=g, dtype=torch.float64))[0]
    m = weights(torch.randn(H, 1, generator=g), gain * q, [0] * H, "linear")
    got = dynamics.jacobian_spectrum(m, torch.randn(L, 4, 1, generator=g))
    assert got["k"][0] == 1 and got["k"][-1] == L
    expected = got["k"] * math.log(gain)
    assert got["log_sv_max"] == pytest.approx(expected, abs=1e-10)
    assert got["log_sv_min"] == pytest.approx(expected, abs=1e-10)


def test_distances_are_log_spaced_and_include_both_ends():
    ks = dynamics.distances(200)
    assert ks[0] == 1 and ks[-1] == 200 and ks == sorted(set(ks)) and len(ks) <= 12
    assert dynamics.distances(1) == [1] and dynamics.distances(0) == []


def test_training_logs_unit_statistics_and_the_jacobian_table():
    run = RunConfig.model_validate(
        {
            "task": {"seq_len": 12},
            "model": {"hidden_size": 8},
            "train": {"steps": 4, "batch_size": 4, "eval_size": 8},
            "probe": {"every": 2},
        }
    )
    ms = list(train(run))
    units = {names.UNITS_Q_HAT, names.UNITS_SATURATED, names.UNITS_DEAD}
    jac = {names.JAC_LOG_SV_MAX}  # and ln σ_min where resolved
    for m in ms:
        probed = m.profile is not None
        assert units <= set(m.metrics) if probed else not units & set(m.metrics)
        ends = m.step in (0, 4)
        assert (jac <= set(m.metrics)) == ends and (names.TABLE_JACOBIAN in m.tables) == ends
        assert (names.TABLE_GRAD_X in m.tables) == probed
        if probed:  # the input-gradient profile: every step t, its slope fitted as grad_h's
            nx = m.tables[names.TABLE_GRAD_X]
            assert list(nx["t"]) == list(range(1, 13)) and list(nx["k"]) == list(range(11, -1, -1))
            assert (
                m.metrics[names.GRAD_X_SLOPE]
                == probes.profile_summary(torch.from_numpy(nx["n_t"]))[names.SLOPE]
            )
    first = ms[0].tables[names.TABLE_JACOBIAN]
    assert first["k"][-1] == 12
    assert ms[0].metrics[names.JAC_LOG_SV_MAX] == first["log_sv_max"][-1]
    low = first["log_sv_min"][-1]
    assert ms[0].metrics.get(names.JAC_LOG_SV_MIN, math.nan) == low or math.isnan(low)
    assert not math.isnan(low) and ms[0].metrics[names.JAC_LOG_SV_MAX] >= low  # L = 12: resolved
    tracker = MemoryTracker()
    tracker.start_run(0, run, "r")
    for m in ms:
        tracker.log(0, m)
    assert [s for s, _ in tracker.runs[0]["tables"][names.TABLE_JACOBIAN]] == [0, 4]
    assert [s for s, _ in tracker.runs[0]["tables"][names.TABLE_GRAD_X]] == [0, 2, 4]
    frame = pd.concat(
        pd.DataFrame({"step": s, **c}) for s, c in tracker.runs[0]["tables"]["jacobian"]
    )
    assert list(frame.columns) == ["step", "k", "log_sv_max", "log_sv_min"]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_unit_statistics_of_every_activation_against_autograd_derivatives(activation):
    """φ′ by autograd of the table's φ (not its backward kernel), on a driven random network."""
    g = torch.Generator().manual_seed(4)
    H, D, L, B = 12, 2, 40, 5
    act = ACTIVATIONS[activation]
    m = weights(
        3 * torch.randn(H, D, generator=g),
        1.5 * torch.randn(H, H, generator=g) / math.sqrt(H),
        torch.randn(H, generator=g),
        activation,
    )
    x = torch.randn(L, B, D, generator=g, dtype=torch.float64)
    z = torch.empty(L, B, H, dtype=torch.float64)
    h = torch.zeros(B, H, dtype=torch.float64)
    for t in range(L):
        z[t] = x[t] @ m.weight_ih.T + m.bias + h @ m.weight_hh.T
        h = act.fn(z[t].clone())
    zz = z[L // 10 :].clone().requires_grad_()
    (dphi,) = torch.autograd.grad(act.fn(zz.clone()).sum(), zz)
    saturated = dphi.abs() <= dynamics.SATURATED * act.gamma
    out = dynamics.unit_statistics(m, x)
    assert out[names.UNITS_Q_HAT] == pytest.approx(float(zz.detach().pow(2).mean()), rel=1e-12)
    assert out[names.UNITS_SATURATED] == pytest.approx(float(saturated.double().mean()))
    assert out[names.UNITS_DEAD] == pytest.approx(float(saturated.all(0).all(0).double().mean()))


def test_a_product_that_left_float64_is_recorded_as_nan_not_an_error():
    """Weights that exploded to infinity: the Jacobian spectrum is NaN (data), where the SVD
    raised and failed the run ("input matrix contained non-finite values")."""
    H = 4
    w = torch.eye(H, dtype=torch.float64) * 1.5
    w[0, 0] = math.inf
    member = MemberWeights(torch.ones(H, 1, dtype=torch.float64), w, torch.zeros(H), "linear")
    table = dynamics.jacobian_spectrum(member, torch.ones(5, 2, 1, dtype=torch.float64))
    assert len(table["k"]) > 0
    assert all(math.isnan(v) for v in [*table["log_sv_max"], *table["log_sv_min"]])
    assert math.isnan(dynamics.jacobian_summary(table)[names.JAC_LOG_SV_MAX])
