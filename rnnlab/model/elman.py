"""The Elman (vanilla) RNN whose gradient dynamics rnnlab measures: K ≥ 1 networks of one
shape stacked along a leading member dimension (a single network is K = 1), each

    h_t = φ(W_hh h_{t−1} + W_xh x_t + b),    h_0 = 0,    y_s = W_out h_s + b_out

with the readout y_s at the task's read-out steps s.

Glossary (code → paper): ``weight_hh`` = W_hh (K, H, H), ``weight_ih`` = W_xh (K, H, D),
``bias`` = b (K, H), ``readout.weight`` = W_out (K, O, H), ``readout.bias`` = b_out (K, O),
``activation`` = φ (``rnnlab.model.activations``), ``init``/``gain`` = the initialisation of
W_hh and its scale g (``rnnlab.model.inits``).

    model = Elman(D, H, O, readout=slice(-1, None), activation="tanh",
                  members=[MemberInit("orthogonal", 1.0, torch.Generator().manual_seed(0))])
    y = model(x)                  # x (K, L, B, D) → y (K, S, B, O)
    y.pow(2).mean().backward()
    model.hidden_grad_norms       # (K, L, B): ‖∂L/∂h_t‖₂ per member, step and sequence
    model.member(0)               # member 0's weights, for the measurements
    model.keep([0])               # drop the other members (a diverged one, say)

Forward and backward are an explicit BPTT (``_ElmanBPTT``) that yields ‖∂L/∂h_t‖₂ as a
by-product at no extra cost, and ‖∂L/∂x_t‖₂ = ‖(∂L/∂z_t) W_xh‖₂ (``input_grad_norms``) for
one (T·B × H)(H × D) multiply more (``record_hidden_grads = False`` turns both off);
``rnnlab.bench.autograd_reference`` is the plain autograd loop it is tested against. Every
per-member multiply and reduction runs on the shapes the member has alone (``member_mm``), so
a member's numbers are the same bits whatever stack it trains in.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from rnnlab.model import activations, backends, inits


@dataclass(frozen=True)
class MemberInit:
    """How one member is initialised: W_xh by ``input_init`` (default: U(−1/√H, 1/√H), as
    nn.RNN), then W_hh by ``init`` at scale ``gain``, then the readout as nn.Linear's
    U(−1/√H, 1/√H); b = 0. Every draw comes from ``generator``, in that order (None: a
    generator seeded 0)."""

    init: str = "orthogonal"
    gain: float = 1.0
    generator: torch.Generator | None = None
    input_init: str = "default"
    """A name in ``rnnlab.model.inits.INPUT_INITS`` (default, glorot_uniform)."""


@dataclass(frozen=True)
class MemberWeights:
    """One member's current weights (detached; on CUDA at an aligned address, see
    ``aligned``): what the measurements of ``rnnlab.measure`` read."""

    weight_ih: torch.Tensor
    """W_xh (H, D)."""
    weight_hh: torch.Tensor
    """W_hh (H, H)."""
    bias: torch.Tensor
    """b (H,)."""
    activation: str


class Stacked(nn.Module):
    """What every recurrent network here shares: K members stacked along a leading dimension,
    ``hidden(x)`` (the cell's, x (K, L, B, D) → h (K, L, B, H)), the linear readout at the
    task's read-out steps, ``keep`` and the norms a backward pass records (``Elman``,
    ``rnnlab.model.gated.Gated``)."""

    cell = "elman"
    """``model.cell``: which recurrence this is."""
    cell_grad_norms = None
    """‖∂L/∂c_t‖₂ (K, L, B) where the cell has a cell state (the LSTM), else None."""

    def __init__(self, readout: slice, members: Sequence[MemberInit]):
        super().__init__()
        for m in members:  # unknown names fail here, listing the known ones
            inits.get(m.init), inits.get_input(m.input_init)
        self.readout_steps = readout
        self.record_hidden_grads = True
        """Record the norms on the next backward pass (probe steps)."""

    @property
    def num_members(self) -> int:
        """K."""
        return self.weight_hh.shape[0]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, L, B, D) → the readout at the read-out steps (K, S, B, O)."""
        if self.readout is None:
            raise RuntimeError("this network has no readout (output_size=None): call hidden(x)")
        seen = self.hidden(x)[:, self.readout_steps]  # (K, S, B, H)
        K, S, B, H = seen.shape
        out = member_mm(
            seen.reshape(K, S * B, H),
            self.readout["weight"].transpose(1, 2),
            self.readout["bias"].unsqueeze(1),
        )
        return out.view(K, S, B, -1)

    @torch.no_grad()
    def keep(self, positions: list[int]) -> None:
        """Keep only the members at ``positions``: new, smaller parameters, in the same order
        (gradients kept). An optimizer is pointed at them by its own ``keep``
        (``rnnlab.optim.StackOptimizer.keep``)."""
        for module in self.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                kept = nn.Parameter(p[positions])
                kept.grad = p.grad[positions] if p.grad is not None else None
                module.register_parameter(name, kept)


