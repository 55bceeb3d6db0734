"""Which implementation runs the two BPTT loops of ``rnnlab.rnn._ElmanBPTT``.

Three backends compute the same recursions (``_run_forward`` / ``_run_backward``):

- ``triton``: one persistent fused kernel per direction (``rnnlab/kernels/triton_elman.py``);
  chosen for CUDA tensors when Triton is importable and the shape is covered;
- ``cpp``: the compiled ATen loops (``rnnlab/csrc/elman.cpp``, ``rnnlab._ext``);
- ``python``: the same loops in Python (``rnnlab.rnn._forward_loop`` / ``_backward_loop``).

``RNNLAB_BACKEND=triton|cpp|python`` forces one (read at every call, so tests can set it);
``TRITON_INTERPRET=1`` lets the Triton kernels run on CPU tensors under Triton's interpreter
(slow: for tests on small shapes only).
"""

from __future__ import annotations

import os

import torch

from rnnlab import _ext

BACKENDS = ("triton", "cpp", "python")


def interpreting() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): the kernels run on the CPU."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


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
    # The Triton module is imported only for tensors it may take (CPU runs never import triton).
    if hs.is_cuda or interpreting():
        from rnnlab.kernels import triton_elman

        ok, why = triton_elman.supported(hs)
        if ok:
            return "triton"
        if forced == "triton":
            raise RuntimeError(f"RNNLAB_BACKEND=triton but the Triton kernel does not apply: {why}")
    elif forced == "triton":
        raise RuntimeError(
            "RNNLAB_BACKEND=triton needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
        )
    return "cpp" if _ext.loops() is not None else "python"
