"""The Elman (vanilla) RNN whose gradient dynamics rnnlab measures.

    h_t = φ(W_hh h_{t−1} + W_xh x_t + b),    h_0 = 0

Glossary (code → paper): ``weight_hh`` = W_hh (H×H), ``weight_ih`` = W_xh (H×D),
``bias`` = b (H), ``activation`` = φ, ``gain`` = the scale g of the recurrent init.

After ``loss.backward()``, ``rnn.hidden_grad_norms`` is the (T, B) tensor of ‖∂L/∂h_t‖₂ for
each sequence (recording is on by default; ``rnn.record_hidden_grads = False`` turns it off).

To add an activation or an init: register it in ``ACTIVATIONS`` / ``INITS`` below and add its
name to ``ActivationName`` / ``InitName`` in ``rnnlab.config``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "linear": lambda z: z,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "hardtanh": F.hardtanh,
}


def _default(w: torch.Tensor, gain: float, g: torch.Generator) -> None:
    """PyTorch's nn.RNN init, U(−1/√H, 1/√H), scaled by gain."""
    bound = gain / math.sqrt(w.shape[0])
    w.uniform_(-bound, bound, generator=g)


def _gaussian(w: torch.Tensor, gain: float, g: torch.Generator) -> None:
    """N(0, g²/H): the mean-field parameterisation (σ_w = g; edge of chaos at g = 1 for tanh)."""
    w.normal_(0.0, gain / math.sqrt(w.shape[0]), generator=g)


def _orthogonal(w: torch.Tensor, gain: float, g: torch.Generator) -> None:
    """g·Q with Q Haar-random orthogonal: every singular value equals g."""
    nn.init.orthogonal_(w, gain=gain, generator=g)


def _identity(w: torch.Tensor, gain: float, g: torch.Generator) -> None:
    """g·I: the IRNN of Le et al. (2015), meant for ReLU."""
    with torch.no_grad():
        w.copy_(gain * torch.eye(w.shape[0], dtype=w.dtype))


def _np_rnn(w: torch.Tensor, gain: float, g: torch.Generator) -> None:
    """Talathi & Vartak (2015): R Rᵀ/H for Gaussian R, normalised so the top eigenvalue is g."""
    H = w.shape[0]
    r = torch.randn(H, H, generator=g, dtype=torch.float64)
    a = r @ r.T / H
    top = torch.linalg.eigvalsh(a)[-1]
    with torch.no_grad():
        w.copy_((gain * a / top).to(w.dtype))


INITS: dict[str, Callable[[torch.Tensor, float, torch.Generator], None]] = {
    "default": _default,
    "gaussian": _gaussian,
    "orthogonal": _orthogonal,
    "identity": _identity,
    "np_rnn": _np_rnn,
}


class VanillaRNN(nn.Module):
    """Elman RNN layer. Input x (T, B, D) → all hidden states (T, B, H), like torch.nn.RNN.

    Args:
        input_size: D.
        hidden_size: H.
        activation: a name in ``ACTIVATIONS``.
        init: a name in ``INITS`` for W_hh; W_xh is U(−1/√H, 1/√H) and b is 0.
        gain: the scale of W_hh's init.
        generator: the random stream for initialisation (seeded by the caller).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: str = "tanh",
        init: str = "orthogonal",
        gain: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of: {', '.join(ACTIVATIONS)}"
            )
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
        self.activation, self.init, self.gain = activation, init, gain
        self.phi = ACTIVATIONS[activation]
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        H, D = hidden_size, input_size
        self.weight_ih = nn.Parameter(torch.empty(H, D, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty(H, H, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(H, dtype=dtype))
        with torch.no_grad():
            self.weight_ih.uniform_(-1 / math.sqrt(H), 1 / math.sqrt(H), generator=g)  # as nn.RNN
            INITS[init](self.weight_hh, gain, g)
        self.record_hidden_grads = True
        self._hidden_grads: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B, D = x.shape
        # Input projection for all steps as one matrix multiply: (T·B, D) @ (D, H).
        u = torch.addmm(self.bias, x.reshape(T * B, D), self.weight_ih.T).view(T, B, -1)
        record = self.record_hidden_grads and torch.is_grad_enabled()
        self._hidden_grads = [None] * T if record else []
        hs = []
        h = self.phi(u[0])
        w_hh_t = self.weight_hh.T
        for t, u_t in enumerate(u.unbind(0)):
            if t:
                h = self.phi(torch.addmm(u_t, h, w_hh_t))
            if record:
                h.register_hook(self._store(t))
            hs.append(h)
        return torch.stack(hs)

    def _store(self, t: int):
        def hook(grad: torch.Tensor) -> None:
            self._hidden_grads[t] = grad

        return hook

    @property
    def hidden_grad_norms(self) -> torch.Tensor | None:
        """‖∂L/∂h_t‖₂ per step and sequence, (T, B), from the last backward pass; None if off."""
        if not self._hidden_grads or any(g is None for g in self._hidden_grads):
            return None
        return torch.linalg.vector_norm(torch.stack(self._hidden_grads), dim=-1)


class RNNModel(nn.Module):
    """VanillaRNN plus a linear readout applied at the task's read-out steps."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        readout: slice,
        *,
        activation: str = "tanh",
        init: str = "orthogonal",
        gain: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.rnn = VanillaRNN(input_size, hidden_size, activation, init, gain, g, dtype)
        self.readout = nn.Linear(hidden_size, output_size, dtype=dtype)
        self.readout_steps = readout
        bound = 1 / math.sqrt(hidden_size)
        with torch.no_grad():  # nn.Linear's default bounds, drawn from our seeded stream
            self.readout.weight.uniform_(-bound, bound, generator=g)
            self.readout.bias.uniform_(-bound, bound, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (L, B, D) → outputs at the read-out steps (S, B, O)."""
        hs = self.rnn(x)
        return self.readout(hs[self.readout_steps])
