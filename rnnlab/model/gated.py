"""The gated baselines beside the Elman network: K LSTM or GRU networks of one shape, stacked
along a leading member dimension like ``rnnlab.model.elman.Elman`` (``model.cell``), with the
same linear readout, training and measurements of ‖∂L/∂h_t‖ for every t — and for the LSTM
also ‖∂L/∂c_t‖, the cell-state path that carries the error (Hochreiter & Schmidhuber 1997).

LSTM (PyTorch's gate order i, f, g, o; ``torch.nn.LSTM``'s equations):

    a_t = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh                          (4H)
    i, f, o = σ(a_i), σ(a_f), σ(a_o),   g = tanh(a_g)
    c_t = f ⊙ c_{t−1} + i ⊙ g,          h_t = o ⊙ tanh(c_t)

GRU (Cho et al. 2014; gate order r, z, n, as ``torch.nn.GRU``):

    r, z = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr),  σ(… z …)
    n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t−1} + b_hn))
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

Parameters are PyTorch's, with a member dimension: ``weight_ih`` (K, G·H, D), ``weight_hh``
(K, G·H, H), ``bias_ih`` and ``bias_hh`` (K, G·H), G = 4 (LSTM) or 3 (GRU). Initialisation
(``MemberInit``): each gate's block of W_ih by ``input_init``, each gate's H × H block of
W_hh by ``init`` at scale ``gain`` (so ``orthogonal`` makes every gate's recurrent matrix g·Q),
biases 0 except the LSTM's forget gate, b_f = 1 (Gers, Schmidhuber & Cummins 2000;
Jozefowicz, Zaremba & Sutskever 2015), then the readout as the Elman network's.

Forward and backward are an explicit BPTT per member (``_GatedBPTT``), as for the Elman cell:
the total gradients δh_t = ∂L/∂h_t (and δc_t = ∂L/∂c_t) are the buffers the backward pass
walks, so their norms are by-products; the weight gradients are single large multiplies over
all steps. ``rnnlab.bench.gated_reference`` is the plain autograd loop (``torch.nn.LSTMCell``
/ ``GRUCell`` with ``retain_grad``) it is tested against. Each member runs alone, so its bits
do not depend on its stack. What only makes sense for the Elman cell (the W_hh spectrum,
mean-field theory, Lyapunov exponents, the Jacobian spectrum, unit statistics) is not
measured for a gated cell (``rnnlab.train``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from rnnlab.model import cells, inits
from rnnlab.model.elman import MemberInit, Stacked, aligned, draw_readout, stack

_sigmoid_backward = torch.ops.aten.sigmoid_backward
_tanh_backward = torch.ops.aten.tanh_backward


@dataclass(frozen=True)
class Recursions:
    """One gated cell's two BPTT recursions (its other facts: ``rnnlab.model.cells``)."""

    forward: callable
    backward: callable
    forget_gate: int | None = None
    """The gate block whose bias starts at 1 (the LSTM's f), or None."""
    folds_bias_hh: bool = False
    """b_hh adds to b_ih in the input projection (the LSTM); else the recursion uses it (the
    GRU's n block, inside r ⊙ (W_hn h + b_hn))."""


# ----------------------------------------------------------------------------- LSTM
def _steps(t: torch.Tensor, lo: int = 0, hi: int | None = None) -> tuple[torch.Tensor, ...]:
    """Per-step views of t (T, B, W)[..., lo:hi], made once: indexing inside a loop of
    hundreds of small calls costs as much as the calls."""
    return t[..., lo:hi].unbind(0)


def _lstm_forward(gx, w_hh, b_hh, hs):
    """The recursion over the precomputed input projections gx (T, B, 4H) (b_ih + b_hh);
    hs (T+1, B, H) gets h_0 = 0, h_1 … h_T. Returns what the backward pass needs."""
    T, B, H = gx.shape[0], gx.shape[1], hs.shape[-1]
    acts = torch.empty_like(gx)  # i, f, g, o after their nonlinearities
    cs = gx.new_zeros(T + 1, B, H)  # c_0 = 0, c_1 … c_T
    tc = torch.empty_like(hs[1:])  # tanh(c_t)
    w_t = w_hh.t()
    A, IF, I, F = _steps(acts), _steps(acts, 0, 2 * H), _steps(acts, 0, H), _steps(acts, H, 2 * H)
    G, O = _steps(acts, 2 * H, 3 * H), _steps(acts, 3 * H)
    GX, HS, CS, TC = _steps(gx), _steps(hs), _steps(cs), _steps(tc)
    for t in range(T):
        torch.addmm(GX[t], HS[t], w_t, out=A[t])
        IF[t].sigmoid_()
        G[t].tanh_()
        O[t].sigmoid_()
        torch.mul(F[t], CS[t], out=CS[t + 1]).addcmul_(I[t], G[t])  # c_t = f c_{t−1} + i g
        torch.mul(O[t], torch.tanh(CS[t + 1], out=TC[t]), out=HS[t + 1])
    return acts, cs, tc