class Elman(Stacked):
    """K Elman networks of one shape and activation, stacked, with a linear readout.

    Args:
        input_size: D.
        hidden_size: H.
        output_size: O; None for the recurrent layer alone (``hidden`` only, no readout).
        readout: the read-out steps, an index into the L steps (the task's ``readout``).
        activation: a name in ``rnnlab.model.activations.ACTIVATIONS``.
        members: one :class:`MemberInit` per member (K of them).
        dtype: the parameters' dtype.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int | None = None,
        readout: slice = slice(-1, None),
        *,
        activation: str = "tanh",
        members: Sequence[MemberInit] = (MemberInit(),),
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(readout, members)
        activations.get(activation)  # unknown names fail here, listing the known ones
        self.activation = activation
        drawn = [_draw(input_size, hidden_size, output_size, m, dtype) for m in members]
        w_ih, w_hh, b, *out = (nn.Parameter(torch.stack(ws)) for ws in zip(*drawn, strict=True))
        # Registered in this order: the global gradient norm concatenates the parameters in
        # it, so a different order would change every run's bits.
        self.bias, self.weight_hh, self.weight_ih = b, w_hh, w_ih
        self.readout = nn.ParameterDict([("bias", out[1]), ("weight", out[0])]) if out else None
        self.hidden_grad_norms: torch.Tensor | None = None
        """‖∂L/∂h_t‖₂ per member, step and sequence, (K, L, B), float64 (the squares summed in
        float64 whatever the dtype), set by the last backward pass."""
        self.input_grad_norms: torch.Tensor | None = None
        """‖∂L/∂x_t‖₂ per member, step and sequence, (K, L, B), set with ``hidden_grad_norms``."""

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, L, B, D) → every hidden state h_t (K, L, B, H)."""
        self.hidden_grad_norms = self.input_grad_norms = None
        recorder = self if self.record_hidden_grads else None
        return _ElmanBPTT.apply(
            x, self.weight_ih, self.weight_hh, self.bias, self.activation, recorder
        )

    def member(self, k: int) -> MemberWeights:
        """Member k's current weights (detached views; aligned copies where CUDA needs them)."""
        w = [aligned(p[k].detach()) for p in (self.weight_ih, self.weight_hh, self.bias)]
        return MemberWeights(*w, self.activation)


def _draw(D: int, H: int, O: int | None, m: MemberInit, dtype) -> list[torch.Tensor]:
    """One member's W_xh, W_hh, b (and readout weight and bias), drawn as ``MemberInit`` says."""
    g = m.generator if m.generator is not None else torch.Generator().manual_seed(0)
    w_ih, w_hh = torch.empty(H, D, dtype=dtype), torch.empty(H, H, dtype=dtype)
    b = torch.zeros(H, dtype=dtype)
    inits.get_input(m.input_init)(w_ih, g)  # default: U(±1/√H), as nn.RNN
    inits.get(m.init)(w_hh, m.gain, g)
    return [w_ih, w_hh, b, *draw_readout(H, O, g, dtype)]


def draw_readout(H: int, O: int | None, g: torch.Generator, dtype) -> list[torch.Tensor]:
    """The readout's weight (O, H) and bias (O,), drawn from U(−1/√H, 1/√H) as nn.Linear's
    default from the member's stream g after its cell's weights; none when O is None."""
    if O is None:
        return []
    bound = 1 / math.sqrt(H)
    w_out, b_out = torch.empty(O, H, dtype=dtype), torch.empty(O, dtype=dtype)
    w_out.uniform_(-bound, bound, generator=g)
    b_out.uniform_(-bound, bound, generator=g)
    return [w_out, b_out]


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
        backends.forward(hs, weight_hh.transpose(1, 2), activation)
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
        # A slot per step, float64 whatever the dtype: a float32 norm squares the entries,
        # which underflow below ~1e−22, long before δ_t itself leaves float32's range.
        norms = hs.new_empty(T, K, B, dtype=torch.float64) if recorder is not None else None
        backends.backward(dz, hs, weight_hh, norms, ctx.activation_name)
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
        if recorder is not None:  # ‖∂L/∂x_t‖₂ = ‖(∂L/∂z_t) W_xh‖₂: read-only, no number changes
            gx = grad_x if grad_x is not None else member_mm(flat, weight_ih).view(x.shape)
            gx_norms = stack(  # (K, T, B), float64 as the hidden-state norms
                [torch.linalg.vector_norm(aligned(g), dim=-1, dtype=torch.float64) for g in gx]
            )
            recorder.input_grad_norms = gx_norms[0] if single else gx_norms
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
    if a.shape[0] == 1:  # one member: views in and out (no unbind, no stack to backpropagate)
        x, y = aligned(a.squeeze(0)), aligned(b.squeeze(0))
        out = x @ y if c is None else torch.addmm(aligned(c.squeeze(0)), x, y)
        return out.unsqueeze(0)
    if c is None:
        return stack([aligned(x) @ aligned(y) for x, y in zip(a, b, strict=True)])
    c = c.expand(a.shape[0], *c.shape[1:])
    return stack(
        [torch.addmm(aligned(z), aligned(x), aligned(y)) for x, y, z in zip(a, b, c, strict=True)]
    )


def stack(members: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack of per-member results; one member is a view, not a copy (same bits)."""
    return members[0].unsqueeze(0) if len(members) == 1 else torch.stack(members)


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
