"""The Elman (vanilla) RNN whose gradient dynamics rnnlab measures.

    h_t = φ(W_hh h_{t−1} + W_xh x_t + b),    h_0 = 0

Glossary (code → paper): ``weight_hh`` = W_hh (H×H), ``weight_ih`` = W_xh (H×D),
``bias`` = b (H), ``activation`` = φ, ``gain`` = the scale g of the recurrent init.

After ``loss.backward()``, ``rnn.hidden_grad_norms`` is the (T, B) tensor of ‖∂L/∂h_t‖₂ for
each sequence (recording is on by default; ``rnn.record_hidden_grads = False`` turns it off).
Forward and backward are an explicit BPTT (``_ElmanBPTT``) that yields those gradients as a
by-product at no extra cost; ``rnnlab.bench.autograd_reference`` is the plain autograd loop it
is tested against.

To add an activation or an init: register it in ``ACTIVATIONS`` / ``INITS`` below and add its
name to ``ActivationName`` / ``InitName`` in ``rnnlab.config``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from rnnlab.model import backends as kernels
from rnnlab.model.backends import cpp as _ext


@dataclass(frozen=True)
class Activation:
    """φ three ways: out of place, in place, and its backward through the output h = φ(z)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    fn_: Callable[[torch.Tensor], torch.Tensor]
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None
    """(∂L/∂h, h, out) → out = ∂L/∂h ⊙ φ′(z), PyTorch's own derivative kernels; None when φ′ ≡ 1."""


def _identity_fn(z: torch.Tensor) -> torch.Tensor:
    return z


