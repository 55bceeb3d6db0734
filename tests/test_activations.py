"""The activation table: an activation is one entry, and every part of rnnlab takes it from there.

Every entry runs through the Python loops, the C++ loops and the theory, and carries what the
report needs; a new entry registered here (one ATen-backed, one given only as Python callables)
trains and is measured without any other file knowing of it.
"""

import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnlab.bench import autograd_reference
from rnnlab.config import RunConfig
from rnnlab.measure import names, probes, theory
from rnnlab.model import activations, backends
from rnnlab.model.activations import ACTIVATIONS, Activation, Aten, PythonOps, Quadrature
from rnnlab.model.backends import cpp as _ext
from rnnlab.model.elman import Elman, MemberInit
from rnnlab.train import train


def test_the_tables_import_without_torch_or_numpy():
    """rnnlab.config (and ``rnnlab validate``) read the names: they must stay instant."""
    code = (
        "import sys, rnnlab.model.activations, rnnlab.model.inits; "
        "assert 'torch' not in sys.modules, 'torch'; assert 'numpy' not in sys.modules, 'numpy'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def gradients(activation, backend, monkeypatch, K=2, T=9, B=3, D=2, H=6):
    """Parameter gradients, norms and hidden states of a random stack through one backend."""
    monkeypatch.setenv("RNNLAB_BACKEND", backend)
    g = torch.Generator().manual_seed(0)
    members = [MemberInit("gaussian", 1.2, g), MemberInit("orthogonal", 0.9, g)][:K]
    model = Elman(D, H, 1, activation=activation, members=members, dtype=torch.float64)
    x = torch.randn(K, T, B, D, dtype=torch.float64, generator=g)
    hs = model.hidden(x)
    (hs.sin().sum() + model(x).square().sum()).backward()
    return model, x, [hs.detach(), model.hidden_grad_norms, *(p.grad for p in model.parameters())]


def assert_runs_everywhere(activation, monkeypatch, backends_=("python", "cpp")):
    """Every backend gives the same bits, and member 0 equals the plain autograd loop."""
    results = [gradients(activation, b, monkeypatch) for b in backends_]
    for other in results[1:]:
        for a, b in zip(results[0][2], other[2], strict=True):
            assert torch.equal(a, b), activation
    model, x, (hs, *_) = results[0]
    w = model.member(0)
    leaves = [p.clone().requires_grad_() for p in (w.weight_ih, w.weight_hh, w.bias)]
    reference = autograd_reference(x[0], *leaves, activation)
    torch.testing.assert_close(hs[0], torch.stack(reference).detach(), rtol=1e-12, atol=1e-12)


def assert_theory_is_finite(activation):
    """The mean field as step 0 takes it, the Lyapunov exponent, the moments: finite numbers
    (at a gain below every edge of chaos: a linear map above it has q* = ∞, rightly)."""
    g = torch.Generator().manual_seed(1)
    model = Elman(2, 16, 1, activation=activation, members=[MemberInit("gaussian", 0.9, g)])
    x = torch.rand(30, 8, 2, generator=g)
    predictions = theory.run_predictions(model.member(0), x)
    assert set(predictions) >= {names.THEORY_SLOPE, names.THEORY_CHI1, names.THEORY_Q_STAR}
    assert all(math.isfinite(v) for k, v in predictions.items() if k != names.THEORY_DEPTH_SCALE)
    assert math.isfinite(theory.lyapunov_max(model.member(0), x))
    for q in (0.0, 0.3, 30.0):
        assert all(math.isfinite(v) and v >= 0 for v in theory.second_moments(activation, q))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_entry_runs_on_every_loop_and_in_the_theory(name, monkeypatch):
    assert _ext.loops() is not None, (
        "C++ loops unavailable: run `python -m rnnlab.model.backends.cpp`"
    )
    assert_runs_everywhere(name, monkeypatch)
    assert_theory_is_finite(name)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_entry_has_what_the_report_needs(name):
    """A colour, a place in the legends, and γ = max |φ′| (its backward, over a fine grid)."""
    entry = ACTIVATIONS[name]
    assert re.fullmatch(r"#[0-9a-f]{6}", entry.color)
    assert activations.ACTIVATION_COLORS[name] == entry.color
    assert sorted(a.rank for a in ACTIVATIONS.values()) == list(range(len(ACTIVATIONS)))
    z = torch.linspace(-8, 8, 160_001, dtype=torch.float64)
    h = entry.fn(z)
    slope = entry.backward(torch.ones_like(h), h, torch.empty_like(h)) if entry.backward else 1
    assert float(torch.as_tensor(slope).abs().max()) == pytest.approx(entry.gamma, rel=1e-6)


def test_names_and_sort_order():
    assert tuple(ACTIVATIONS) == activations.NAMES
    order = sorted([*ACTIVATIONS, "zzz"], key=activations.activation_rank)
    assert order == ["sigmoid", "relu", "leaky_relu", "tanh", "hardtanh", "linear", "zzz"]
    with pytest.raises(ValueError, match="expected one of"):
        activations.get("tanhh")


# ------------------------------------------------------------- a new entry, nothing else
RELU6 = Activation(  # min(max(z, 0), 6): ATen's hardtanh between 0 and 6, so the C++ loops run it
    Aten("hardtanh", "hardtanh_backward", (0.0, 6.0), (0.0, 6.0)),
    Quadrature(lambda u: np.clip(u, 0, 6), lambda u: ((u > 0) & (u < 6)).astype(float), (0, 6)),
    gamma=1.0,
    color="#949494",
    rank=6,
)
SOFTSIGN = Activation(  # z / (1 + |z|): no ATen backward, so Python callables and the Python loops
    PythonOps(
        fn=lambda z: z / (1 + z.abs()),
        fn_=lambda z: z.div_(z.abs().add_(1)),
        backward=lambda g, h, out: torch.mul(g, (1 - h.abs()).square(), out=out),
    ),
    Quadrature(lambda u: u / (1 + abs(u)), lambda u: 1 / (1 + abs(u)) ** 2, limits=(-1.0, 1.0)),
    gamma=1.0,
    color="#fbafe4",
    rank=7,
)


@pytest.mark.parametrize(("name", "entry"), [("relu6", RELU6), ("softsign", SOFTSIGN)])
def test_a_new_entry_trains_and_is_measured_without_touching_another_file(name, entry, monkeypatch):
    monkeypatch.setitem(ACTIVATIONS, name, entry)
    runs = ("python", "cpp") if entry.compiled else ("python",)
    assert_runs_everywhere(name, monkeypatch, runs)
    monkeypatch.delenv("RNNLAB_BACKEND")
    assert backends.backend(torch.zeros(1, 2, 2, 4), name) == (
        "cpp" if entry.compiled else "python"
    )
    assert_theory_is_finite(name)
    assert math.isfinite(theory.mean_field(name, 1.3, input_var=0.2).chi1)
    # the one training loop, with its probes and theory, as a sweep would run it
    run = RunConfig.model_validate(
        {
            "task": {"name": "adding", "seq_len": 10},
            "model": {"hidden_size": 8},
            "train": {"steps": 4, "batch_size": 4, "eval_size": 4},
            "probe": {"every": 2},
        }
    )
    run = run.model_copy(update={"model": run.model.model_copy(update={"activation": name})})
    ms = list(train(run))
    assert len(ms) == 5 and not ms[-1].diverged
    assert ms[0].profile is not None and ms[0].profile.shape == (10,)
    for key in (names.TRAIN_LOSS, names.SLOPE, names.THEORY_CHI1, names.LYAPUNOV_MAX):
        assert math.isfinite(ms[0].metrics[key]), key
    summary = probes.profile_summary(torch.from_numpy(ms[-1].profile))
    assert summary[names.SLOPE] == ms[-1].metrics[names.SLOPE]
