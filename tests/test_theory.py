"""Theory: mean-field predictions and Lyapunov exponents against measurement and exact integrals."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from conftest import cli
from scipy import integrate

from rnnlab.measure import probes, theory
from rnnlab.model.activations import ACTIVATIONS
from rnnlab.model.elman import Elman, MemberInit


def one_network(D, H, activation, init, g, gen, dtype=torch.float32) -> Elman:
    """A stack of one (K = 1) without readout."""
    return Elman(D, H, activation=activation, members=[MemberInit(init, g, gen)], dtype=dtype)


def measured_slope(rnn, x, readout):
    hs = rnn.hidden(x[None])[0]
    ((hs[-1] @ readout) ** 2).mean().backward()
    return probes.profile_summary(probes.gradient_profile(rnn.hidden_grad_norms[0], x.shape[1]))[
        "grad_h/slope"
    ]


@pytest.mark.parametrize("g", [0.8, 1.0, 1.25])
def test_linear_scaled_orthogonal_measured_predicted_and_lyapunov_all_equal_ln_g(g):
    gen = torch.Generator().manual_seed(0)
    rnn = one_network(3, 32, "linear", "orthogonal", g, gen, torch.float64)
    x = torch.randn(60, 4, 3, dtype=torch.float64, generator=gen)
    measured = measured_slope(rnn, x, torch.randn(32, dtype=torch.float64, generator=gen))
    w = rnn.member(0)
    sw = math.sqrt(float(w.weight_hh.pow(2).sum() / 32))
    predicted = theory.mean_field("linear", sw).slope
    with torch.no_grad():
        u = x @ w.weight_ih.T + w.bias
    lyap = theory.lyapunov_spectrum(w.weight_hh, u, "linear", k=4)
    for value in (measured, predicted, *lyap.tolist()):
        assert value == pytest.approx(math.log(g), abs=1e-6)


@pytest.mark.parametrize("g", [1.5, 2.0, 3.0])
def test_tanh_gaussian_measured_slope_matches_mean_field(g):
    """H = 512, T = 200, no input after a random initial kick (so activity sits at q*)."""
    H, T, B = 512, 200, 4
    gen = torch.Generator().manual_seed(0)
    rnn = one_network(H, H, "tanh", "gaussian", g, gen, torch.float64)
    with torch.no_grad():
        rnn.weight_ih[0].copy_(torch.eye(H, dtype=torch.float64))
    x = torch.zeros(T, B, H, dtype=torch.float64)
    x[0] = torch.randn(B, H, dtype=torch.float64, generator=gen)
    measured = measured_slope(rnn, x, torch.randn(H, dtype=torch.float64, generator=gen))
    sw = math.sqrt(float(rnn.weight_hh[0].detach().pow(2).sum() / H))
    assert measured == pytest.approx(theory.mean_field("tanh", sw).slope, abs=0.03)


def test_critical_gains():
    assert theory.critical_gain("relu") == pytest.approx(math.sqrt(2), rel=1e-9)
    assert theory.critical_gain("linear") == pytest.approx(1.0, rel=1e-9)
    assert theory.critical_gain("tanh") == pytest.approx(1.0, abs=1e-6)  # q* → 0 at the edge
    mf = theory.mean_field("relu", math.sqrt(2))
    assert mf.chi1 == pytest.approx(1.0) and mf.slope == pytest.approx(0.0, abs=1e-12)


def test_qr_lyapunov_agrees_with_the_perturbation_estimate():
    H, T, B = 128, 300, 4
    gen = torch.Generator().manual_seed(3)
    for activation, g in (("tanh", 2.0), ("tanh", 0.7), ("relu", 1.2)):
        w = torch.randn(H, H, dtype=torch.float64, generator=gen) * g / math.sqrt(H)
        u = 0.5 * torch.randn(T, B, H, dtype=torch.float64, generator=gen)
        qr = float(theory.lyapunov_spectrum(w, u, activation, k=3)[0])
        pert = theory.lyapunov_max_perturbation(w, u, activation)
        assert qr == pytest.approx(pert, abs=0.02), activation


def qr_per_step_reference(weight_hh, u, activation, k, transient=None):
    """The QR method with one QR per step per trajectory (rnnlab before the QR interval): the
    plain loop the batched, interval-QR ``theory.lyapunov_spectrum`` is checked against."""
    phi = ACTIVATIONS[activation]
    w, u = weight_hh.detach().double(), u.detach().double()
    T, B, H = u.shape
    transient = T // 10 if transient is None else transient
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(B, H, k, dtype=w.dtype, generator=g))[0]
    h = torch.zeros(B, H, dtype=w.dtype)
    total = torch.zeros(B, k, dtype=w.dtype)
    for t in range(T):
        h = phi.fn(u[t] + h @ w.T)
        JQ = w @ Q
        if phi.backward is not None:
            JQ = phi.backward(torch.ones_like(h), h, torch.empty_like(h))[:, :, None] * JQ
        Q, R = torch.linalg.qr(JQ)
        if t >= transient:
            total += torch.log(torch.diagonal(R, dim1=1, dim2=2).abs())
    return (total / max(1, T - transient)).mean(0)


def reference_lyapunov_max(model, x):
    rnn = model.member(0)
    with torch.no_grad():
        u = torch.addmm(rnn.bias, x.flatten(0, 1), rnn.weight_ih.T).view(*x.shape[:2], -1)
    return float(qr_per_step_reference(rnn.weight_hh, u, rnn.activation, k=1)[0])


def model_and_inputs(activation, g, seed=0, L=120, B=8, H=48):
    """A float32 model as trained (gaussian W_hh of gain g) and inputs x (L, B, 2)."""
    gen = torch.Generator().manual_seed(seed)
    model = Elman(
        2, H, 1, slice(-1, None), activation=activation, members=[MemberInit("gaussian", g, gen)]
    )
    return model, torch.rand(L, B, 2, generator=gen)


def stack(models, xs):
    """weight_ih (K, H, D), weight_hh (K, H, H), bias (K, H), x (K, L, B, D)."""
    names = ("weight_ih", "weight_hh", "bias")
    params = [torch.stack([m.get_parameter(n)[0].detach() for m in models]) for n in names]
    return *params, torch.stack(xs)


@pytest.mark.parametrize(
    ("activation", "g"),
    [("tanh", 0.7), ("tanh", 2.0), ("relu", 1.2), ("relu", 1.8), ("linear", 0.9), ("linear", 1.1)],
)
def test_lyapunov_max_by_renormalisation_equals_a_qr_per_step(activation, g):
    """k = 1: the renormalised vector against the QR method. The trajectory's arithmetic is the
    same; the chaotic cases (tanh g = 2, relu g = 1.8) would otherwise decorrelate."""
    model, x = model_and_inputs(activation, g)
    expected = reference_lyapunov_max(model, x)
    assert theory.lyapunov_max(model.member(0), x) == pytest.approx(expected, abs=1e-6)
    for m in (1, 7):
        got = theory.lyapunov_max_stacked(*stack([model], [x]), activation, qr_every=m)
        assert got.shape == (1,) and got.dtype == torch.float64
        assert float(got[0]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "hardtanh"])
def test_qr_interval_equals_a_qr_per_step(activation):
    H, T, B, k = 48, 120, 6, 4
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(H, H, dtype=torch.float64, generator=gen) * 1.6 / math.sqrt(H)
    u = 0.5 * torch.randn(T, B, H, dtype=torch.float64, generator=gen)
    expected = qr_per_step_reference(w, u, activation, k)
    for m in (1, theory.QR_EVERY, 10):
        got = theory.lyapunov_spectrum(w, u, activation, k=k, qr_every=m)
        assert got.shape == (k,)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_stack_equals_each_member_alone():
    pairs = [model_and_inputs("tanh", g, seed=s) for s, g in enumerate((0.8, 1.5, 3.0))]
    weight_ih, weight_hh, bias, x = stack(*zip(*pairs, strict=True))
    stacked = theory.lyapunov_max_stacked(weight_ih, weight_hh, bias, x, "tanh")
    assert stacked.shape == (3,)
    alone = [theory.lyapunov_max(model.member(0), inputs) for model, inputs in pairs]
    assert stacked.tolist() == alone  # member by member: the same bits (``member_mm``)
    # the spectrum of a stack, k > 1, against member by member
    w = weight_hh.double()
    u = 0.5 * torch.randn(3, 60, 4, 48, dtype=torch.float64, generator=torch.Generator())
    spectra = theory.lyapunov_spectrum(w, u, "tanh", k=3)
    assert spectra.shape == (3, 3)
    for j in range(3):
        torch.testing.assert_close(
            spectra[j], theory.lyapunov_spectrum(w[j], u[j], "tanh", k=3), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("g", [0.5, 1.25, 3.0])
def test_linear_scaled_orthogonal_every_exponent_is_ln_g(g):
    """The whole spectrum (k = H), with a QR per step and at the default interval."""
    H = 16
    gen = torch.Generator().manual_seed(1)
    w = g * torch.linalg.qr(torch.randn(H, H, dtype=torch.float64, generator=gen))[0]
    u = torch.randn(80, 3, H, dtype=torch.float64, generator=gen)
    for m in (1, theory.QR_EVERY):
        spectrum = theory.lyapunov_spectrum(w, u, "linear", k=H, qr_every=m)
        expected = torch.full((H,), math.log(g), dtype=torch.float64)
        torch.testing.assert_close(spectrum, expected, rtol=0, atol=1e-6)


def test_dead_relu_network_gives_minus_infinity_not_nan():
    """Every unit off (b ≪ 0): the tangent vector is zero, λ_max = −∞ as with a QR per step."""
    model, x = model_and_inputs("relu", 1.0)
    with torch.no_grad():
        model.bias.fill_(-100.0)
    member = model.member(0)
    assert theory.lyapunov_max(member, x) == reference_lyapunov_max(model, x) == -math.inf
    with pytest.raises(ValueError, match="qr_every"):
        theory.lyapunov_max_stacked(*stack([model], [x]), "relu", qr_every=0)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("q", [0.05, 0.7, 4.0])
def test_gaussian_expectations_against_adaptive_integration(activation, q):
    """Closed forms and quadrature against scipy's adaptive quadrature, split at the kinks."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731 — plain-math references, not torch
    phi, dphi = {
        "tanh": (math.tanh, lambda v: 1 - math.tanh(v) ** 2),
        "sigmoid": (sig, lambda v: sig(v) * (1 - sig(v))),
        "relu": (lambda v: max(v, 0.0), lambda v: float(v > 0)),
        "linear": (lambda v: v, lambda v: 1.0),
        "leaky_relu": (lambda v: v if v > 0 else 0.01 * v, lambda v: 1.0 if v > 0 else 0.01),
        "hardtanh": (lambda v: min(max(v, -1.0), 1.0), lambda v: float(abs(v) < 1)),
    }[activation]

    def expect(f):
        s = math.sqrt(q)
        edges = [-12.0, *sorted({0.0, 1 / s, -1 / s}), 12.0]  # split at every kink
        pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return sum(
            integrate.quad(lambda z: f(s * z) * pdf(z), a, b, epsabs=1e-14, epsrel=1e-12)[0]
            for a, b in itertools.pairwise(edges)
        )

    e_phi2, e_dphi2 = theory.second_moments(activation, q)
    assert e_phi2 == pytest.approx(expect(lambda v: phi(v) ** 2), rel=1e-9, abs=1e-12)
    assert e_dphi2 == pytest.approx(expect(lambda v: dphi(v) ** 2), rel=1e-9, abs=1e-12)