_aten = torch.ops.aten
ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(
        torch.tanh,
        torch.tanh_,
        lambda g, h, out: _aten.tanh_backward.grad_input(g, h, grad_input=out),
    ),
    "relu": Activation(  # h > 0 exactly when z > 0, so the output serves as the threshold input
        torch.relu,
        torch.relu_,
        lambda g, h, out: _aten.threshold_backward.grad_input(g, h, 0, grad_input=out),
    ),
    "sigmoid": Activation(
        torch.sigmoid,
        torch.sigmoid_,
        lambda g, h, out: _aten.sigmoid_backward.grad_input(g, h, grad_input=out),
    ),
    "linear": Activation(_identity_fn, _identity_fn, None),
    "leaky_relu": Activation(
        lambda z: F.leaky_relu(z, 0.01),
        lambda z: F.leaky_relu_(z, 0.01),
        lambda g, h, out: _aten.leaky_relu_backward.grad_input(g, h, 0.01, True, grad_input=out),
    ),
    "hardtanh": Activation(  # |h| < 1 exactly when −1 < z < 1
        F.hardtanh,
        F.hardtanh_,
        lambda g, h, out: _aten.hardtanh_backward.grad_input(g, h, -1.0, 1.0, grad_input=out),
    ),
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
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        H, D = hidden_size, input_size
        self.weight_ih = nn.Parameter(torch.empty(H, D, dtype=dtype))
        self.weight_hh = nn.Parameter(torch.empty(H, H, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(H, dtype=dtype))
        with torch.no_grad():
            self.weight_ih.uniform_(-1 / math.sqrt(H), 1 / math.sqrt(H), generator=g)  # as nn.RNN
            INITS[init](self.weight_hh, gain, g)
        self.record_hidden_grads = True
        self.hidden_grad_norms: torch.Tensor | None = None
        """‖∂L/∂h_t‖₂ per step and sequence, (T, B), set by the last backward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.hidden_grad_norms = None
        recorder = self if self.record_hidden_grads else None
        return _ElmanBPTT.apply(
            x, self.weight_ih, self.weight_hh, self.bias, self.activation, recorder
        )


class _ElmanBPTT(torch.autograd.Function):
    """The Elman recurrence with explicit backpropagation through time.

    Forward: the input projection for all steps is one (T·B × D)(D × H) multiply written into
    the output buffer, then each step adds W_hh h_{t−1} and applies φ in place (two calls per
    step). Backward walks the steps once (three calls per step: a norm, φ′, a multiply):

        δ_T = ∂ℓ/∂h_T,   ∂L/∂z_t = δ_t ⊙ φ′(z_t),   δ_{t−1} = ∂ℓ/∂h_{t−1} + (∂L/∂z_t) W_hh

    where ∂ℓ/∂h_t is the gradient reaching h_t directly (from the readout) and δ_t = ∂L/∂h_t is
    the total: the per-timestep gradient rnnlab measures (Pascanu et al. 2013, eq. 3–5). Its
    norm is taken as it passes. Weight gradients are then single large multiplies over all
    steps: ∂L/∂W_hh = Σ_t (∂L/∂z_t)ᵀ h_{t−1}, ∂L/∂W_xh = Σ_t (∂L/∂z_t)ᵀ x_t, ∂L/∂b = Σ_t ∂L/∂z_t.
    φ′ uses PyTorch's own derivative kernels (``aten::tanh_backward`` …), so the numbers equal
    autograd's. Peak memory: the saved outputs plus one (T, B, H) buffer, as torch.nn.RNN.

    Stacked: weights with a leading member dimension K — W_xh (K, H, D), W_hh (K, H, H),
    b (K, H) — run K independent networks on x (K, T, B, D) → (K, T, B, H), each multiply done
    member by member with the 2-D call a single network makes (``member_mm``: the same bits
    for any K), the recursion by the backend (``rnnlab.model.backends``). Norms are then (K, T, B).
    """

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias, activation: str, recorder):
        single = weight_hh.dim() == 2
        if single:  # one code path: a single network is a stack of one
            x, weight_ih, weight_hh, bias = (
                t.unsqueeze(0) for t in (x, weight_ih, weight_hh, bias)
            )
        K, T, B, D = x.shape
        hs = member_mm(  # z_t without W_hh, all steps at once
            x.reshape(K, T * B, D), weight_ih.transpose(1, 2), bias.unsqueeze(1)
        ).view(K, T, B, -1)
        _run_forward(hs, weight_hh.transpose(1, 2), activation)
        ctx.save_for_backward(x, weight_ih, weight_hh, hs)
        ctx.activation_name, ctx.recorder, ctx.single = activation, recorder, single
        return hs[0] if single else hs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        x, weight_ih, weight_hh, hs = ctx.saved_tensors
        recorder, single = ctx.recorder, ctx.single
        K, T, B, H = hs.shape
        # One (K, T, B, H) buffer: slot t becomes δ_t = ∂L/∂h_t, whose norm is taken there,
        # then ∂L/∂z_t = δ_t ⊙ φ′(z_t) in place.
        # It starts as ∂ℓ/∂h_t, the gradient reaching each h_t directly (one bulk copy).
        dz = grad_hs.reshape(hs.shape).clone(memory_format=torch.contiguous_format)
        norms = hs.new_empty(T, K, B) if recorder is not None else None  # a slot per step
        _run_backward(dz, hs, weight_hh, norms, ctx.activation_name)
        if recorder is not None:
            norms = norms.movedim(0, 1)  # (K, T, B)
            recorder.hidden_grad_norms = norms[0] if single else norms
        flat = dz.view(K, T * B, H)
        grad_w_hh = member_mm(
            dz[:, 1:].reshape(K, -1, H).transpose(1, 2), hs[:, :-1].reshape(K, -1, H)
        )
        # this order is ~6x faster for small D
        grad_w_ih = member_mm(x.reshape(K, T * B, -1).transpose(1, 2), flat).transpose(1, 2)
        grad_b = stack([aligned(f).sum(0) for f in flat])
        grad_x = member_mm(flat, weight_ih).view(x.shape) if ctx.needs_input_grad[0] else None
        grads = (grad_x, grad_w_ih, grad_w_hh, grad_b)
        if single:
            grads = tuple(g[0] if g is not None else None for g in grads)
        return *grads, None, None


ALIGN = 256
"""Bytes: a member's slice of a stacked CUDA tensor is copied to an address aligned to this
before a multiply or a reduction (see ``aligned``)."""


def aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, or on CUDA a copy of it at an aligned address when it is not aligned.

    CUDA libraries choose their kernels, and with them the order of additions, by the
    operands' alignment (vectorised loads need 16 bytes, Hopper's bulk copies more), and
    member k of a stack sits k·(its size) bytes into the stacked tensor: alone at offset 0.
    Aligning every per-member operand makes a member's bits independent of its stack
    (measured: an H200's reductions over a misaligned row summed in another order). A CPU's
    ATen kernels and MKL in strict mode (``rnnlab/__init__.py``) do not depend on it."""
    if t.is_cuda and t.data_ptr() % ALIGN:
        return t.clone()
    return t


def member_mm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """c + a @ b for each member of a stack: a (K, M, N), b (K, N, P), c broadcast to (K, M, P).

    One plain 2-D multiply per member, never a batched one: ATen chooses a batched multiply's
    kernel by the batch size (a matrix-vector kernel for one member, another for several), so
    a member's bits would depend on how many members it trains beside. On a CPU ``baddbmm`` is
    this same loop for all but the smallest shapes, so nothing is lost. Differentiable.
    """
    if c is None:
        return stack([aligned(x) @ aligned(y) for x, y in zip(a, b, strict=True)])
    c = c.expand(a.shape[0], *c.shape[1:])
    return stack(
        [torch.addmm(aligned(z), aligned(x), aligned(y)) for x, y, z in zip(a, b, c, strict=True)]
    )


def stack(members: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack of per-member results; one member is a view, not a copy (same bits)."""
    return members[0].unsqueeze(0) if len(members) == 1 else torch.stack(members)


def _member_addmm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out += a @ b per member, in place (the Python loops' ``member_mm``)."""
    for o, x, y in zip(out, a, b, strict=True):
        o.addmm_(x, y)
    return out


@functools.cache
def check_reproducible() -> bool:
    """Do this process's CPU multiplies give the same bits wherever their operands sit in
    memory? Warns once if not (MKL's strict mode is off: ``rnnlab/__init__.py``)."""
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, 21, generator=g), torch.randn(21, 5, generator=g), torch.randn(5, 5))
    results = []
    for offset in (0, 1, 3):  # the same values at different alignments
        buf = torch.empty(a.numel() + 4)
        shifted = buf[offset : offset + a.numel()].view(5, 21)
        shifted.copy_(a)
        results.append(torch.addmm(c, shifted, b))
    same = all(torch.equal(results[0], r) for r in results[1:])
    if not same:
        warnings.warn(
            "rnnlab: this process's matrix multiplies depend on memory alignment (MKL strict "
            "mode is off: torch ran before rnnlab was imported, or MKL_CBWR is set), so a "
            "run's float bits may depend on the stack it trains in; import rnnlab first or "
            "set MKL_CBWR=AUTO,STRICT",
            RuntimeWarning,
            stacklevel=2,
        )
    return same