def _lstm_backward(dh, saved, hs, w_hh):
    """δh (T, B, H) holds ∂ℓ/∂h_t, the gradient reaching each h_t directly; walking back it
    becomes δh_t = ∂L/∂h_t in place. Returns ∂L/∂a (T, B, 4H) for both W_ih and W_hh, and
    δc (T, B, H) = ∂L/∂c_t:

        δc_t = δh_t ⊙ o_t ⊙ tanh′(c_t) + δc_{t+1} ⊙ f_{t+1}
        ∂L/∂a_t = [δc_t ⊙ g_t ⊙ σ′(a_i), δc_t ⊙ c_{t−1} ⊙ σ′(a_f), δc_t ⊙ i_t ⊙ tanh′(a_g),
                   δh_t ⊙ tanh(c_t) ⊙ σ′(a_o)]
        δh_{t−1} += ∂L/∂a_t W_hh

    The factors that do not depend on δ are taken for all steps at once before the walk, so
    each step is five calls."""
    acts, cs, tc = saved
    T, B, H = dh.shape
    i, f, g, o = acts.chunk(4, 2)
    to_c = _tanh_backward(o, tc)  # ∂h_t/∂c_t = o_t ⊙ tanh′(c_t)
    coef = torch.cat(  # ∂a-gradient per unit of δc (i, f, g) or of δh (o)
        [
            _sigmoid_backward(g, i),
            _sigmoid_backward(cs[:-1], f),
            _tanh_backward(i, g),
            _sigmoid_backward(tc, o),
        ],
        2,
    ).view(T, B, 4, H)
    da = torch.empty_like(acts)
    dc = torch.empty_like(dh)
    DA, DA3, DAO = _steps(da), da.view(T, B, 4, H)[:, :, :3].unbind(0), _steps(da, 3 * H)
    C3, CO = coef[:, :, :3].unbind(0), coef[:, :, 3].unbind(0)
    DH, DC, DCU, TO_C, F = (
        _steps(dh),
        _steps(dc),
        dc.unsqueeze(2).unbind(0),
        _steps(to_c),
        _steps(f),
    )
    for t in range(T - 1, -1, -1):
        torch.mul(DH[t], TO_C[t], out=DC[t])
        if t < T - 1:
            DC[t].addcmul_(DC[t + 1], F[t + 1])
        torch.mul(C3[t], DCU[t], out=DA3[t])
        torch.mul(CO[t], DH[t], out=DAO[t])
        if t > 0:
            DH[t - 1].addmm_(DA[t], w_hh)
    return da, da, dc


# ------------------------------------------------------------------------------ GRU
def _gru_forward(gx, w_hh, b_hh, hs):
    """As ``_lstm_forward`` with gx (T, B, 3H) = W_ih x_t + b_ih; b_hh enters every step
    (its n block inside r ⊙ (W_hn h + b_hn))."""
    T, H = gx.shape[0], hs.shape[-1]
    acts = torch.empty_like(gx)  # r, z, n after their nonlinearities
    gh = torch.empty_like(gx)  # W_hh h_{t−1} + b_hh
    w_t = w_hh.t()
    RZ, R, Z, N = (
        _steps(acts, 0, 2 * H),
        _steps(acts, 0, H),
        _steps(acts, H, 2 * H),
        _steps(acts, 2 * H),
    )
    GH, GHRZ, GHN = _steps(gh), _steps(gh, 0, 2 * H), _steps(gh, 2 * H)
    GXRZ, GXN, HS = _steps(gx, 0, 2 * H), _steps(gx, 2 * H), _steps(hs)
    for t in range(T):
        torch.addmm(b_hh, HS[t], w_t, out=GH[t])
        torch.add(GXRZ[t], GHRZ[t], out=RZ[t]).sigmoid_()
        torch.addcmul(GXN[t], R[t], GHN[t], out=N[t]).tanh_()
        torch.sub(HS[t], N[t], out=HS[t + 1]).mul_(Z[t]).add_(N[t])  # n + z ⊙ (h_{t−1} − n)
    return acts, gh[..., 2 * H :].contiguous()  # W_hn h_{t−1} + b_hn: gh freed


