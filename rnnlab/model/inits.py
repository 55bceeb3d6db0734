"""Initialisations of W_hh, looked up by name (``model.init``), and of W_xh
(``model.input_init``).

Each W_hh init is ``init(w, gain, g)``: fill the (H, H) tensor ``w`` in place at scale
``gain``, every random draw from the generator ``g``. A new initialisation is one entry in
``INITS``; a W_xh init is ``init(w, g)`` on the (H, D) tensor, one entry in ``INPUT_INITS``.

This module imports torch only when an init runs (``rnnlab.config`` reads ``NAMES``).
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _default(w, gain: float, g) -> None:
    """PyTorch's nn.RNN init, U(−1/√H, 1/√H), scaled by gain."""
    bound = gain / math.sqrt(w.shape[0])
    w.uniform_(-bound, bound, generator=g)


def _gaussian(w, gain: float, g) -> None:
    """N(0, g²/H): the mean-field parameterisation (σ_w = g; edge of chaos at g = 1 for tanh)."""
    w.normal_(0.0, gain / math.sqrt(w.shape[0]), generator=g)


def _orthogonal(w, gain: float, g) -> None:
    """g·Q with Q Haar-random orthogonal: every singular value equals g."""
    from torch import nn

    nn.init.orthogonal_(w, gain=gain, generator=g)


def _identity(w, gain: float, g) -> None:
    """g·I: the IRNN of Le et al. (2015), meant for ReLU."""
    import torch

    with torch.no_grad():
        w.copy_(gain * torch.eye(w.shape[0], dtype=w.dtype))


def _np_rnn(w, gain: float, g) -> None:
    """Talathi & Vartak (2015): R Rᵀ/H for Gaussian R, normalised so the top eigenvalue is g."""
    import torch

    H = w.shape[0]
    r = torch.randn(H, H, generator=g, dtype=torch.float64)
    a = r @ r.T / H
    top = torch.linalg.eigvalsh(a)[-1]
    with torch.no_grad():
        w.copy_((gain * a / top).to(w.dtype))


INITS: dict[str, Callable] = {
    "default": _default,
    "gaussian": _gaussian,
    "orthogonal": _orthogonal,
    "identity": _identity,
    "np_rnn": _np_rnn,
}

NAMES: tuple[str, ...] = tuple(INITS)
"""The initialisations' names (``model.init``)."""


def get(name: str) -> Callable:
    """The init called ``name``, or a ValueError listing the known ones."""
    try:
        return INITS[name]
    except KeyError:
        raise ValueError(f"unknown init {name!r}; expected one of: {', '.join(INITS)}") from None


# ------------------------------------------------------------------------- W_xh
def _input_default(w, g) -> None:
    """PyTorch's nn.RNN init, U(−1/√H, 1/√H) (H = w.shape[0]): rnnlab's W_xh since the start."""
    bound = 1 / math.sqrt(w.shape[0])
    w.uniform_(-bound, bound, generator=g)


def _input_glorot_uniform(w, g) -> None:
    """Glorot & Bengio (2010), Keras' default kernel init: U(−a, a), a = √(6 / (D + H)), so
    Var = 2 / (D + H) (with D = H: 1/H, and Σ_j W_ij² ≈ 1 per unit)."""
    H, D = w.shape
    bound = math.sqrt(6 / (D + H))
    w.uniform_(-bound, bound, generator=g)


INPUT_INITS: dict[str, Callable] = {
    "default": _input_default,
    "glorot_uniform": _input_glorot_uniform,
}

INPUT_NAMES: tuple[str, ...] = tuple(INPUT_INITS)
"""The W_xh initialisations' names (``model.input_init``)."""


def get_input(name: str) -> Callable:
    """The W_xh init called ``name``, or a ValueError listing the known ones."""
    try:
        return INPUT_INITS[name]
    except KeyError:
        known = ", ".join(INPUT_INITS)
        raise ValueError(f"unknown input init {name!r}; expected one of: {known}") from None