def _run_forward(hs: torch.Tensor, w_t: torch.Tensor, activation: str) -> None:
    """The forward recursion over hs (K, T, B, H), in place; w_t = W_hhᵀ (K, H, H).

    A stack multiplies member by member with the very 2-D calls a single network makes, so
    one member runs on 2-D views (no per-step slicing) and gets the same bits."""
    backend = kernels.backend(hs)  # triton (CUDA), cpp or python: rnnlab/model/backends/__init__.py
    if backend == "triton":
        return kernels.triton_elman.forward_loop(hs, w_t, activation)
    if hs.shape[0] == 1:
        hs, w_t = hs[0], w_t[0]
    ext = _ext.loops() if backend == "cpp" else None
    if ext is not None:
        ext.forward_loop(hs, w_t, activation)
    else:
        _forward_loop(hs, w_t, ACTIVATIONS[activation])


def _run_backward(dz, hs, w, norms: torch.Tensor | None, activation: str) -> None:
    """The BPTT recursion over dz (K, T, B, H), in place; norms (T, K, B) or None."""
    backend = kernels.backend(hs)
    if backend == "triton":
        return kernels.triton_elman.backward_loop(dz, hs, w, norms, activation)
    if hs.shape[0] == 1:  # 2-D views, as in _run_forward
        dz, hs, w = dz[0], hs[0], w[0]
        norms = norms[:, 0] if norms is not None else None
    ext = _ext.loops() if backend == "cpp" else None
    if ext is not None:
        ext.backward_loop(dz, hs, w, norms, activation)
    else:
        _backward_loop(dz, hs, w, norms, ACTIVATIONS[activation])


