"""Theory beside measurement: mean-field predictions and Lyapunov exponents.

Mean field (Poole et al. 2016; Schoenholz et al. 2017; Chen, Pennington & Schoenholz 2018).
For a random Elman RNN with Var(W_hh)ᵢⱼ = σ_w²/H, inputs contributing variance q_in and bias
variance σ_b² to each pre-activation, the pre-activation variance settles at the fixed point

    q* = σ_w² · E_z[φ(√q* z)²] + σ_b² + q_in,        z ~ N(0, 1)

and one backward step multiplies the *squared* gradient norm by

    χ₁ = σ_w² · E_z[φ′(√q* z)²].

So the predicted slope of ln ‖∂L/∂h_t‖ per step back is ½ ln χ₁, and the depth scale over
which gradients vanish (χ₁ < 1) or explode (χ₁ > 1) is ξ = −1/ln χ₁. The edge of chaos is
χ₁ = 1: σ_w = 1 for tanh at q* = 0, σ_w = √2 for ReLU.

Gaussian expectations are exact where the activation's entry gives a closed form
(``rnnlab.model.activations``: linear, relu, leaky_relu, hardtanh — the last two split at their
kinks, where quadrature of φ′ would be badly off) and use composite Gauss–Legendre quadrature
of the entry's φ and φ′ otherwise (tanh, sigmoid: 2048 nodes, ~1e-13 relative); never
sampling.

Lyapunov exponents (Engelken, Wolf & Abbott 2020): the largest exponent λ_max of the network's
dynamics along its task's input trajectories, from the QR method (Benettin et al. 1980) on the
Jacobians J_t = diag(φ′(z_t)) W_hh with a QR every few steps (``QR_EVERY``; for λ_max alone a
renormalisation), batched over members and trajectories; cross-checked by a two-trajectory
perturbation estimate.
For a random network λ_max ≈ ½ ln χ₁; for W_hh = g·Q and linear φ every exponent is ln g.

Mean-field functions need only numpy, so ``rnnlab theory`` answers instantly; the Lyapunov
functions import torch when called.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rnnlab.measure import names
from rnnlab.model import activations


def _composite_gauss_legendre(
    lo: float = -10.0, hi: float = 10.0, panels: int = 128, order: int = 16
):
    """Nodes and weights with E_z[f(z)] ≈ Σ w f(z), z ~ N(0, 1): Gauss–Legendre on equal panels
    (an edge at 0, where φ is steepest); beyond ±10σ the density is below 1e-22."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(lo, hi, panels + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    z = (mid[:, None] + half[:, None] * x[None, :]).ravel()
    weights = (half[:, None] * w[None, :]).ravel() * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    return z, weights


_Z, _W = _composite_gauss_legendre()
U_MAX = 40.0
"""|u| beyond which tanh′ and the sigmoid's derivative are below 1e-30 and φ² is its limit."""
_U, _WU = np.polynomial.legendre.leggauss(16)
_EDGES = np.linspace(-U_MAX, U_MAX, 257)
_MID, _HALF = (_EDGES[1:] + _EDGES[:-1]) / 2, (_EDGES[1:] - _EDGES[:-1]) / 2
_U_NODES = (_MID[:, None] + _HALF[:, None] * _U[None, :]).ravel()
_U_WEIGHTS = (_HALF[:, None] * _WU[None, :]).ravel()


def _wide(f, q: float, tail: float) -> float:
    """E[f(u)], u ~ N(0, q), for a wide Gaussian (√q > 4): the nodes sit on u's scale (where
    f changes, |u| ≲ 40), not on z's, which at √q ≳ 100 would step over tanh′ entirely; the
    mass beyond ±U_MAX contributes ``tail`` × P(|u| > U_MAX)."""
    density = np.exp(-(_U_NODES**2) / (2 * q)) / math.sqrt(2 * math.pi * q)
    beyond = math.erfc(U_MAX / math.sqrt(2 * q))
    return float((_U_WEIGHTS * density) @ f(_U_NODES)) + tail * beyond


def second_moments(activation: str, q: float) -> tuple[float, float]:
    """(E[φ(√q z)²], E[φ′(√q z)²]) for z ~ N(0, 1); at q = 0, the limit q → 0⁺. The
    activation's closed form where its entry has one, else quadrature of its φ and φ′."""
    q = max(q, 0.0)
    moments = activations.get(activation).moments
    if not isinstance(moments, activations.Quadrature):
        return moments(q)
    phi, dphi = moments.phi, moments.dphi
    if math.sqrt(q) > 4 and moments.limits is not None:
        lo, hi = moments.limits  # the mass beyond ±U_MAX sits at φ(±∞), half on each side
        tail = (lo * lo + hi * hi) / 2
        return _wide(lambda u: phi(u) ** 2, q, tail), _wide(lambda u: dphi(u) ** 2, q, 0.0)
    z = math.sqrt(q) * _Z
    return float(_W @ phi(z) ** 2), float(_W @ dphi(z) ** 2)


