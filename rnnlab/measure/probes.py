"""Gradient probes: what a training step measures about gradient flow.

The central measurement is the per-timestep gradient profile (Pascanu et al. 2013, §2):

    n_t = (1/B) Σ_b ‖∂L_b/∂h_t‖₂,   t = 1..L,   L_b = the loss of sequence b

read as a function of the distance k = L − t from the end. For the training loss
L = (1/B) Σ_b L_b, sequence b's slice of ∂L/∂h_t is (1/B) ∂L_b/∂h_t, so the profile comes
from the very backward pass that trains the network: no extra computation.

Summaries of a profile:
  * ``grad_h/slope``: least-squares slope of ln n against k, in nats per step. Negative:
    vanishing (n shrinks going back in time); positive: exploding. A linear RNN with
    W_hh = g·Q (Q orthogonal) and the loss on the last step has slope exactly ln g.
  * ``grad_h/log10_ratio``: log10(n_1 / n_L), decades gained (> 0) or lost (< 0) over the sequence.
  * ``grad_h/fit_points``: how many n_t entered the fit; ``grad_h/underflow``: how many are
    exactly 0: δ_t itself underflowed (float32 holds nothing below ~1e−45; 0.5^200 is below
    it). Each ‖δ_t‖ sums its squares in float64 whatever the dtype, so the norm resolves every
    nonzero δ_t (a float32 sum of squares would read 0 from ~1e−22 on). Zeros and non-finite
    values are excluded from the fit, counted, and kept in the stored profile.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rnnlab.measure import names
from rnnlab.model.elman import aligned


def gradient_profile(hidden_grad_norms: torch.Tensor, loss_scale: float) -> torch.Tensor:
    """n_t from the per-sequence norms of the *batch-mean* loss's gradient.

    Args:
        hidden_grad_norms: ([K,] L, B) ‖∂L/∂h_t‖₂ per sequence, L = (1/B)Σ_b L_b (and per
            member of an ensemble).
        loss_scale: B, undoing the 1/B of the mean so each entry is ‖∂L_b/∂h_t‖₂.
    Returns:
        ([K,] L) float64 tensor on the CPU, index t−1 ↔ time step t.
    """
    n = hidden_grad_norms.detach().double() * loss_scale
    if n.dim() == 3:  # each member by its own reduction: its bits must not depend on the stack
        return torch.stack([aligned(member).mean(dim=-1) for member in n]).cpu()
    return n.mean(dim=-1).cpu()


def profile_summary(n: torch.Tensor) -> dict[str, float]:
    """Slope, log10 ratio and fit size of a profile n (L,), index t−1 ↔ step t."""
    L = n.shape[0]
    k = torch.arange(L - 1, -1, -1, dtype=torch.float64)  # distance from the end, L−t
    ok = torch.isfinite(n) & (n > 0)
    slope = math.nan
    if int(ok.sum()) >= 2:
        kk, ln = k[ok], n[ok].log()
        kc = kk - kk.mean()
        slope = float((kc * (ln - ln.mean())).sum() / (kc * kc).sum())
    with torch.no_grad():
        ratio = float(torch.log10(n[0] / n[-1])) if L > 0 else math.nan
    return {
        names.SLOPE: slope,
        names.LOG10_RATIO: ratio,
        names.FIT_POINTS: float(ok.sum()),
        names.UNDERFLOW: float((n == 0).sum()),
    }


def input_summary(n: torch.Tensor) -> dict[str, float]:
    """``grad_x/slope`` and ``grad_x/log10_ratio`` of the input-gradient profile n^x (L,):
    :func:`profile_summary`'s fit, on ‖∂L_b/∂x_t‖₂ = ‖(∂L_b/∂z_t) W_xh‖₂ instead of ‖∂L_b/∂h_t‖₂."""
    s = profile_summary(n)
    return {names.GRAD_X_SLOPE: s[names.SLOPE], names.GRAD_X_LOG10_RATIO: s[names.LOG10_RATIO]}


def cell_summary(n: torch.Tensor) -> dict[str, float]:
    """``grad_c/slope`` and ``grad_c/log10_ratio`` of the LSTM's cell-state profile n^c (L,)."""
    s = profile_summary(n)
    return {names.GRAD_C_SLOPE: s[names.SLOPE], names.GRAD_C_LOG10_RATIO: s[names.LOG10_RATIO]}


def profile_table(n: torch.Tensor) -> dict[str, np.ndarray]:
    """A profile n (L,) as table columns t, k = L − t, n_t (``Measurement.tables``)."""
    L = n.shape[0]
    t = np.arange(1, L + 1)
    return {"t": t, "k": L - t, "n_t": n.numpy()}


def spectrum(weight_hh: torch.Tensor) -> dict[str, float]:
    """Spectral radius max|λ(W_hh)| and largest singular value σ_max(W_hh), in float64.

    Pascanu et al. (2013): σ_max < 1/γ (γ = max |φ′|, each activation's ``gamma`` in
    ``rnnlab.model.activations``: 1 for tanh, 1/4 for sigmoid) is sufficient for vanishing
    gradients; ρ > 1 is necessary for exploding ones.
    """
    w = weight_hh.detach().double().cpu()
    if not torch.isfinite(w).all():
        return {names.W_HH_RADIUS: math.nan, names.W_HH_SIGMA_MAX: math.nan}
    return {
        names.W_HH_RADIUS: float(torch.linalg.eigvals(w).abs().max()),
        names.W_HH_SIGMA_MAX: float(torch.linalg.matrix_norm(w, ord=2)),
    }
