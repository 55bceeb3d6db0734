"""The BPTT recursions as plain Python loops: the reference the C++ loops (``csrc/elman.cpp``,
the same ATen calls without the interpreter between them) and the Triton kernels are tested
against, and the backend of an activation given only as Python callables.

Shapes: a single network's 2-D views, or a stack's with a leading member dimension K.
"""

from __future__ import annotations

import torch

from rnnlab.model.activations import Activation


def member_addmm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out += a @ b per member, in place: one plain 2-D multiply each (see ``elman.member_mm``)."""
    for o, x, y in zip(out, a, b, strict=True):
        o.addmm_(x, y)
    return out


def forward_loop(hs: torch.Tensor, w_t: torch.Tensor, act: Activation) -> None:
    """hs ([K,] T, B, H) holds W_xh x_t + b on entry and h_t on exit; w_t = W_hhᵀ."""
    steps = hs.unbind(hs.dim() - 3)  # views; no indexing inside the loop
    mm = member_addmm_ if w_t.dim() == 3 else torch.Tensor.addmm_
    act.fn_(steps[0])  # h_0 = 0
    for t in range(1, len(steps)):
        act.fn_(mm(steps[t], steps[t - 1], w_t))


def backward_loop(dz, hs, w, norms: torch.Tensor | None, act: Activation) -> None:
    """dz ([K,] T, B, H) holds ∂ℓ/∂h_t on entry and ∂L/∂z_t on exit; norms (T, [K,] B),
    float64, gets ‖δ_t‖₂, its squares summed in float64."""
    time = hs.dim() - 3
    h_steps, z_steps = hs.unbind(time), dz.unbind(time)
    mm = member_addmm_ if w.dim() == 3 else torch.Tensor.addmm_
    backward = act.backward
    for t in range(len(z_steps) - 1, -1, -1):  # slot t holds δ_t here
        if norms is not None:
            torch.linalg.vector_norm(z_steps[t], dim=-1, dtype=torch.float64, out=norms[t])
        if backward is not None:
            backward(z_steps[t], h_steps[t], z_steps[t])
        if t:  # δ_{t−1} = ∂ℓ/∂h_{t−1} + (∂L/∂z_t) W_hh
            mm(z_steps[t - 1], z_steps[t], w)