@dataclass(frozen=True)
class MeanField:
    q_star: float
    """Fixed-point pre-activation variance (inf: the linear map explodes)."""
    chi1: float
    """Per-step factor on the squared gradient norm."""
    slope: float
    """Predicted slope of ln ‖∂L/∂h_t‖ per step back: ½ ln χ₁ (nats/step)."""
    depth_scale: float
    """ξ = −1/ln χ₁ (steps): > 0 vanishing, < 0 exploding, inf at criticality."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def mean_field(
    activation: str, gain: float, input_var: float = 0.0, bias_var: float = 0.0
) -> MeanField:
    """Fixed point q*, χ₁, slope and depth scale for σ_w = gain (see the module docstring)."""
    sw2, s = gain * gain, bias_var + input_var
    act = activations.get(activation)
    if act.scale_free:  # q* in closed form: E[φ²] = c q
        c = second_moments(activation, 1.0)[0]
        q = s / (1 - sw2 * c) if sw2 * c < 1 else (math.inf if s > 0 else 0.0)
    elif math.isfinite(act.sup()):
        # |φ| ≤ sup: q* ∈ [0, σ_w² sup² + s]; bisect for the largest (stable) root of F(q) − q
        gap = lambda q: sw2 * second_moments(activation, q)[0] + s - q  # noqa: E731
        lo, hi = 1e-300, sw2 * act.sup() ** 2 + s + 1.0
        if gap(lo) <= 0:  # only q* = 0 (tanh/hardtanh below the edge, no input)
            q = 0.0
        else:
            for _ in range(200):  # to ~1e-15 relative: no critical slowing down near χ₁ = 1
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if gap(mid) > 0 else (lo, mid)
                if hi - lo <= 1e-15 * hi:
                    break
            q = (lo + hi) / 2
    else:
        raise ValueError(f"mean field of {activation!r}: φ must be bounded or scale-free")
    dphi2 = second_moments(activation, q if math.isfinite(q) else 1.0)[1]
    chi1 = sw2 * dphi2
    log_chi = math.log(chi1) if chi1 > 0 else -math.inf
    depth = -1 / log_chi if log_chi != 0 else math.inf
    return MeanField(q, chi1, 0.5 * log_chi, depth)


def critical_gain(activation: str, input_var: float = 0.0, bias_var: float = 0.0) -> float:
    """The gain σ_w at which χ₁ = 1 (the edge of chaos), by bisection on ln χ₁."""
    lo, hi = 1e-3, 1e3
    f = lambda g: mean_field(activation, g, input_var, bias_var).slope  # noqa: E731
    if f(lo) > 0 or f(hi) < 0:
        return math.nan
    for _ in range(60):  # geometric bisection: 2^-60 of six decades
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return math.sqrt(lo * hi)


# ------------------------------------------------------------------ Lyapunov exponents
QR_EVERY = 5
"""Steps between re-orthonormalisations of the tangent vectors: the QR interval m of Engelken
et al. (2020). Between two, the k vectors are carried by m Jacobians as they are; their frame's
condition number grows to ≈ exp(m (λ₁ − λ_k)) and their norms to ≈ exp(m λ). Householder QR
then loses ε·cond relative accuracy in the k-th diagonal of R once per interval, a per-step
error ≈ ε exp(m (λ₁ − λ_k)) / m (ε = 2.2e-16), and float64 holds the norms while m |λ| < 700.
m = 5 keeps the error below 1e-9 for spreads λ₁ − λ_k up to 3 nats/step; measured top-8
spreads are 0.1–0.3 (H = 64: tanh g ≤ 3, ReLU g = 1.8, sigmoid g = 4), and every exponent of a
linear g·Q is ln g (no spread). For k = 1 only the range matters. Exponents past the rank of
some step's Jacobian (fewer than k unsaturated hardtanh or live ReLU units) are −∞ in exact
arithmetic: any schedule, a QR per step included, returns rounding noise there."""


def lyapunov_spectrum(
    weight_hh,
    u,
    activation: str,
    k: int = 8,
    transient: int | None = None,
    qr_every: int = QR_EVERY,
):
    """Top-k Lyapunov exponents (nats/step) of h_t = φ(W_hh h_{t−1} + u_t), by the QR method.

    Benettin et al. (1980) with the QR interval of Engelken et al. (2020): k tangent vectors per
    trajectory are carried by J_t = diag(φ′(z_t)) W_hh and re-orthonormalised every
    ``qr_every`` steps (and at the end of the transient and of the sequence); the exponents are
    the mean per-step log-growth ln |diag R| after the transient. The product of the R factors
    over an interval is the R factor of the product, so every interval gives the same numbers
    as a QR per step, up to rounding (see ``QR_EVERY``). For k = 1 the QR is a renormalisation:
    R is the vector's norm. All members and trajectories advance together, in float64 on the
    inputs' device, with no host synchronisation: for k = 1 where Triton's tangent kernel
    covers u (CUDA, H ≤ 64, an activation of its table: ``backends.tangent_covers``) as one
    launch, else a few small kernels a step (on a GPU, ~600 launches for L = 100).

    Args:
        weight_hh: (H, H), or (K, H, H) for a stack of K networks.
        u: (T, B, H) input drive W_xh x_t + b along B trajectories (h_0 = 0), or (K, T, B, H).
        k: how many exponents.
        transient: steps discarded before averaging (default: T // 10).
        qr_every: steps between re-orthonormalisations, m ≥ 1.
    Returns:
        (k,) float64 tensor, or (K, k) for a stack: averaged over the B trajectories, largest
        first.
    """
    import torch

    if qr_every < 1:
        raise ValueError(f"qr_every must be >= 1, got {qr_every}")
    single = weight_hh.dim() == 2
    w, u = weight_hh.detach().double(), u.detach().double()
    if single:
        w, u = w.unsqueeze(0), u.unsqueeze(0)
    K, T, B, H = u.shape
    k = min(k, H)
    transient = T // 10 if transient is None else transient
    act = activations.get(activation)
    w_t = w.transpose(1, 2)  # W_hhᵀ (K, H, H)
    # The same random orthonormal k-frame per trajectory for every member, drawn on the CPU so
    # that the numbers do not depend on the device.
    g = torch.Generator().manual_seed(0)
    q0 = torch.linalg.qr(torch.randn(B, H, k, dtype=w.dtype, generator=g))[0]
    if k == 1 and _tangent_kernel(u, activation):  # the whole loop below in one launch
        from rnnlab.model import backends

        v0 = q0[..., 0].to(w.device)
        total = backends.tangent_loop(u, w_t, v0, activation, transient, qr_every)  # (K, B)
        out = (total / max(1, T - transient)).mean(1, keepdim=True)  # (K, 1)
        return out[0] if single else out
    drive = u.transpose(0, 1).contiguous().unbind(0)  # T contiguous (K, B, H)
    v = q0.mT.to(w.device).expand(K, B, k, H).contiguous()  # rows are the tangent vectors
    h = w.new_zeros(K, B, H)
    total = w.new_zeros(K, B, k)
    tiny = torch.finfo(w.dtype).tiny
    for t in range(T):
        h = act.fn_(torch.bmm(h, w_t).add_(drive[t]))  # (K, B, H); ops as φ(u_t + h W_hhᵀ)
        v = torch.bmm(v.view(K, B * k, H), w_t).view(K, B, k, H)  # (W_hh v)ᵀ = vᵀ W_hhᵀ
        if act.backward is not None:  # ⊙ φ′(z_t), PyTorch's kernels, through h
            act.backward(v, h.unsqueeze(2), v)
        if (t + 1 - transient) % qr_every and t != T - 1:
            continue
        if k == 1:  # QR of one column: R = ‖v‖
            r = torch.linalg.vector_norm(v, dim=-1)  # (K, B, 1)
            v = v / r.clamp_min(tiny).unsqueeze(-1)  # a zero vector (dead ReLUs) stays zero
        else:
            q, r = torch.linalg.qr(v.mT)  # (K, B, H, k), (K, B, k, k)
            v, r = q.mT.contiguous(), torch.diagonal(r, dim1=-2, dim2=-1).abs()
        if t >= transient:
            total += torch.log(r)
    out = (total / max(1, T - transient)).mean(1)  # (K, k)
    return out[0] if single else out


def lyapunov_max_stacked(
    weight_ih, weight_hh, bias, x, activation: str, k: int = 1, qr_every: int = QR_EVERY
):
    """dyn/lyapunov_max of K stacked networks along their own input trajectories, in one call.

    A member's value is the same bits alone or in a stack of any size: its drive is its own
    multiply (``member_mm``), and for k = 1 the recursion runs for the whole stack in one
    Triton launch where the kernel covers it (CUDA, H ≤ 64: ``backends.tangent_covers``),
    else member by member on aligned operands (a batched multiply's kernel, and so its
    rounding, depends on K and on the operands' alignment).

    Args:
        weight_ih: (K, H, D); weight_hh: (K, H, H); bias: (K, H) — e.g. a stacked
            ``rnnlab.model.Elman``'s parameters of those names.
        x: (K, L, B, D) inputs, member k's B trajectories in x[k].
        k: exponents computed (the largest is returned; k = 1 needs no QR).
    Returns:
        (K,) float64 tensor on the weights' device (read it with one ``.tolist()``).
    """
    import torch

    from rnnlab.model.elman import aligned, member_mm

    with torch.no_grad():  # the drive W_xh x_t + b in the model's dtype, as its forward pass
        K, L, B, D = x.shape
        flat = x.reshape(K, L * B, D).to(weight_ih.dtype)
        u = member_mm(flat, weight_ih.mT, bias.unsqueeze(1)).view(K, L, B, -1).double()
    if k == 1 and _tangent_kernel(u, activation):
        return lyapunov_spectrum(weight_hh, u, activation, k=1, qr_every=qr_every)[:, 0]
    w = weight_hh.double()  # member by member, at aligned addresses as each has alone
    one = [
        lyapunov_spectrum(aligned(w[j]), aligned(u[j]), activation, k=k, qr_every=qr_every)[0]
        for j in range(K)
    ]
    return torch.stack(one) if K else u.new_zeros(0)


def _tangent_kernel(u, activation: str) -> bool:
    """Whether the k = 1 recursion along u ((K,) T, B, H) runs as one Triton launch."""
    from rnnlab.model import backends

    return u.dim() == 4 and backends.tangent_covers(u, activation)


def lyapunov_max_perturbation(
    weight_hh, u, activation: str, eps: float = 1e-7, transient: int | None = None
):
    """λ_max from two nearby trajectories, renormalised every step (an independent estimate)."""
    import torch

    w, u = weight_hh.detach().double(), u.detach().double()
    T, B, H = u.shape
    transient = T // 10 if transient is None else transient
    phi = activations.get(activation).fn
    g = torch.Generator(device=u.device).manual_seed(1)
    v = torch.randn(B, H, dtype=w.dtype, device=w.device, generator=g)
    h = torch.zeros(B, H, dtype=w.dtype, device=w.device)
    p = h + eps * v / v.norm(dim=1, keepdim=True)
    total = torch.zeros(B, dtype=w.dtype, device=w.device)
    for t in range(T):
        h, p = phi(u[t] + h @ w.T), phi(u[t] + p @ w.T)
        d = (p - h).norm(dim=1)
        if t >= transient:
            total += torch.log(d / eps)
        p = h + (p - h) * (eps / d)[:, None]
    return float((total / max(1, T - transient)).mean())


def run_predictions(member, x) -> dict[str, float]:
    """theory/* for one network on its task inputs x (L, B, D): σ_w² = ‖W_hh‖²_F / H, q_in and
    σ_b² from the actual input projection and bias.

    Args:
        member: its weights and activation, e.g. ``Elman.member(k)`` (``weight_ih`` (H, D),
            ``weight_hh`` (H, H), ``bias`` (H,), ``activation``).
    """
    import torch

    with torch.no_grad():
        H = member.weight_hh.shape[0]
        sw2 = float(member.weight_hh.double().pow(2).sum() / H)
        proj = x.double() @ member.weight_ih.double().T
        q_in, bias_var = float(proj.pow(2).mean()), float(member.bias.double().pow(2).mean())
    mf = mean_field(member.activation, math.sqrt(sw2), q_in, bias_var)
    return {
        names.THEORY_SLOPE: mf.slope,
        names.THEORY_CHI1: mf.chi1,
        names.THEORY_DEPTH_SCALE: mf.depth_scale,
        names.THEORY_Q_STAR: mf.q_star,
        names.THEORY_Q_IN: q_in,
        names.THEORY_BIAS_VAR: bias_var,
    }


def lyapunov_max(member, x, k: int = 1) -> float:
    """dyn/lyapunov_max of one network (``member`` as in :func:`run_predictions`) along its
    task's input trajectories x (L, B, D): a stack of one for :func:`lyapunov_max_stacked`."""
    params = (member.weight_ih, member.weight_hh, member.bias, x)
    return float(lyapunov_max_stacked(*(p.unsqueeze(0) for p in params), member.activation, k=k)[0])