def test_fixed_point_satisfies_its_equation():
    for activation in ("tanh", "sigmoid", "hardtanh", "relu"):
        mf = theory.mean_field(activation, 0.9, input_var=0.3, bias_var=0.05)
        e_phi2, e_dphi2 = theory.second_moments(activation, mf.q_star)
        assert mf.q_star == pytest.approx(0.81 * e_phi2 + 0.35, rel=1e-9)
        assert mf.chi1 == pytest.approx(0.81 * e_dphi2, rel=1e-12)
        assert mf.depth_scale == pytest.approx(-1 / math.log(mf.chi1))


def test_cli_theory_json_and_bad_input():
    proc = cli("theory", "--activation", "relu", "--gain", str(math.sqrt(2)), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"q_star", "chi1", "slope", "depth_scale"}
    assert out["chi1"] == pytest.approx(1.0) and abs(out["slope"]) < 1e-12
    proc = cli("theory", "--activation", "tanh", "--gain", "2")
    assert proc.returncode == 0 and "edge of chaos at σ_w = 1" in proc.stdout
    for bad in (
        ["--activation", "tanhh", "--gain", "1"],
        ["--activation", "tanh", "--gain", "-1"],
        ["--activation", "tanh", "--gain", "1", "--input-var", "-0.1"],
    ):
        proc = cli("theory", *bad)
        assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_underflow_is_counted_and_the_fit_uses_the_finite_part():
    """A sigmoid network's profile underflows float32 within a few dozen steps: nothing breaks."""
    gen = torch.Generator().manual_seed(0)
    rnn = one_network(2, 32, "sigmoid", "orthogonal", 1.0, gen)
    x = torch.rand(200, 4, 2, generator=gen)
    hs = rnn.hidden(x[None])[0]
    hs[-1].sum().backward()
    n = probes.gradient_profile(rnn.hidden_grad_norms[0], 4)
    s = probes.profile_summary(n)
    assert s["grad_h/underflow"] > 100 and s["grad_h/fit_points"] == 200 - s["grad_h/underflow"]
    assert np.isfinite(s["grad_h/slope"]) and s["grad_h/slope"] < -1