def _gru_backward(dh, saved, hs, w_hh):
    """As ``_lstm_backward``: δh_{t−1} += δh_t ⊙ z_t + ∂L/∂(W_hh h_{t−1} + b_hh) W_hh, with

        ∂L/∂a_n = δh_t ⊙ (1 − z_t) ⊙ tanh′,  ∂L/∂a_z = δh_t ⊙ (h_{t−1} − n_t) ⊙ σ′,
        ∂L/∂a_r = ∂L/∂a_n ⊙ (W_hn h_{t−1} + b_hn) ⊙ σ′,

    the same for the input side (gx) and the recurrent side (gh) except the n block, which
    reaches gh through r: ∂L/∂gh_n = ∂L/∂a_n ⊙ r_t. Returns (∂L/∂gx, ∂L/∂gh, None). The
    factors that do not depend on δ are taken for all steps at once before the walk."""
    acts, ghn = saved
    T, B, H = dh.shape
    r, z, n = acts.chunk(3, 2)
    coef = torch.cat(  # ∂a-gradient per unit of δh: r (via n), z, n
        [
            _sigmoid_backward(ghn, r) * _tanh_backward(1 - z, n),
            _sigmoid_backward(hs[:-1] - n, z),
            _tanh_backward(1 - z, n),
        ],
        2,
    ).view(T, B, 3, H)
    dgx = torch.empty_like(acts)
    dgh = torch.empty_like(acts)
    DGX3, DGH = dgx.view(T, B, 3, H).unbind(0), _steps(dgh)
    DGHRZ, DGHN, DGXN = _steps(dgh, 0, 2 * H), _steps(dgh, 2 * H), _steps(dgx, 2 * H)
    DGXRZ = _steps(dgx, 0, 2 * H)
    C, DH, DHU, R, Z = coef.unbind(0), _steps(dh), dh.unsqueeze(2).unbind(0), _steps(r), _steps(z)
    for t in range(T - 1, -1, -1):
        torch.mul(C[t], DHU[t], out=DGX3[t])
        DGHRZ[t].copy_(DGXRZ[t])
        torch.mul(DGXN[t], R[t], out=DGHN[t])
        if t > 0:
            DH[t - 1].addcmul_(DH[t], Z[t]).addmm_(DGH[t], w_hh)
    return dgx, dgh, None


RECURSIONS: dict[str, Recursions] = {
    "lstm": Recursions(_lstm_forward, _lstm_backward, forget_gate=1, folds_bias_hh=True),
    "gru": Recursions(_gru_forward, _gru_backward),
}
"""The gated cells by name (``model.cell``; ``elman`` is ``rnnlab.model.elman``)."""


class _GatedBPTT(torch.autograd.Function):
    """One member's gated recursion, x (T, B, D) → h_1 … h_T (T, B, H), with explicit BPTT.
    ``record`` (a dict or None) receives the per-sequence norms of the total gradients after
    backward: "h" ‖∂L/∂h_t‖₂, "x" ‖∂L/∂x_t‖₂ and for the LSTM "c" ‖∂L/∂c_t‖₂, each (T, B),
    summed in float64 whatever the dtype, as the Elman cell's: a float32 sum of squares
    underflows from entries of ~1e−22 on, long before the gradient leaves float32's range."""

    @staticmethod
    def forward(ctx, x, weight_ih, weight_hh, bias_ih, bias_hh, cell: Recursions, record):
        T, B, D = x.shape
        H = weight_hh.shape[1]
        b = bias_ih + bias_hh if cell.folds_bias_hh else bias_ih
        gx = torch.addmm(b, x.reshape(T * B, D), weight_ih.t()).view(T, B, -1)
        hs = x.new_zeros(T + 1, B, H)
        saved = cell.forward(gx, weight_hh, bias_hh, hs)
        ctx.save_for_backward(x, weight_ih, weight_hh, hs, *saved)
        ctx.cell, ctx.record = cell, record
        return hs[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_hs):
        x, weight_ih, weight_hh, hs, *saved = ctx.saved_tensors
        cell, record = ctx.cell, ctx.record
        T, B, H = grad_hs.shape
        dh = grad_hs.clone(memory_format=torch.contiguous_format)  # becomes δh_t in place
        dgx, dgh, dc = cell.backward(dh, saved, hs, weight_hh)
        gx_flat, gh_flat = dgx.view(T * B, -1), dgh.view(T * B, -1)
        grad_w_ih = (x.reshape(T * B, -1).t() @ gx_flat).t()
        grad_w_hh = gh_flat.t() @ hs[:-1].reshape(T * B, H)
        grad_b_ih, grad_b_hh = gx_flat.sum(0), gh_flat.sum(0)
        grad_x = None
        if ctx.needs_input_grad[0] or record is not None:
            grad_x = (gx_flat @ weight_ih).view(x.shape)
        if record is not None:  # summed in float64: float32 squares underflow below ~1e−22

            def norm(t):
                return torch.linalg.vector_norm(t, dim=-1, dtype=torch.float64)

            record["h"], record["x"] = norm(dh), norm(grad_x)
            if dc is not None:
                record["c"] = norm(dc)
        if not ctx.needs_input_grad[0]:
            grad_x = None
        return grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None, None


