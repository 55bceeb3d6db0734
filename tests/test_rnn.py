"""The model: registries, inits, and the forward pass against a float64 reference loop."""

import typing

import pytest
import torch

from rnnlab import config
from rnnlab.model.activations import ACTIVATIONS
from rnnlab.model.elman import Elman, MemberInit
from rnnlab.model.inits import INITS, INPUT_INITS
from rnnlab.train import OPTIMIZERS


def test_registries_match_config_names():
    assert set(ACTIVATIONS) == set(typing.get_args(config.ActivationName))
    assert set(INITS) == set(typing.get_args(config.InitName))
    assert set(INPUT_INITS) == set(typing.get_args(config.InputInitName))
    assert set(OPTIMIZERS) == set(typing.get_args(config.OptimizerName))


def rnn(init, gain, H=128, seed=0):
    """One network (K = 1) with W_hh initialised by ``init``."""
    member = MemberInit(init, gain, torch.Generator().manual_seed(seed))
    return Elman(3, H, members=[member], dtype=torch.float64)


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.7])
def test_orthogonal_is_gain_times_orthogonal(gain):
    w = rnn("orthogonal", gain).weight_hh[0].detach()
    assert torch.allclose(w @ w.T, gain**2 * torch.eye(128, dtype=w.dtype), atol=1e-10)


def test_identity():
    w = rnn("identity", 0.9, H=16).weight_hh[0].detach()
    assert torch.equal(w, 0.9 * torch.eye(16, dtype=w.dtype))


@pytest.mark.parametrize("gain", [1.0, 0.8])
def test_np_rnn_top_eigenvalue_is_gain(gain):
    w = rnn("np_rnn", gain).weight_hh[0].detach()
    assert torch.allclose(w, w.T)  # symmetric positive semi-definite
    eig = torch.linalg.eigvalsh(w)
    assert eig[-1].item() == pytest.approx(gain, abs=1e-12) and eig[0] > -1e-12


def test_gaussian_variance():
    H, gain = 512, 1.5
    w = rnn("gaussian", gain, H=H).weight_hh[0].detach()
    var = w.var().item()
    # sample variance of H² normal draws: relative std ≈ sqrt(2/H²) ≈ 0.3%
    assert var == pytest.approx(gain**2 / H, rel=0.02) and abs(w.mean().item()) < 3 * gain / H**1.5


def test_default_uniform_bound():
    H = 64
    w = rnn("default", 2.0, H=H).weight_hh[0].detach()
    assert w.abs().max() <= 2.0 / H**0.5 and w.abs().max() > 0.95 * 2.0 / H**0.5


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_forward_matches_plain_loop(activation):
    torch.manual_seed(0)
    m = Elman(
        3, 8, activation=activation, members=[MemberInit("gaussian", 1.3)], dtype=torch.float64
    )
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(11, 4, 3, dtype=torch.float64)
    reference = {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "linear": lambda z: z,
        "leaky_relu": lambda z: torch.where(z > 0, z, 0.01 * z),
        "hardtanh": lambda z: z.clamp(-1, 1),
    }[activation]
    h = torch.zeros(4, 8, dtype=torch.float64)
    expected = []
    for t in range(11):
        h = reference(x[t] @ m.weight_ih[0].T + h @ m.weight_hh[0].T + m.bias[0])
        expected.append(h)
    assert torch.allclose(m.hidden(x[None])[0], torch.stack(expected), atol=1e-12)


def test_same_generator_same_init_and_unknown_names():
    a, b = rnn("gaussian", 1.0, seed=3), rnn("gaussian", 1.0, seed=3)
    assert torch.equal(a.weight_hh, b.weight_hh) and torch.equal(a.weight_ih, b.weight_ih)
    with pytest.raises(ValueError, match="expected one of"):
        Elman(2, 4, activation="tanhh")
    with pytest.raises(ValueError, match="expected one of"):
        Elman(2, 4, members=[MemberInit("orthogonl")])


def test_input_init_default_is_the_old_draw_and_glorot_has_its_bounds():
    """The default W_xh is the draw rnnlab always made, U(±1/√H) first from the member's
    stream; glorot_uniform is U(±√(6/(D+H))), and consumes the stream alike, so W_hh and the
    readout that follow are the same bits."""
    D, H = 200, 64

    def model(input_init):
        g = torch.Generator().manual_seed(3)
        return Elman(D, H, 2, members=[MemberInit("orthogonal", 1.0, g, input_init)])

    old = torch.empty(H, D).uniform_(
        -(H**-0.5), H**-0.5, generator=torch.Generator().manual_seed(3)
    )
    default, glorot = model("default"), model("glorot_uniform")
    assert torch.equal(default.weight_ih[0].detach(), old)
    plain = Elman(D, H, 2, members=[MemberInit(generator=torch.Generator().manual_seed(3))])
    assert torch.equal(plain.weight_ih, default.weight_ih)  # input_init's default
    w = glorot.weight_ih[0].detach()
    bound = (6 / (D + H)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    # sample variance of H·D uniform draws: relative std ≈ sqrt(0.8 / (H·D)) ≈ 0.8%
    assert w.var().item() == pytest.approx(2 / (D + H), rel=0.04)
    assert torch.equal(glorot.weight_hh, default.weight_hh)
    assert torch.equal(glorot.readout["weight"], default.readout["weight"])
    with pytest.raises(ValueError, match="unknown input init 'xavier'"):
        model("xavier")
