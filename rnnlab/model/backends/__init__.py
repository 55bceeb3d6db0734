"""Which implementation runs the two BPTT loops of ``rnnlab.model.elman._ElmanBPTT``.

Three backends compute the same recursions (``_run_forward`` / ``_run_backward``):

- ``triton``: one persistent fused kernel per direction (``rnnlab/model/backends/triton_elman.py``);
  chosen for CUDA tensors when Triton is importable and the shape is covered;
- ``cpp``: the compiled ATen loops (``rnnlab/model/backends/csrc/elman.cpp``, ``rnnlab.model.backends.cpp``);
- ``python``: the same loops in Python (``rnnlab.model.elman._forward_loop`` / ``_backward_loop``).

``RNNLAB_BACKEND=triton|cpp|python`` forces one (read at every call, so tests can set it);
with ``TRITON_INTERPRET=1`` set before triton is imported, a forced ``triton`` runs the kernels
on CPU tensors under Triton's interpreter (slow: for tests on small shapes only).
"""

from __future__ import annotations

import functools
import os

import torch

from rnnlab.model.backends import cpp as _ext

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


def backend(hs: torch.Tensor) -> str:
    """The backend for the recursions over hs (K, T, B, H): forced by ``RNNLAB_BACKEND``, else
    Triton where it covers the tensor, else the C++ loops, else the Python loops."""
    forced = os.environ.get("RNNLAB_BACKEND", "").strip().lower()
    if forced and forced not in BACKENDS:
        raise ValueError(f"RNNLAB_BACKEND={forced!r}; expected one of: {', '.join(BACKENDS)}")
    if forced == "python":
        return "python"
    if forced == "cpp":
        if _ext.loops() is None:
            raise RuntimeError("RNNLAB_BACKEND=cpp but the C++ loops are unavailable")
        return "cpp"
    # Triton by default for CUDA tensors only; on CPU tensors (the interpreter) only when forced,
    # so that TRITON_INTERPRET=1 in a test process leaves every other CPU run on the loops.
    if hs.is_cuda or (forced == "triton" and interpreting()):
        module, why = _triton()
        ok, why = module.supported(hs) if module is not None else (False, why)
        if ok:
            return "triton"
        if forced == "triton":
            raise RuntimeError(f"RNNLAB_BACKEND=triton but the Triton kernel does not apply: {why}")
    elif forced == "triton":
        raise RuntimeError(
            "RNNLAB_BACKEND=triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
        )
    return "cpp" if _ext.loops() is not None else "python"
