"""Which implementation runs the two BPTT recursions of ``rnnlab.model.elman._ElmanBPTT``,
and the calls into it (``forward``, ``backward``).

Three backends compute the same recursions (and Triton also the k = 1 Lyapunov recursion of
``rnnlab.measure.theory``, ``tangent_loop``, and the Jacobian spectrum's products of
``rnnlab.measure.dynamics``, ``jacobian_loop``):

- ``triton``: one persistent fused kernel per direction (``triton_elman.py``); chosen for CUDA
  tensors when Triton is importable and the shape and activation are covered;
- ``cpp``: the compiled ATen loops (``csrc/elman.cpp``, built by ``cpp.py``);
- ``python``: the same loops in Python (``loops.py``), the reference the others are tested
  against and the fallback for an activation given only as Python callables.

``RNNLAB_BACKEND=triton|cpp|python`` forces one (read at every call, so tests can set it);
with ``TRITON_INTERPRET=1`` set before triton is imported, a forced ``triton`` runs the kernels
on CPU tensors under Triton's interpreter (slow: for tests on small shapes only).

Nothing here imports a backend until a recursion needs it (``python -m
rnnlab.model.backends.cpp`` runs that module as a script, so this package must not import it).
"""

from __future__ import annotations

import functools
import os

import torch

from rnnlab.model import activations
from rnnlab.model.backends import loops

BACKENDS = ("triton", "cpp", "python")


def interpreting() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): the kernels run on the CPU."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


@functools.cache
def _triton():
    """(rnnlab.model.backends.triton_elman, "") or (None, why): imported once, on first need."""
    try:
        from rnnlab.model.backends import triton_elman
    except ImportError as e:  # no triton in this environment
        return None, f"triton is not importable ({e})"
    return triton_elman, ""


def _compiled():
    """The C++ loops' module, or None (``cpp.loops``: built on first use, then cached)."""
    from rnnlab.model.backends import cpp

    return cpp.loops()


def backend(hs: torch.Tensor, activation: str | None = None) -> str:
    """The backend for the recursions over hs (K, T, B, H) with that activation (None: any
    the compiled backends run): forced by ``RNNLAB_BACKEND``, else Triton where it covers the
    tensor, else the C++ loops, else the Python loops."""
    forced = os.environ.get("RNNLAB_BACKEND", "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"RNNLAB_BACKEND={forced!r}; expected one of: {', '.join(BACKENDS)}")
    if forced == "python":
        return "python"
    compiled = activation is None or activations.get(activation).compiled
    if forced == "cpp":
        if _compiled() is None:
            raise RuntimeError("RNNLAB_BACKEND=cpp but the C++ loops are unavailable")
        if not compiled:
            raise RuntimeError(f"RNNLAB_BACKEND=cpp but {activation!r} has no ATen operators")
        return "cpp"
    # Triton by default for CUDA tensors only; on CPU tensors (the interpreter) only when forced,
    # so that TRITON_INTERPRET=1 in a test process leaves every other CPU run on the loops.
    if hs.is_cuda or (forced == "triton" and interpreting()):
        module, why = _triton()
        ok, why = module.supported(hs, activation) if module is not None else (False, why)
        if ok:
            return "triton"
        if forced == "triton":
            raise RuntimeError(f"RNNLAB_BACKEND=triton but the Triton kernel does not apply: {why}")
    elif forced == "triton":
        raise RuntimeError(
            "RNNLAB_BACKEND=triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
        )
    return "cpp" if compiled and _compiled() is not None else "python"


def forward(hs: torch.Tensor, w_t: torch.Tensor, activation: str) -> None:
    """The forward recursion over hs (K, T, B, H), in place; w_t = W_hhᵀ (K, H, H).

    A stack multiplies member by member with the very 2-D calls a single network makes, so
    one member runs on 2-D views (no per-step slicing) and gets the same bits."""
    chosen = backend(hs, activation)
    if chosen == "triton":
        return _triton()[0].forward_loop(hs, w_t, activation)
    if hs.shape[0] == 1:
        hs, w_t = hs[0], w_t[0]
    act = activations.get(activation)
    if chosen == "cpp":
        ops = act.ops or activations.Aten("", None)  # no operator: the identity
        _compiled().forward_loop(hs, w_t, ops.op, _floats(ops.args))
    else:
        loops.forward_loop(hs, w_t, act)


def backward(dz, hs, w, norms: torch.Tensor | None, activation: str) -> None:
    """The BPTT recursion over dz (K, T, B, H), in place; norms (T, K, B) float64, or None."""
    chosen = backend(hs, activation)
    if chosen == "triton":
        return _triton()[0].backward_loop(dz, hs, w, norms, activation)
    if hs.shape[0] == 1:  # 2-D views, as in forward
        dz, hs, w = dz[0], hs[0], w[0]
        norms = norms[:, 0] if norms is not None else None
    act = activations.get(activation)
    if chosen == "cpp":
        ops = act.ops or activations.Aten("", None)
        op = ops.backward or ""  # none: φ′ ≡ 1
        _compiled().backward_loop(dz, hs, w, norms, op, _floats(ops.backward_args))
    else:
        loops.backward_loop(dz, hs, w, norms, act)


def _floats(args: tuple) -> list[float]:
    """An operator's extra arguments for the C++ loops, which type them by its schema."""
    return [float(a) for a in args]


def tangent_covers(u: torch.Tensor, activation: str) -> bool:
    """Whether ``tangent_loop`` runs the k = 1 Lyapunov recursion along u (K, T, B, H) on
    Triton: CUDA tensors the kernel covers, or CPU tensors under the interpreter with
    ``RNNLAB_BACKEND=triton`` (as ``backend``); otherwise the caller's torch operations run."""
    return _covers(u, activation, "tangent_supported")


def _covers(t: torch.Tensor, activation: str, supported: str) -> bool:
    """Whether a measurement kernel of the Triton module (its coverage test named
    ``supported``) runs on t: CUDA tensors it covers, or CPU tensors under the interpreter
    with ``RNNLAB_BACKEND=triton``; never with another backend forced."""
    forced = os.environ.get("RNNLAB_BACKEND", "").strip().lower()
    if forced in ("cpp", "python") or not (t.is_cuda or (forced == "triton" and interpreting())):
        return False
    module, _ = _triton()
    return module is not None and getattr(module, supported)(t, activation)[0]


def tangent_loop(u, w_t, v0, activation: str, transient: int, qr_every: int) -> torch.Tensor:
    """Σ ln ‖v‖ after the transient per (member, trajectory) (K, B): Triton's
    ``tangent_loop`` (where ``tangent_covers``)."""
    return _triton()[0].tangent_loop(u, w_t, v0, activation, transient, qr_every)


def jacobian_covers(hs: torch.Tensor, activation: str) -> bool:
    """Whether ``jacobian_loop`` runs the Jacobian products along the trajectories hs (K, T,
    B, H) on Triton: CUDA tensors the kernel covers (float64, H ≤ 64), or CPU tensors under the
    interpreter with ``RNNLAB_BACKEND=triton`` (as ``tangent_covers``)."""
    return _covers(hs, activation, "jacobian_supported")


def jacobian_loop(hs, w, ks: list[int], activation: str, rescale_every: int):
    """The rows of J(k) at the distances ks and their log-scales: Triton's ``jacobian_loop``
    (where ``jacobian_covers``)."""
    return _triton()[0].jacobian_loop(hs, w, ks, activation, rescale_every)
