"""Gradient probes: the profile n_t against independent float64 computations."""

import math

import numpy as np
import pytest
import torch

from rnnlab.measure import probes
from rnnlab.model.elman import Elman, MemberInit
from rnnlab.tasks import make_task


def model_for(task, activation, init="gaussian", gain=1.2, H=16, seed=0):
    return Elman(
        task.input_size,
        H,
        task.output_size,
        task.readout,
        activation=activation,
        members=[MemberInit(init, gain, torch.Generator().manual_seed(seed))],
        dtype=torch.float64,
    )


def measured_profile(model, task, x, y):
    loss = task.loss(model(x[None])[0], y).mean()
    loss.backward()
    return probes.gradient_profile(model.hidden_grad_norms[0], x.shape[1]).numpy()


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_profile_matches_manual_bptt_float64(activation):
    """Adding task (MSE on the last step): explicit backward recursion in numpy."""
    task = make_task("adding", 25)
    model = model_for(task, activation)
    x, y = task.sample(8, torch.Generator().manual_seed(1))
    x, y = x.double(), y.double()
    n = measured_profile(model, task, x, y)

    w = model.member(0)
    W_ih, W_hh, b = w.weight_ih.numpy(), w.weight_hh.numpy(), w.bias.numpy()
    w_out = model.readout["weight"][0].detach().numpy()[0]
    b_out = model.readout["bias"][0].detach().numpy()[0]
    phi = {
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0),
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
        "linear": lambda z: z,
    }[activation]
    dphi = {
        "tanh": lambda z: 1 - np.tanh(z) ** 2,
        "relu": lambda z: (z > 0).astype(float),
        "sigmoid": lambda z: phi(z) * (1 - phi(z)),
        "linear": np.ones_like,
    }[activation]
    X, Y = x.numpy(), y.numpy()[0, :, 0]
    expected = np.zeros(25)
    for bi in range(8):
        h, zs, hs = np.zeros(16), [], []
        for t in range(25):
            z = W_ih @ X[t, bi] + W_hh @ h + b
            h = phi(z)
            zs.append(z)
            hs.append(h)
        delta = 2 * (w_out @ hs[-1] + b_out - Y[bi]) * w_out  # ∂L_b/∂h_T
        norms = [np.linalg.norm(delta)]
        for t in range(24, 0, -1):  # ∂L_b/∂h_{t-1} = W_hhᵀ (φ′(z_t) ⊙ ∂L_b/∂h_t)
            delta = W_hh.T @ (dphi(zs[t]) * delta)
            norms.append(np.linalg.norm(delta))
        expected += np.array(norms[::-1]) / 8
    np.testing.assert_allclose(n, expected, rtol=1e-10)


def test_profile_with_loss_on_every_step_matches_per_sequence_autograd():
    """Copy task (loss on all steps): each sequence's own backward pass, via autograd.grad."""
    task = make_task("copy", 6, n_symbols=3, n_categories=4)
    model = model_for(task, "tanh")
    x, y = task.sample(5, torch.Generator().manual_seed(2))
    x = x.double()
    n = measured_profile(model, task, x, y)
    W_ih, W_hh, b = model.weight_ih[0], model.weight_hh[0], model.bias[0]  # graph leaves' views
    readout = model.readout["weight"][0], model.readout["bias"][0]
    expected = np.zeros(task.length)
    for bi in range(5):
        h, hs = torch.zeros(1, 16, dtype=torch.float64), []
        for t in range(task.length):
            h = torch.tanh(x[t, bi : bi + 1] @ W_ih.T + h @ W_hh.T + b)
            hs.append(h)
        out = torch.nn.functional.linear(torch.stack(hs), *readout)
        loss_b = task.loss(out, y[:, bi : bi + 1]).sum()
        grads = torch.autograd.grad(loss_b, hs)
        expected += np.array([g.norm().item() for g in grads]) / 5
    np.testing.assert_allclose(n, expected, rtol=1e-10)


@pytest.mark.parametrize("g", [0.9, 1.0, 1.1])
def test_linear_rnn_with_scaled_orthogonal_has_slope_ln_g(g):
    task = make_task("adding", 60)
    model = model_for(task, "linear", init="orthogonal", gain=g, H=32)
    x, y = task.sample(16, torch.Generator().manual_seed(3))
    n = torch.from_numpy(measured_profile(model, task, x.double(), y.double()))
    summary = probes.profile_summary(n)
    assert summary["grad_h/slope"] == pytest.approx(math.log(g), abs=1e-6)
    assert summary["grad_h/log10_ratio"] == pytest.approx(59 * math.log10(g), abs=1e-6)
    assert summary["grad_h/fit_points"] == 60


def test_summary_keeps_underflow_and_overflow_as_data():
    n = torch.tensor([0.0, 0.0, 1e-30, 1e-20, 1e-10, 1.0], dtype=torch.float64)
    s = probes.profile_summary(n)
    assert s["grad_h/fit_points"] == 4
    assert s["grad_h/slope"] == pytest.approx(
        -10 * math.log(10), rel=1e-9
    )  # ln n falls 10 decades per step back
    assert s["grad_h/log10_ratio"] == -math.inf
    s = probes.profile_summary(torch.tensor([math.inf, math.nan, 2.0, 1.0], dtype=torch.float64))
    assert s["grad_h/slope"] == pytest.approx(math.log(2)) and s["grad_h/log10_ratio"] == math.inf
    assert math.isnan(probes.profile_summary(torch.tensor([0.0, 1.0]))["grad_h/slope"])


def test_spectrum():
    w = torch.diag(torch.tensor([3.0, -0.5])) + torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    s = probes.spectrum(w)
    assert s["weights/W_hh_radius"] == pytest.approx(3.0)
    assert s["weights/W_hh_sigma_max"] == pytest.approx(np.linalg.norm(w.numpy(), 2), rel=1e-6)
    assert math.isnan(probes.spectrum(torch.full((2, 2), math.inf))["weights/W_hh_radius"])


def test_recording_off_gives_none():
    task = make_task("adding", 5)
    model = model_for(task, "tanh")
    model.record_hidden_grads = False
    x, y = task.sample(2, torch.Generator().manual_seed(0))
    task.loss(model(x.double()[None])[0], y.double()).mean().backward()
    assert model.hidden_grad_norms is None