class Gated(Stacked):
    """K LSTM or GRU networks of one shape, stacked, with a linear readout; the interface of
    ``rnnlab.model.elman.Elman`` (``hidden``, ``forward``, ``keep``, the recorded norms) plus
    ``cell_grad_norms`` for the LSTM.

    Args:
        input_size, hidden_size, output_size, readout: as ``Elman``.
        cell: a name in ``RECURSIONS``.
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
        cell: str = "lstm",
        members: Sequence[MemberInit] = (MemberInit(),),
        dtype: torch.dtype = torch.float32,
    ):
        if cell not in RECURSIONS:
            known = ", ".join(RECURSIONS)
            raise ValueError(f"unknown gated cell {cell!r}; expected one of: {known}")
        super().__init__(readout, members)
        self.cell, self._cell = cell, RECURSIONS[cell]
        G, D, H, O = cells.CELLS[cell].gates, input_size, hidden_size, output_size
        drawn = []
        for m in members:
            g = m.generator if m.generator is not None else torch.Generator().manual_seed(0)
            w_ih, w_hh = torch.empty(G * H, D, dtype=dtype), torch.empty(G * H, H, dtype=dtype)
            for j in range(G):  # gate by gate, each block as the Elman cell's matrix
                inits.get_input(m.input_init)(w_ih[j * H : (j + 1) * H], g)
            for j in range(G):
                inits.get(m.init)(w_hh[j * H : (j + 1) * H], m.gain, g)
            b_ih, b_hh = torch.zeros(G * H, dtype=dtype), torch.zeros(G * H, dtype=dtype)
            if self._cell.forget_gate is not None:
                b_ih[self._cell.forget_gate * H : (self._cell.forget_gate + 1) * H] = 1.0
            drawn.append([b_hh, b_ih, w_hh, w_ih, *draw_readout(H, O, g, dtype)])
        # Registered in this order (the global gradient norm concatenates them in it).
        b_hh, b_ih, w_hh, w_ih, *out = (
            nn.Parameter(torch.stack(ws)) for ws in zip(*drawn, strict=True)
        )
        self.bias_hh, self.bias_ih, self.weight_hh, self.weight_ih = b_hh, b_ih, w_hh, w_ih
        self.readout = nn.ParameterDict([("bias", out[1]), ("weight", out[0])]) if out else None
        self._records: list[dict] = []

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, L, B, D) → every hidden state h_t (K, L, B, H), member by member."""
        self._records = [{} for _ in range(self.num_members)] if self.record_hidden_grads else []
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return stack(
            [
                _GatedBPTT.apply(
                    aligned(xk), *(aligned(p[k]) for p in params), self._cell, self._record(k)
                )
                for k, xk in enumerate(x)
            ]
        )

    def _record(self, k: int) -> dict | None:
        return self._records[k] if self._records else None

    def _recorded(self, key: str) -> torch.Tensor | None:
        if not self._records or any(key not in r for r in self._records):
            return None
        return stack([r[key] for r in self._records])

    @property
    def hidden_grad_norms(self) -> torch.Tensor | None:
        """‖∂L/∂h_t‖₂ per member, step and sequence, (K, L, B), set by the last backward pass."""
        return self._recorded("h")

    @property
    def input_grad_norms(self) -> torch.Tensor | None:
        """‖∂L/∂x_t‖₂ per member, step and sequence, (K, L, B)."""
        return self._recorded("x")

    @property
    def cell_grad_norms(self) -> torch.Tensor | None:
        """‖∂L/∂c_t‖₂ per member, step and sequence, (K, L, B): the LSTM's cell state."""
        return self._recorded("c")
