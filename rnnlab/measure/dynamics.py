"""The network's state along its task's input trajectories: unit statistics and the
singular values of the Jacobian product.

Both run one network's recurrence again in float64 along B held-out input sequences x
(L, B, D) — the trajectories the theory uses (``rnnlab.train.THEORY_INPUTS``; the Jacobian
spectrum the first ``probe.jacobian_trajectories`` of them) — with

    z_t = W_hh h_{t−1} + W_xh x_t + b,   h_t = φ(z_t),   h_0 = 0,   t = 1..L.

Unit statistics (``units/*``), after a burn-in of ``L // 10`` steps (the mean-field q*
describes a stationary state; the Lyapunov exponents discard the same transient), over the
steps t > L // 10, the B sequences and the H units:

  * ``units/q_hat``: q̂ = mean of z_t,i², the measured pre-activation second moment, to set
    beside the mean-field fixed point ``theory/q_star`` (Poole et al. 2016).
  * ``units/saturated``: the fraction of (t, b, i) with |φ′(z)| ≤ 0.01 γ (γ = max |φ′|, the
    activation table's ``gamma``): a tanh unit beyond |z| ≈ 3.0, a ReLU unit at z ≤ 0, a leaky
    ReLU unit on its negative side (slope 0.01 γ). 0 for the linear map.
  * ``units/dead``: the fraction of units i saturated at every step t > L // 10 of every
    sequence: for ReLU a unit never active over the batch (it passes no gradient), for tanh
    a unit pinned in saturation.

Jacobian spectrum (``jac/*``): the singular values of

    J(k) = ∂h_L/∂h_{L−k} = D_L W_hh · D_{L−1} W_hh ⋯ D_{L−k+1} W_hh,   D_t = diag(φ′(z_t)),

accumulated backward from the end, J(k) = J(k−1) D_{L−k+1} W_hh, one H×H multiply per step,
batched over the B trajectories; an SVD only at the log-spaced distances ``distances(L)``.
J is rescaled by its largest entry every few steps and the log of the scale carried aside, so
neither an exploding nor a vanishing product leaves float64's range. On a GPU the products run
row by row in one Triton launch for a whole stack (:func:`jacobian_spectra_on_device`: each
row of J rescaled on its own), the SVDs on the host (:func:`spectrum_from_rows`).
``jac/log_sv_max`` and ``jac/log_sv_min`` are ln σ_max(J(L)) and ln σ_min(J(L)) averaged over
the trajectories. For W_hh = g·Q (Q orthogonal) and linear φ every singular value of J(k) is
g^k: ln σ = k ln g.

Resolution: an SVD of the float64 product finds σ_min only to about ε·σ_max (ε = 2.2e-16),
so where σ_min/σ_max < ``RESOLVED`` on any trajectory — a spread ln σ_max − ln σ_min beyond
≈ 27.6 nats, as for a long tanh product, or a singular one (a ReLU unit off at some step) —
ln σ_min is NaN: unresolved, the spread only known to exceed −ln RESOLVED. ln σ_max is always
resolved.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from rnnlab.measure import names
from rnnlab.model import activations

SATURATED = 0.01
"""|φ′(z)| ≤ SATURATED · γ counts as saturated."""
RESOLVED = 1e-12
"""σ_min/σ_max below which σ_min is not resolved (NaN): 1e4 ε, so a resolved ln σ_min is good
to ~1e-4 absolute."""
RESCALE_EVERY = 8
"""Steps between rescalings of the Jacobian product (a step grows or shrinks it by far less than
float64's range can take eight times over)."""
DISTANCES = 12
"""About how many log-spaced distances k the Jacobian spectrum is taken at."""
DEVICE_BYTES = 1 << 30
"""At most this much float64 for a stack's rows of J at every distance and its trajectories
(:func:`jacobian_spectra_on_device`: on the device, then on the host until every member's SVDs
have read them; 0.4 GB for 64 networks at L = 200, H = 64, 16 trajectories). Above it the
host's products run, one network's J at a time, as on a CPU."""


def burn_in(L: int) -> int:
    """Steps discarded before the unit statistics: L // 10, as the Lyapunov transient."""
    return L // 10


def _host(t: torch.Tensor) -> torch.Tensor:
    """t in float64 on the CPU. These measurements are a sequence of small float64 steps (one
    (B, H)·(H, H) multiply per step): on a GPU each is a launch, and run there they tripled
    the default sweep's training time on an H200 (28 s → 88 s); on the CPU they cost a few
    per cent of a run, wherever the run trains. (The Jacobian spectrum's products, the
    largest of them, run on a GPU as one kernel instead: :func:`jacobian_spectra_on_device`.)"""
    return t.detach().to("cpu", torch.float64)


def trajectory(member, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z_t and φ′(z_t) of one network along x (L, B, D), float64 on the CPU (``_host``).

    Args:
        member: its weights and activation (``Elman.member(k)``).
    Returns:
        z (L, B, H) and dphi (L, B, H), index t−1 ↔ step t.
    """
    act = activations.get(member.activation)
    with torch.no_grad():
        w_hh, w_ih, bias, x = (
            _host(t) for t in (member.weight_hh, member.weight_ih, member.bias, x)
        )
        drive = x @ w_ih.T + bias  # (L, B, H): W_xh x_t + b
        L, B, H = drive.shape
        z, h = torch.empty_like(drive), drive.new_zeros(B, H)
        for t in range(L):
            z[t] = drive[t] + h @ w_hh.T
            h = act.fn(z[t])
        hs = act.fn(z)
        dphi = torch.ones_like(z)
        if act.backward is not None:  # φ′ through h = φ(z), PyTorch's kernels as the model's
            dphi = act.backward(torch.ones_like(z), hs, torch.empty_like(z))
    return z, dphi


def unit_statistics(member, x: torch.Tensor) -> dict[str, float]:
    """``units/q_hat``, ``units/saturated``, ``units/dead`` along x (L, B, D) (module doc)."""
    z, dphi = trajectory(member, x)
    after = burn_in(z.shape[0])
    z, dphi = z[after:], dphi[after:]
    if z.numel() == 0:
        return {names.UNITS_Q_HAT: math.nan, names.UNITS_SATURATED: math.nan, names.UNITS_DEAD: 0.0}
    gamma = activations.get(member.activation).gamma
    saturated = dphi.abs() <= SATURATED * gamma  # (L', B, H)
    return {
        names.UNITS_Q_HAT: float(z.pow(2).mean()),
        names.UNITS_SATURATED: float(saturated.double().mean()),
        names.UNITS_DEAD: float(saturated.flatten(0, 1).all(0).double().mean()),
    }


def distances(L: int, n: int = DISTANCES) -> list[int]:
    """About n log-spaced distances 1 ≤ k ≤ L, 1 and L included."""
    return sorted({round(k) for k in np.geomspace(1, L, n)}) if L > 0 else []


def jacobian_spectrum(member, x: torch.Tensor, ks: list[int] | None = None) -> dict:
    """The singular values of J(k) = ∂h_L/∂h_{L−k} along each trajectory of x (L, B, D).

    Returns:
        {"k": (n,) int64, "log_sv_max": (n,), "log_sv_min": (n,)} numpy arrays: ln σ_max
        and ln σ_min of J(k), float64, averaged over the B trajectories, at the distances ks
        (default ``distances(L)``).
    """
    _, dphi = trajectory(member, x)
    L, B, H = dphi.shape
    ks = distances(L) if ks is None else sorted(ks)
    w = _host(member.weight_hh)
    J = torch.eye(H, dtype=w.dtype, device=w.device).expand(B, H, H).contiguous()
    log_scale = w.new_zeros(B)
    tiny = torch.finfo(w.dtype).tiny
    at = []
    wanted = set(ks)
    with torch.no_grad():
        for k in range(1, L + 1):
            J = torch.matmul(J.mul_(dphi[L - k].unsqueeze(1)), w)  # J(k) = J(k−1) D_{L−k+1} W_hh
            if k % RESCALE_EVERY == 0 or k in wanted:
                scale = J.abs().amax((1, 2)).clamp_min(tiny)
                J.div_(scale.view(B, 1, 1))
                log_scale += scale.log()
            if k in wanted:
                at.append(_log_singular_values(J, log_scale))
    return _table(ks, at)


def jacobian_spectra_on_device(weight_ih, weight_hh, bias, x, activation: str) -> list | None:
    """The Jacobian spectrum's products for a stack of K networks at once, on their device:
    the trajectories along x (K, L, B, D) in float64 (each member's drive its own multiply,
    the recursion the backend's), then every row of every J(k) as one Triton launch
    (``backends.jacobian_loop``: the rows of J are covectors carried back as δ_t is, rescaled
    each on its own). Returns, per member, (rows (B, n, H, H), log-scales (B, n, H), ks) on the
    CPU for :func:`spectrum_from_rows` (the SVDs, on the host as before); None where the kernel
    does not cover these shapes (float64 W_hh on chip: H ≤ 64) or they would take more than
    ``DEVICE_BYTES``, and the caller runs :func:`jacobian_spectrum` instead. A member's rows
    are the same bits alone or in any stack.
    """
    from rnnlab.model import backends
    from rnnlab.model.elman import member_mm

    K, L, B, D = x.shape
    H = weight_hh.shape[-1]
    ks = distances(L)
    if 8 * K * B * (len(ks) * H * H + L * H) > DEVICE_BYTES:
        return None
    shape = x.new_empty((1, 1, 1, H), dtype=torch.float64)  # what the kernel covers
    if not ks or not backends.jacobian_covers(shape, activation):
        return None
    with torch.no_grad():
        w_ih, w_hh, b = (t.detach().double() for t in (weight_ih, weight_hh, bias))
        hs = member_mm(x.reshape(K, L * B, D).double(), w_ih.mT, b.unsqueeze(1))
        hs = hs.view(K, L, B, -1)
        backends.forward(hs, w_hh.mT, activation)  # h_t, in place
        rows, logs = backends.jacobian_loop(hs, w_hh, ks, activation, RESCALE_EVERY)
        rows, logs = rows.cpu(), logs.cpu()
    return [(rows[j], logs[j], ks) for j in range(K)]


def spectrum_from_rows(rows: torch.Tensor, logs: torch.Tensor, ks: list[int]) -> dict:
    """:func:`jacobian_spectrum`'s table from the rows of J(k) that
    :func:`jacobian_spectra_on_device` carried, each row r of J(k) = exp(logs[.., r]) · rows[.., r]:
    the rows brought to their largest scale (a row below it by more than float64's range
    underflows to 0, as an entry of the host's product would), then the same SVDs."""
    at = []
    for i in range(len(ks)):
        r, log_r = rows[:, i], logs[:, i]  # (B, H, H), (B, H)
        live = ~(r.abs().amax(-1) == 0)  # a zero row (dead units) has no scale; NaN is live
        top = torch.where(live, log_r, -math.inf).amax(-1)
        top = torch.where(torch.isinf(top), 0.0, top)  # all rows zero: J(k) = 0
        factor = torch.where(live, torch.exp(log_r - top.unsqueeze(-1)), 0.0)
        at.append(_log_singular_values(r * factor.unsqueeze(-1), top))
    return _table(ks, at)


def _log_singular_values(J: torch.Tensor, log_scale: torch.Tensor) -> tuple:
    """(ln σ_max, ln σ_min or NaN where unresolved) of J · exp(log_scale), J (B, H, H),
    averaged over the B trajectories; both NaN where a product left float64's range (an
    infinite or NaN entry: weights that exploded), which an SVD cannot take."""
    if not bool(torch.isfinite(J).all()):
        nan = log_scale.new_tensor(math.nan)
        return nan, nan
    sv = torch.linalg.svdvals(J)  # (B, H), descending
    high = (sv[:, 0].log() + log_scale).mean()
    low = (sv[:, -1].log() + log_scale).mean()
    resolved = bool((sv[:, -1] >= RESOLVED * sv[:, 0]).all())
    return high, low if resolved else low.new_tensor(math.nan)


def _table(ks: list[int], at: list[tuple]) -> dict:
    """The spectrum's table: the distances and ln σ_max, ln σ_min at each."""
    k_arr = np.array(ks, dtype=np.int64)
    if not ks:
        return {"k": k_arr, "log_sv_max": np.zeros(0), "log_sv_min": np.zeros(0)}
    return {
        "k": k_arr,
        "log_sv_max": torch.stack([high for high, _ in at]).cpu().numpy(),
        "log_sv_min": torch.stack([low for _, low in at]).cpu().numpy(),
    }


def jacobian_summary(spectrum: dict) -> dict[str, float]:
    """``jac/log_sv_max`` and ``jac/log_sv_min`` at the largest distance k = L; an unresolved
    ln σ_min (NaN in the table) is left out of the metrics rather than logged as NaN."""
    if len(spectrum["k"]) == 0:
        return {}
    out = {names.JAC_LOG_SV_MAX: float(spectrum["log_sv_max"][-1])}
    low = float(spectrum["log_sv_min"][-1])
    if not math.isnan(low):
        out[names.JAC_LOG_SV_MIN] = low
    return out