def _forward_loop(hs: torch.Tensor, w_t: torch.Tensor, act: Activation) -> None:
    """hs ([K,] T, B, H) holds W_xh x_t + b on entry and h_t on exit; w_t = W_hhᵀ (C++: csrc/)."""
    steps = hs.unbind(hs.dim() - 3)  # views; no indexing inside the loop
    mm = _member_addmm_ if w_t.dim() == 3 else torch.Tensor.addmm_
    act.fn_(steps[0])  # h_0 = 0
    for t in range(1, len(steps)):
        act.fn_(mm(steps[t], steps[t - 1], w_t))


def _backward_loop(dz, hs, w, norms: torch.Tensor | None, act: Activation) -> None:
    """dz ([K,] T, B, H) holds ∂ℓ/∂h_t on entry and ∂L/∂z_t on exit; norms (T, [K,] B) gets
    ‖δ_t‖₂."""
    time = hs.dim() - 3
    h_steps, z_steps = hs.unbind(time), dz.unbind(time)
    mm = _member_addmm_ if w.dim() == 3 else torch.Tensor.addmm_
    for t in range(len(z_steps) - 1, -1, -1):  # slot t holds δ_t here
        if norms is not None:
            torch.linalg.vector_norm(z_steps[t], dim=-1, out=norms[t])
        if act.backward is not None:
            act.backward(z_steps[t], h_steps[t], z_steps[t])
        if t:  # δ_{t−1} = ∂ℓ/∂h_{t−1} + (∂L/∂z_t) W_hh
            mm(z_steps[t - 1], z_steps[t], w)


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


class Ensemble(nn.Module):
    """K RNNModels of one shape stacked along a leading member dimension.

    Parameters keep the member's names with a leading K: ``rnn.weight_ih`` (K, H, D),
    ``rnn.weight_hh`` (K, H, H), ``rnn.bias`` (K, H), ``readout.weight`` (K, O, H),
    ``readout.bias`` (K, O). ``forward`` maps x (K, L, B, D) to the readout (K, S, B, O);
    after backward, ``hidden_grad_norms`` is (K, L, B), as for a single VanillaRNN.

    Args:
        members: freshly built (or trained) models of identical shape and activation, on the
            device the ensemble should use. They serve as templates for :meth:`member`.
    """

    def __init__(self, members: list[RNNModel]):
        super().__init__()
        first = members[0]
        self.activation = first.rnn.activation
        self.readout_steps = first.readout_steps
        named = [dict(m.named_parameters()) for m in members]

        def stack(name: str) -> nn.Parameter:
            return nn.Parameter(torch.stack([n[name].detach() for n in named]))

        self.rnn = nn.ParameterDict(
            {k: stack(f"rnn.{k}") for k in ("weight_ih", "weight_hh", "bias")}
        )
        self.readout = nn.ParameterDict({k: stack(f"readout.{k}") for k in ("weight", "bias")})
        self.members = list(members)  # a plain list: templates, not submodules
        self.record_hidden_grads = True
        self.hidden_grad_norms: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, L, B, D) → outputs at the read-out steps (K, S, B, O)."""
        self.hidden_grad_norms = None
        r = self.rnn
        recorder = self if self.record_hidden_grads else None
        hs = _ElmanBPTT.apply(
            x, r["weight_ih"], r["weight_hh"], r["bias"], self.activation, recorder
        )
        seen = hs[:, self.readout_steps]  # (K, S, B, H)
        K, S, B, H = seen.shape
        out = member_mm(
            seen.reshape(K, S * B, H),
            self.readout["weight"].transpose(1, 2),
            self.readout["bias"].unsqueeze(1),
        )
        return out.view(K, S, B, -1)

    @torch.no_grad()
    def member(self, k: int) -> RNNModel:
        """Member k as a plain RNNModel holding its current weights (for theory probes)."""
        model = self.members[k]
        for name, p in model.named_parameters():
            p.copy_(self.get_parameter(name)[k])
        return model

    @torch.no_grad()
    def keep(self, positions: list[int]) -> None:
        """Keep only the members at ``positions``: new, smaller parameters (gradients kept).
        An optimizer over the old parameters must be rebuilt (``rnnlab.train`` does)."""
        for params in (self.rnn, self.readout):
            for name, p in list(params.items()):
                kept = nn.Parameter(p[positions])
                kept.grad = p.grad[positions] if p.grad is not None else None
                params[name] = kept
        self.members = [self.members[i] for i in positions]
