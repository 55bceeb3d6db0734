"""Every activation φ of h_t = φ(W_hh h_{t−1} + W_xh x_t + b), in one table.

An entry of ``ACTIVATIONS`` is all that rnnlab knows of its φ, in three parts:

- ``ops``, for the model (``rnnlab.model``): φ as ATen operators, out of place and in place,
  and its backward through the output h = φ(z) as PyTorch's own derivative kernel
  (``aten::tanh_backward`` …), so that the explicit BPTT's numbers equal autograd's. The
  Python loops and the C++ loops (``backends/csrc/elman.cpp``) both look the operators up by
  these names; the Triton kernels implement the entries they list (``ACT_CODES``) and leave
  the others to the loops;
- ``moments``, for the theory (``rnnlab.measure.theory``): the Gaussian second moments
  (E[φ(√q z)²], E[φ′(√q z)²]), z ~ N(0, 1), in closed form where one exists, else φ and φ′
  on numpy arrays for the theory's quadrature;
- ``gamma``, ``color``, ``rank``, for the report: γ = max |φ′|, whose inverse bounds
  σ_max(W_hh) for vanishing gradients (Pascanu et al. 2013), the activation's colour and its
  place in every legend.

A new activation is one entry here. With ATen operators for φ and its backward it runs on
every backend but Triton; given only as Python callables (``PythonOps``) it runs on the
Python loops (``backends.backend`` chooses them for it); to give such a one the C++ loops
too, register its backward as an operator (``torch.library``) and name it in an ``Aten``.

This module imports neither torch nor numpy (``rnnlab.config`` reads ``NAMES``, and
``rnnlab validate`` must stay instant): the operators are looked up by name on first use.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

LEAKY_SLOPE = 0.01
"""leaky_relu's φ(z) = z for z > 0, else 0.01 z (PyTorch's default slope)."""


@dataclass(frozen=True)
class Aten:
    """φ and φ′ as ATen operators, looked up by name by the Python and the C++ loops alike."""

    op: str
    """φ(z) = aten::<op>(z, *args); in place, aten::<op>_(z, *args)."""
    backward: str | None
    """∂L/∂z = aten::<backward>.grad_input(∂L/∂h, h, *backward_args, grad_input=out): φ′
    through the output h = φ(z). None: φ′ ≡ 1."""
    args: tuple = ()
    backward_args: tuple = ()


@dataclass(frozen=True)
class PythonOps:
    """φ for an activation without ATen operators: the Python loops run it."""

    fn: Callable
    """z → φ(z)."""
    fn_: Callable
    """z → φ(z), in place (returns z)."""
    backward: Callable
    """(∂L/∂h, h, out) → out = ∂L/∂h ⊙ φ′(z), φ′ written through h = φ(z)."""


@dataclass(frozen=True)
class Quadrature:
    """φ and φ′ on numpy arrays, for E[φ(√q z)²] and E[φ′(√q z)²] by the theory's quadrature."""

    phi: Callable
    dphi: Callable
    limits: tuple[float, float] | None = None
    """(φ(−∞), φ(+∞)) of a monotone saturating φ (φ′ → 0 beyond |u| ≈ 40): the quadrature of a
    wide Gaussian (√q > 4) counts the mass beyond as these; also φ's bound."""


@dataclass(frozen=True)
class Activation:
    """One φ, everything about it (see the module docstring)."""

    ops: Aten | PythonOps | None
    """How the model computes φ and φ′; None: the identity."""
    moments: Callable[[float], tuple[float, float]] | Quadrature
    """q → (E[φ(√q z)²], E[φ′(√q z)²]) in closed form (q ≥ 0; at q = 0 the limit q → 0⁺), or
    φ and φ′ to integrate."""
    gamma: float
    """γ = max |φ′|: σ_max(W_hh) < 1/γ suffices for vanishing gradients (Pascanu et al. 2013)."""
    color: str
    """Its colour in every figure and in the MLflow UI (seaborn's colour-blind palette, written
    out so that the UI's run colours need no seaborn)."""
    rank: int
    """Its place in every legend, facet row and table: from the fastest vanishing to exploding
    (|φ′| ≤ 1/4, then about half the units off, then near the edge, then no squashing)."""
    bound: float | None = None
    """sup |φ|, where ``moments`` does not give it (a Quadrature's limits do); None: ∞."""
    scale_free: bool = False
    """φ(a z) = a φ(z) for a > 0, so E[φ(√q z)²] = c q and the fixed point q* is closed form."""

    @functools.cached_property
    def fn(self) -> Callable:
        """z → φ(z)."""
        if isinstance(self.ops, PythonOps):
            return self.ops.fn
        return _aten(self.ops.op, self.ops.args) if self.ops else _identity

    @functools.cached_property
    def fn_(self) -> Callable:
        """z → φ(z) in place (returns z)."""
        if isinstance(self.ops, PythonOps):
            return self.ops.fn_
        return _aten(self.ops.op + "_", self.ops.args) if self.ops else _identity

    @functools.cached_property
    def backward(self) -> Callable | None:
        """(∂L/∂h, h, out) → out = ∂L/∂h ⊙ φ′(z), PyTorch's derivative kernel; None when φ′ ≡ 1."""
        if isinstance(self.ops, PythonOps):
            return self.ops.backward
        if self.ops is None or self.ops.backward is None:
            return None
        import torch

        op, args = getattr(torch.ops.aten, self.ops.backward).grad_input, self.ops.backward_args
        return lambda g, h, out: op(g, h, *args, grad_input=out)

    @property
    def compiled(self) -> bool:
        """Whether the C++ loops can run it: its φ and φ′ are operators they can look up."""
        return not isinstance(self.ops, PythonOps)

    def sup(self) -> float:
        """sup |φ| (∞: unbounded)."""
        if self.bound is not None:
            return self.bound
        limits = getattr(self.moments, "limits", None)
        return max(abs(v) for v in limits) if limits else math.inf