def test_moments_stay_accurate_for_wide_pre_activations():
    """At large q the nodes follow u = √q z (where tanh′ lives), not z: checked against a dense
    trapezoid rule in u, and χ₁ against the large-gain asymptote σ_w·4/(3√(2π)) for tanh
    (E[tanh′(u)²] → ∫ sech⁴ / √(2πq) = (4/3)/√(2πq), q* → σ_w²)."""
    import numpy as np

    from rnnlab.measure.theory import mean_field, second_moments

    for q in (9.0, 15.9, 16.1, 400.0, 1e6):
        u = np.linspace(-60, 60, 2_000_001)
        density = np.exp(-(u**2) / (2 * q)) / np.sqrt(2 * np.pi * q)
        t = np.tanh(u)
        want = (np.trapezoid(t**2 * density, u), np.trapezoid((1 - t**2) ** 2 * density, u))
        tail = math.erfc(60 / math.sqrt(2 * q))  # tanh² = 1 beyond the grid
        got = second_moments("tanh", q)
        assert abs(got[0] - (want[0] + tail)) < 1e-7 and abs(got[1] / want[1] - 1) < 1e-6
    for gain in (1e3, 1e4):
        chi1 = mean_field("tanh", gain).chi1
        assert abs(chi1 / (gain * 4 / (3 * math.sqrt(2 * math.pi))) - 1) < 1e-3


