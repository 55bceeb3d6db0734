"""The fused BPTT path against an independent autograd loop (retain_grad on every h_t)."""

import pytest
import torch

from rnnlab.bench import autograd_reference
from rnnlab.model.activations import ACTIVATIONS
from rnnlab.model.backends import cpp as _ext
from rnnlab.model.elman import Elman, MemberInit, _ElmanBPTT

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


@pytest.fixture(params=["cpp", "python"], autouse=True)
def loops(request, monkeypatch):
    """Every test runs on both implementations of the loops: compiled and pure Python."""
    if request.param == "python":
        monkeypatch.setattr(_ext, "loops", lambda: None)
    else:  # make install builds it; a missing build is a failure, not a skip
        assert _ext.loops() is not None, (
            "C++ loops unavailable: run `python -m rnnlab.model.backends.cpp`"
        )
    return request.param


def one_network(D, H, activation="tanh", gain=1.2, g=None, dtype=torch.float32) -> Elman:
    """A stack of one (K = 1), no readout, W_hh gaussian at ``gain``."""
    return Elman(
        D, H, activation=activation, members=[MemberInit("gaussian", gain, g)], dtype=dtype
    )


def weights_of(rnn: Elman) -> list[torch.Tensor]:
    """Its (only) member's W_xh, W_hh, b as fresh 2-D leaves."""
    w = rnn.member(0)
    return [p.clone().requires_grad_() for p in (w.weight_ih, w.weight_hh, w.bias)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.norm()
    return float((a - b).norm() / scale) if scale > 0 else float(a.norm())


def both_paths(activation, T, dtype, every_step, B=5, D=3, H=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnn = one_network(D, H, activation, 1.2, g, dtype)
    with torch.no_grad():
        rnn.bias.normal_(0, 0.3, generator=g)
    x = torch.randn(T, B, D, dtype=dtype, generator=g)
    weights = torch.randn(T, B, H, dtype=dtype, generator=g)
    if not every_step:
        weights[:-1] = 0  # the loss reads the last step only

    def loss_of(hs):  # a smooth loss: squared readout plus a linear term
        return ((hs * weights).sum(-1) ** 2).sum() + (hs * weights).sum()

    xa = x.clone().requires_grad_()
    loss_of(rnn.hidden(xa[None])[0]).backward()
    fused = [rnn.weight_ih.grad[0], rnn.weight_hh.grad[0], rnn.bias.grad[0], xa.grad]
    fused.append(rnn.hidden_grad_norms[0])

    params = weights_of(rnn)
    xb = x.clone().requires_grad_()
    hs = autograd_reference(xb, *params, activation)
    loss_of(torch.stack(hs)).backward()
    grads = [
        p.grad if p.grad is not None else torch.zeros_like(p) for p in params
    ]  # T = 1: no W_hh use
    reference = [*grads, xb.grad, torch.stack([h.grad for h in hs]).norm(dim=-1)]
    return fused, reference


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("every_step", [False, True], ids=["last", "every"])
@pytest.mark.parametrize("T", [1, 2, 57, 500])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradients_and_profile_equal_autograd(activation, T, every_step, dtype):
    fused, reference = both_paths(activation, T, dtype, every_step)
    names = ["weight_ih", "weight_hh", "bias", "x", "hidden_grad_norms"]
    assert fused[4].shape == (T, 5)
    for name, a, b in zip(names, fused, reference, strict=True):
        norms = name == "hidden_grad_norms"  # summed in float64 whatever the dtype
        assert a.dtype == (torch.float64 if norms else dtype) and a.shape == b.shape, name
        assert rel_err(a, b) <= TOL[dtype], f"{name}: {rel_err(a, b):.2e}"


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_gradcheck(activation):
    g = torch.Generator().manual_seed(1)
    rnn = one_network(2, 4, activation, 0.9, g, torch.float64)
    x = torch.randn(6, 3, 2, dtype=torch.float64, generator=g, requires_grad=True)
    params = weights_of(rnn)
    assert torch.autograd.gradcheck(lambda *a: _ElmanBPTT.apply(*a, activation, None), (x, *params))


def test_recording_can_be_switched_off_and_is_reset_each_forward():
    rnn = Elman(2, 4)
    x = torch.randn(1, 5, 3, 2)
    rnn.hidden(x).sum().backward()
    assert rnn.hidden_grad_norms.shape == rnn.input_grad_norms.shape == (1, 5, 3)
    rnn.record_hidden_grads = False
    rnn.hidden(x).sum().backward()
    assert rnn.hidden_grad_norms is None and rnn.input_grad_norms is None


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_input_gradient_norms_equal_autograd_in_float64(activation):
    """‖∂L/∂x_t‖₂ per step and sequence, from the fused backward (with and without x needing a
    gradient) and for each member of a stack, against x.grad of the plain autograd loop."""
    g = torch.Generator().manual_seed(3)
    K, T, B, D, H = 3, 40, 4, 3, 8
    rnn = Elman(
        D,
        H,
        activation=activation,
        members=[MemberInit("gaussian", 1.1 + 0.2 * k, g) for k in range(K)],
        dtype=torch.float64,
    )
    x = torch.randn(K, T, B, D, dtype=torch.float64, generator=g)
    w = torch.randn(K, T, B, H, dtype=torch.float64, generator=g)

    def loss_of(hs, w=w):  # each member's own smooth loss, summed
        return ((hs * w).sum(-1) ** 2).sum() + (hs * w).sum()

    loss_of(rnn.hidden(x)).backward()  # x needs no gradient: the norms alone
    alone = rnn.input_grad_norms
    xa = x.clone().requires_grad_()
    loss_of(rnn.hidden(xa)).backward()
    assert torch.equal(rnn.input_grad_norms, alone)
    assert torch.equal(rnn.input_grad_norms, xa.grad.norm(dim=-1))
    for k in range(K):
        m = rnn.member(k)
        params = [p.clone().requires_grad_() for p in (m.weight_ih, m.weight_hh, m.bias)]
        xb = x[k].clone().requires_grad_()
        hs = torch.stack(autograd_reference(xb, *params, activation))
        loss_of(hs, w[k]).backward()
        reference = xb.grad.norm(dim=-1)  # (T, B)
        assert rel_err(alone[k], reference) <= 1e-10, (k, rel_err(alone[k], reference))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_matches_cpu(activation):
    g = torch.Generator().manual_seed(0)
    rnn = one_network(3, 16, activation, 1.2, g, torch.float64)
    x = torch.randn(1, 57, 5, 3, dtype=torch.float64, generator=g)
    rnn.hidden(x).square().sum().backward()
    cpu = [rnn.weight_hh.grad.clone(), rnn.hidden_grad_norms]
    rnn.zero_grad()
    rnn.cuda().hidden(x.cuda()).square().sum().backward()
    for a, b in zip([rnn.weight_hh.grad, rnn.hidden_grad_norms], cpu, strict=True):
        assert a.is_cuda and rel_err(a.cpu(), b) < 1e-10


def test_precompiling_the_loops_runs_the_module_once():
    """``make install`` runs ``python -m rnnlab.model.backends.cpp``: the package must not have
    imported it already (runpy's RuntimeWarning)."""
    import os
    import subprocess
    import sys

    env = os.environ | {"RNNLAB_PURE_PYTHON": "1"}  # no build: only the import matters here
    cmd = [sys.executable, "-W", "error::RuntimeWarning", "-m", "rnnlab.model.backends.cpp"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "RuntimeWarning" not in done.stderr, done.stderr