def _identity(z):
    return z


def _aten(name: str, args: tuple) -> Callable:
    """z → aten::<name>(z, *args) through torch's direct binding where there is one
    (``torch.tanh_``, ``torch._C._nn.leaky_relu_``), else the dispatcher's: the same kernel."""
    import torch

    fn = (
        getattr(torch, name, None)
        or getattr(torch._C._nn, name, None)
        or getattr(torch.ops.aten, name).default
    )
    return functools.partial(_call, fn, args) if args else fn


def _call(fn, args, z):
    return fn(z, *args)


# ------------------------------------------------------------------ mean-field moments
def _np():
    """numpy, imported on first use."""
    import numpy

    return numpy


def _npdf(a: float) -> float:
    return math.exp(-a * a / 2) / math.sqrt(2 * math.pi)


def _inside(a: float) -> float:
    """P(|z| < a), z ~ N(0, 1)."""
    return math.erf(a / math.sqrt(2))


def _linear_moments(q: float) -> tuple[float, float]:
    return q, 1.0


def _relu_moments(q: float) -> tuple[float, float]:
    """Scale-free: half the units pass, at any q > 0."""
    return q / 2, 0.5


def _leaky_relu_moments(q: float) -> tuple[float, float]:
    a2 = LEAKY_SLOPE**2
    return q * (1 + a2) / 2, (1 + a2) / 2


def _hardtanh_moments(q: float) -> tuple[float, float]:
    """Split at the kinks ±1, where quadrature of φ′ would be badly off."""
    if q == 0:
        return 0.0, 1.0
    a = 1 / math.sqrt(q)  # the kinks at ±1 in units of √q
    inside = _inside(a)
    e_z2_inside = inside - 2 * a * _npdf(a)  # E[z² 1{|z| < a}]
    return q * e_z2_inside + (1 - inside), inside


def _tanh_np(u):
    return _np().tanh(u)


def _tanh_np_grad(u):
    return 1 - _np().tanh(u) ** 2


def _sigmoid_np(u):
    return 1 / (1 + _np().exp(-u))


def _sigmoid_np_grad(u):
    s = _sigmoid_np(u)
    return s * (1 - s)


# ------------------------------------------------------------------ the table
ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(
        Aten("tanh", "tanh_backward"),
        Quadrature(_tanh_np, _tanh_np_grad, limits=(-1.0, 1.0)),
        gamma=1.0,
        color="#0173b2",
        rank=3,
    ),
    "relu": Activation(  # h > 0 exactly when z > 0, so the output serves as the threshold input
        Aten("relu", "threshold_backward", backward_args=(0,)),
        _relu_moments,
        gamma=1.0,
        color="#de8f05",
        rank=1,
        scale_free=True,
    ),
    "sigmoid": Activation(
        Aten("sigmoid", "sigmoid_backward"),
        Quadrature(_sigmoid_np, _sigmoid_np_grad, limits=(0.0, 1.0)),
        gamma=0.25,
        color="#029e73",
        rank=0,
    ),
    "linear": Activation(
        None, _linear_moments, gamma=1.0, color="#cc78bc", rank=5, scale_free=True
    ),
    "leaky_relu": Activation(  # as relu, with slope LEAKY_SLOPE below 0; True: given the output
        Aten("leaky_relu", "leaky_relu_backward", (LEAKY_SLOPE,), (LEAKY_SLOPE, True)),
        _leaky_relu_moments,
        gamma=1.0,
        color="#d55e00",
        rank=2,
        scale_free=True,
    ),
    "hardtanh": Activation(  # |h| < 1 exactly when −1 < z < 1
        Aten("hardtanh", "hardtanh_backward", (-1.0, 1.0), (-1.0, 1.0)),
        _hardtanh_moments,
        gamma=1.0,
        color="#ca9161",
        rank=4,
        bound=1.0,
    ),
}

NAMES: tuple[str, ...] = tuple(ACTIVATIONS)
"""The activations' names (``model.activation``)."""
ACTIVATION_COLORS = {name: a.color for name, a in ACTIVATIONS.items()}


def get(name: str) -> Activation:
    """The entry for ``name``, or a ValueError listing the known ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of: {', '.join(ACTIVATIONS)}"
        ) from None


def activation_rank(name: str) -> tuple[float, str]:
    """Sort key for legends, facets and tables: by ``rank``, unknown names last."""
    entry = ACTIVATIONS.get(name)
    return (entry.rank if entry is not None else math.inf, str(name))