def test_lyapunov_from_rest_needs_a_drive_and_then_agrees_with_a_random_start():
    """dyn/lyapunov_max starts every trajectory at h_0 = 0 and discards T/10 steps. Without
    input, h = 0 is a fixed point and the estimate is that point's exponent, ln ρ(W_hh), not
    the chaotic attractor's; a weak drive (σ_u = 0.1) kicks the state off it within the
    transient, and the estimate then equals a reference started from a random state with a
    200-step burn-in (Engelken et al. 2020), and ½ ln χ₁ to a finite-size offset."""
    H, T, g = 128, 400, 2.0
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(H, H, generator=gen, dtype=torch.float64) * (g / math.sqrt(H))
    at_rest = float(
        theory.lyapunov_spectrum(w, torch.zeros(T, 4, H, dtype=torch.float64), "tanh", k=1)[0]
    )
    radius = float(torch.linalg.eigvals(w).abs().max())
    assert at_rest == pytest.approx(math.log(radius), abs=0.02)
    u = 0.1 * torch.randn(T, 8, H, generator=gen, dtype=torch.float64)
    lam = float(theory.lyapunov_spectrum(w, u, "tanh", k=1)[0])

    h = torch.tanh(torch.randn(8, H, generator=gen, dtype=torch.float64))  # random start
    for _ in range(200):  # burn-in on a fresh drive
        h = torch.tanh(h @ w.T + 0.1 * torch.randn(8, H, generator=gen, dtype=torch.float64))
    v = torch.randn(8, H, generator=gen, dtype=torch.float64)
    total = torch.zeros(8, dtype=torch.float64)
    for t in range(T):
        h = torch.tanh(h @ w.T + u[t])
        v = (v @ w.T) * (1 - h * h)
        n = v.norm(dim=1)
        v = v / n[:, None]
        total += n.log() if t >= T // 10 else 0
    reference = float((total / (T - T // 10)).mean())
    assert lam == pytest.approx(reference, abs=0.01)
    predicted = theory.mean_field("tanh", float(w.pow(2).sum() / H) ** 0.5, 0.01).slope
    assert lam == pytest.approx(predicted, abs=0.03) and lam > 0.1
