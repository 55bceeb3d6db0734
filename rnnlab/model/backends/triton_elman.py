"""Persistent fused Elman kernels (Triton): all T steps of the recursion in one launch.

The recursions are those of ``rnnlab.model.elman._ElmanBPTT`` (one backend of the same autograd
function; the input projection and the weight gradients stay single large multiplies there):

    forward   h_t = φ(z_t),  z_t = [W_xh x_t + b] + h_{t−1} W_hhᵀ,  h_{−1} = 0
    backward  δ_t = ∂ℓ/∂h_t + (∂L/∂z_{t+1}) W_hh,  ∂L/∂z_t = δ_t ⊙ φ′(z_t),  n_t = ‖δ_t‖₂

Shapes (a stack of K members; a single network is K = 1):
    hs     (K, T, B, H)  forward: holds W_xh x_t + b on entry, h_t on exit (in place)
    w_t    (K, H, H)     W_hhᵀ (any strides)
    dz     (K, T, B, H)  backward: holds ∂ℓ/∂h_t on entry, ∂L/∂z_t on exit (in place)
    w      (K, H, H)     W_hh
    norms  (T, K, B)     ‖δ_t‖₂ in float64, or None

Design. The grid is (K, ⌈B / BLOCK_B⌉): one program per (member, block of BLOCK_B sequences)
runs every step, with that member's W_hh loaded once (kept on chip: registers or shared memory,
as Triton lays it out) and h_{t−1} (forward) or ∂L/∂z_{t+1} (backward) carried in registers from
step to step; each step reads one (BLOCK_B, H) tile of hs (and of dz) from global memory,
prefetched a step ahead, and writes one back. The norm of δ_t is reduced inside the program, so
the backward pass writes the whole profile ‖∂L/∂h_t‖ without extra launches. φ′ is taken
through the output h, as PyTorch's derivative kernels do. The per-step product h W takes one
of two forms (``_meta``): ``tl.dot`` on tiles of 16 sequences (IEEE fp32, never TF32; from
B = 64 on, H ≤ 64), or a broadcast-and-sum over the hidden index on tiles of 4 (fewer sequences: more
programs share the T serial steps' work). All fp32 arithmetic is IEEE; the order of each sum
differs from cuBLAS's, so results equal the C++ loops to rounding (≲1e-6 relative), not bits.

Bitwise reproducibility: every program runs the same code on its own (member, sequence block),
with a tiling chosen from (B, H, dtype) only, and no value crosses programs, so a member's
numbers are the same bits whether it runs alone or in a stack of any size K (tested under the
interpreter: ``tests/test_triton_kernel.py``).

The same forward recursion carrying one tangent vector per sequence (``_elman_tangent``,
``tangent_loop``) is the k = 1 Lyapunov estimate of ``rnnlab.measure.theory`` (float64, W_hh
on chip, H ≤ ``MAX_H``): one launch per stack at a probe instead of ~6 small kernels a step.
The backward recursion carrying each row of the Jacobian product back along a trajectory
(``_elman_jacobian``, ``jacobian_loop``; the same tile) is the Jacobian spectrum's products
(``rnnlab.measure.dynamics.jacobian_spectra_on_device``): one launch per stack at the first
and last probe instead of the host's L multiplies per network.

Larger H (``MAX_H``: 128 in float32, 64 in float64) does not fit one program's registers. There
the *_wide kernels run the same grid, each program walking each step's product in chunks of
64 × 64 (``CHUNK``): W_hh is read from memory every step (L2-resident: 256 KB at H = 256 in
fp32) and h_{t−1} (∂L/∂z_{t+1}) from the tensor the previous step wrote, behind a barrier,
so no value crosses programs and stacks keep their bits. (cuDNN's persistent kernels instead split the
hidden dimension across programs that exchange h_t every step: a grid-wide barrier every
step, which the interpreter cannot run, so it could not be tested here.)

Coverage (``supported``): CUDA tensors (or any tensor under ``TRITON_INTERPRET=1``), float32
and float64 with H ≤ ``MAX_H`` on chip, and up to ``MAX_WIDE_H`` in chunks
(``WIDE_BY_DEFAULT``). float64 takes broadcast-and-sum products only
(Triton 3.6 has no fp64 ``tl.dot``); if a form fails to compile for the card, checked once per
device, float64 takes the existing loops. Above, the C++ loops' large multiplies run. tanh
uses libdevice's ``tanh`` on the GPU (as ``torch.tanh`` on CUDA) and
(1 − e^{−2|z|}) / (1 + e^{−2|z|}) under the interpreter, which has no libdevice.

The kernels are wrapped on first use (``_kernels``) rather than by a decorator at import: with
TRITON_INTERPRET=1 set before triton itself is imported they run under the interpreter (the CPU
tests), else compiled. Every default tiling was compiled offline for sm_90a with Triton 3.6 and
3.9 (all activations, fp32 and fp64): no register spills, except 8 bytes in the chunked
backward in fp32 with 4 sequences a program (the chunked form: 64–78 registers in fp32,
96–128 in fp64, Triton 3.9).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import warnings

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from rnnlab.model import activations
from rnnlab.model.backends import interpreting

ACT_CODES = {"tanh": 0, "relu": 1, "sigmoid": 2, "linear": 3, "leaky_relu": 4, "hardtanh": 5}
"""The activations these kernels implement (``ACT``), with the entry's arguments as ``P0``,
``P1`` (leaky_relu's slope, hardtanh's bounds: ``rnnlab.model.activations``); any other
activation runs on the loops (``supported``)."""
MAX_H = {torch.float32: 128, torch.float64: 64}
"""Up to this H, W_hh is held in one program's registers; above it the *_wide kernels read it
in chunks from memory each step (L2-resident: 256 KB at H = 256, fp32)…"""
MAX_WIDE_H = 512
"""…up to this H. Above, each step's multiply is large enough for cuBLAS (the loops: c/a
0.99–1.04 at (1000, 1024, 1024) on an H200) and re-reading W_hh every step would cost more."""
WIDE_BY_DEFAULT = True
"""Whether backend selection takes the chunked kernels for MAX_H < H ≤ MAX_WIDE_H unasked
(``RNNLAB_TRITON_TILE=wide=0`` leaves those shapes to the C++ loops). On an H200 they passed
``tests/test_triton_cuda.py`` and ran the recursion at (1000, 64, 256) in 42 ms against the
loops' 73 ms (``make bench --device cuda``, the chunk of 64 with 8 warps; 91 ms in chunks of 32
with 4 warps, the first default). Not yet run there: H = 512, and float64 with 4 sequences a
program (B ≥ 64; it compiles for sm_90a without spills, and B = 5 passed)."""
WIDE_KEYS = {"wide": "WIDE", "chunk": "CHUNK"}
"""``RNNLAB_TRITON_TILE`` keys of the chunked form: ``wide=1,chunk=16`` takes it at any H
(how the interpreter tests reach it with small shapes)."""


@triton.jit
def _phi(z, ACT: tl.constexpr, P0: tl.constexpr, P1: tl.constexpr, LIBDEVICE_TANH: tl.constexpr):
    """h = φ(z) for the activation coded ``ACT`` (``ACT_CODES``)."""
    if ACT == 0:
        if LIBDEVICE_TANH:
            h = libdevice.tanh(z)
        else:
            e = tl.exp(-2.0 * tl.abs(z))
            a = (1.0 - e) / (1.0 + e)
            h = tl.where(z < 0, -a, a)
    elif ACT == 1:
        h = tl.maximum(z, 0.0)
    elif ACT == 2:
        h = 1.0 / (1.0 + tl.exp(-z))
    elif ACT == 3:
        h = z
    elif ACT == 4:
        h = tl.where(z > 0, z, z * P0)  # P0: the slope
    else:
        h = tl.minimum(tl.maximum(z, P0), P1)  # hardtanh between P0 and P1
    return h


@triton.jit
def _phi_grad(d, h, ACT: tl.constexpr, P0: tl.constexpr, P1: tl.constexpr):
    """d ⊙ φ′(z), φ′ taken through h = φ(z) (as PyTorch's derivative kernels do)."""
    if ACT == 0:
        g = d * (1.0 - h * h)
    elif ACT == 1:
        g = tl.where(h > 0, d, 0.0)
    elif ACT == 2:
        g = d * (1.0 - h) * h
    elif ACT == 3:
        g = d
    elif ACT == 4:
        g = tl.where(h > 0, d, d * P0)
    else:
        g = tl.where((h > P0) & (h < P1), d, 0.0)
    return g


def _elman_forward(
    hs_ptr,
    wt_ptr,
    T,
    B,
    H,
    s_hk,
    s_ht,
    s_hb,
    s_wk,
    s_wi,
    s_wj,
    ACT: tl.constexpr,
    P0: tl.constexpr,
    P1: tl.constexpr,
    LIBDEVICE_TANH: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT: tl.constexpr,
):
    k = tl.program_id(0)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    mask = (rb[:, None] < B) & (rh[None, :] < H)  # (BLOCK_B, BLOCK_H)
    zero = rb[:, None] * 0  # a step index as a tensor, so that it can join a mask
    w_ptrs = wt_ptr + k.to(tl.int64) * s_wk + rh[:, None] * s_wi + rh[None, :] * s_wj
    w = tl.load(w_ptrs, mask=(rh[:, None] < H) & (rh[None, :] < H), other=0.0)  # W_hhᵀ, on chip
    p = hs_ptr + k.to(tl.int64) * s_hk + rb[:, None] * s_hb + rh[None, :]  # step t's tile
    z = tl.load(p, mask=mask, other=0.0)
    h = tl.zeros([BLOCK_B, BLOCK_H], dtype=z.dtype)
    for t in range(T):
        z_next = tl.load(p + s_ht, mask=mask & (zero + t + 1 < T), other=0.0)  # prefetch step t + 1
        if DOT:  # z_t + h_{t−1} W_hhᵀ (h_{−1} = 0)
            z = tl.dot(h, w, acc=z, input_precision="ieee")
        else:  # the same product as a broadcast and a reduction over the hidden index
            z = z + tl.sum(h[:, :, None] * w[None, :, :], axis=1)
        # h = φ(z): padded columns may hold φ(0) ≠ 0, but W's padded rows are 0
        h = _phi(z, ACT, P0, P1, LIBDEVICE_TANH)
        tl.store(p, h, mask=mask)
        z = z_next
        p += s_ht


def _elman_backward(
    dz_ptr,
    hs_ptr,
    w_ptr,
    n_ptr,
    last_d,
    last_h,
    last_n,
    T,
    B,
    H,
    s_dk,
    s_dt,
    s_db,
    s_hk,
    s_ht,
    s_hb,
    s_wk,
    s_wi,
    s_wj,
    s_nt,
    s_nk,
    ACT: tl.constexpr,
    P0: tl.constexpr,
    P1: tl.constexpr,
    NORMS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT: tl.constexpr,
):
    k = tl.program_id(0)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    mask = (rb[:, None] < B) & (rh[None, :] < H)
    zero = rb[:, None] * 0
    w_ptrs = w_ptr + k.to(tl.int64) * s_wk + rh[:, None] * s_wi + rh[None, :] * s_wj
    w = tl.load(w_ptrs, mask=(rh[:, None] < H) & (rh[None, :] < H), other=0.0)  # W_hh, on chip
    # step T − 1's tiles; last_* = (T − 1)·stride, from the host (64-bit where it must be)
    pd = dz_ptr + k.to(tl.int64) * s_dk + last_d + rb[:, None] * s_db + rh[None, :]
    ph = hs_ptr + k.to(tl.int64) * s_hk + last_h + rb[:, None] * s_hb + rh[None, :]
    pn = n_ptr + k.to(tl.int64) * s_nk + last_n + rb
    d = tl.load(pd, mask=mask, other=0.0)  # δ_{T−1} = ∂ℓ/∂h_{T−1}
    h = tl.load(ph, mask=mask, other=0.0)
    for i in range(T):
        t = T - 1 - i
        more = mask & (zero + t > 0)
        d_prev = tl.load(pd - s_dt, mask=more, other=0.0)  # prefetch ∂ℓ/∂h_{t−1}, h_{t−1}
        h_prev = tl.load(ph - s_ht, mask=more, other=0.0)
        if NORMS:  # ‖δ_t‖₂ into float64 norms, its squares summed in float64: no underflow
            d64 = d.to(tl.float64)
            tl.store(pn, tl.sqrt(tl.sum(d64 * d64, axis=1)), mask=rb < B)
        g = _phi_grad(d, h, ACT, P0, P1)  # ∂L/∂z_t = δ_t ⊙ φ′(z_t)
        tl.store(pd, g, mask=mask)
        if DOT:  # δ_{t−1} = ∂ℓ/∂h_{t−1} + g W_hh (unused after t = 0)
            d = tl.dot(g, w, acc=d_prev, input_precision="ieee")
        else:
            d = d_prev + tl.sum(g[:, :, None] * w[None, :, :], axis=1)
        h = h_prev
        pd -= s_dt
        ph -= s_ht
        pn -= s_nt


def _elman_forward_wide(
    hs_ptr,
    wt_ptr,
    T,
    B,
    H,
    s_hk,
    s_ht,
    s_hb,
    s_wk,
    s_wi,
    s_wj,
    ACT: tl.constexpr,
    P0: tl.constexpr,
    P1: tl.constexpr,
    LIBDEVICE_TANH: tl.constexpr,
    BLOCK_B: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """``_elman_forward`` for an H whose W_hh does not fit on chip: each step walks h_t in
    column chunks, z_t[:, j] = u_t[:, j] + Σ_i h_{t−1}[:, i] W_hhᵀ[i, j] over row chunks i,
    W_hhᵀ read from memory (L2-resident) and h_{t−1} from hs, where the previous step wrote it
    (a barrier between steps makes every thread's h_{t−1} visible to the program)."""
    k = tl.program_id(0)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    rc = tl.arange(0, CHUNK)
    on_b = rb[:, None] < B  # (BLOCK_B, 1)
    p = hs_ptr + k.to(tl.int64) * s_hk + rb[:, None] * s_hb  # step t's rows
    wt = wt_ptr + k.to(tl.int64) * s_wk
    for t in range(T):
        tl.debug_barrier()  # h_{t−1}, stored by every thread of this program, is visible
        for j0 in range(0, H, CHUNK):
            cj = j0 + rc
            mask_j = on_b & (cj[None, :] < H)
            z = tl.load(p + cj[None, :], mask=mask_j, other=0.0)  # u_t = W_xh x_t + b
            if t > 0:
                for i0 in range(0, H, CHUNK):
                    ci = i0 + rc
                    h = tl.load(p - s_ht + ci[None, :], mask=on_b & (ci[None, :] < H), other=0.0)
                    w_mask = (ci[:, None] < H) & (cj[None, :] < H)
                    w = tl.load(
                        wt + ci[:, None] * s_wi + cj[None, :] * s_wj, mask=w_mask, other=0.0
                    )
                    z = z + tl.sum(h[:, :, None] * w[None, :, :], axis=1)
            tl.store(p + cj[None, :], _phi(z, ACT, P0, P1, LIBDEVICE_TANH), mask=mask_j)
        p += s_ht


def _elman_backward_wide(
    dz_ptr,
    hs_ptr,
    w_ptr,
    n_ptr,
    last_d,
    last_h,
    last_n,
    T,
    B,
    H,
    s_dk,
    s_dt,
    s_db,
    s_hk,
    s_ht,
    s_hb,
    s_wk,
    s_wi,
    s_wj,
    s_nt,
    s_nk,
    ACT: tl.constexpr,
    P0: tl.constexpr,
    P1: tl.constexpr,
    NORMS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    CHUNK: tl.constexpr,
):
    """``_elman_backward`` in column chunks (see ``_elman_forward_wide``): δ_t[:, j] =
    ∂ℓ/∂h_t[:, j] + Σ_i ∂L/∂z_{t+1}[:, i] W_hh[i, j], ∂L/∂z_{t+1} read from dz where the
    previous step wrote it; ‖δ_t‖² summed in float64 over the chunks."""
    k = tl.program_id(0)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    rc = tl.arange(0, CHUNK)
    on_b = rb[:, None] < B
    pd = dz_ptr + k.to(tl.int64) * s_dk + last_d + rb[:, None] * s_db  # step T − 1's rows
    ph = hs_ptr + k.to(tl.int64) * s_hk + last_h + rb[:, None] * s_hb
    pn = n_ptr + k.to(tl.int64) * s_nk + last_n + rb
    w_base = w_ptr + k.to(tl.int64) * s_wk
    for i in range(T):
        tl.debug_barrier()  # ∂L/∂z_{t+1}, stored by every thread of this program, is visible
        square = tl.zeros([BLOCK_B], dtype=tl.float64)
        for j0 in range(0, H, CHUNK):
            cj = j0 + rc
            mask_j = on_b & (cj[None, :] < H)
            d = tl.load(pd + cj[None, :], mask=mask_j, other=0.0)  # ∂ℓ/∂h_t
            if i > 0:  # t < T − 1
                for i0 in range(0, H, CHUNK):
                    ci = i0 + rc
                    g = tl.load(pd + s_dt + ci[None, :], mask=on_b & (ci[None, :] < H), other=0.0)
                    w_mask = (ci[:, None] < H) & (cj[None, :] < H)
                    w = tl.load(
                        w_base + ci[:, None] * s_wi + cj[None, :] * s_wj, mask=w_mask, other=0.0
                    )
                    d = d + tl.sum(g[:, :, None] * w[None, :, :], axis=1)
            if NORMS:
                d64 = d.to(tl.float64)
                square += tl.sum(d64 * d64, axis=1)
            h = tl.load(ph + cj[None, :], mask=mask_j, other=0.0)
            tl.store(pd + cj[None, :], _phi_grad(d, h, ACT, P0, P1), mask=mask_j)
        if NORMS:
            tl.store(pn, tl.sqrt(square), mask=rb < B)
        pd -= s_dt
        ph -= s_ht
        pn -= s_nt


def _elman_tangent(
    u_ptr,
    wt_ptr,
    v_ptr,
    out_ptr,
    T,
    B,
    H,
    transient,
    qr_every,
    s_uk,
    s_ut,
    s_ub,
    s_wk,
    s_wi,
    s_wj,
    s_vb,
    s_ok,
    ACT: tl.constexpr,
    P0: tl.constexpr,
    P1: tl.constexpr,
    LIBDEVICE_TANH: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """The forward recursion h_t = φ(u_t + h_{t−1} W_hhᵀ) carrying one tangent vector per
    trajectory, v_t = φ′(z_t) ⊙ (v_{t−1} W_hhᵀ) (rows), renormalised every ``qr_every`` steps
    counted from ``transient`` and at the last step; out[k, b] = Σ ln ‖v‖ over the
    renormalisations at steps t ≥ transient (``tangent_loop``). The same tiles and products as
    ``_elman_forward``'s broadcast-and-sum form, W_hhᵀ on chip."""
    k = tl.program_id(0)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    rh = tl.arange(0, BLOCK_H)
    mask = (rb[:, None] < B) & (rh[None, :] < H)
    zero = rb[:, None] * 0
    w_ptrs = wt_ptr + k.to(tl.int64) * s_wk + rh[:, None] * s_wi + rh[None, :] * s_wj
    w = tl.load(w_ptrs, mask=(rh[:, None] < H) & (rh[None, :] < H), other=0.0)  # W_hhᵀ, on chip
    p = u_ptr + k.to(tl.int64) * s_uk + rb[:, None] * s_ub + rh[None, :]
    z = tl.load(p, mask=mask, other=0.0)
    v = tl.load(v_ptr + rb[:, None] * s_vb + rh[None, :], mask=mask, other=0.0)
    h = tl.zeros([BLOCK_B, BLOCK_H], dtype=z.dtype)
    total = tl.zeros([BLOCK_B], dtype=z.dtype)
    for t in range(T):
        z_next = tl.load(p + s_ut, mask=mask & (zero + t + 1 < T), other=0.0)
        h = _phi(z + tl.sum(h[:, :, None] * w[None, :, :], axis=1), ACT, P0, P1, LIBDEVICE_TANH)
        v = _phi_grad(tl.sum(v[:, :, None] * w[None, :, :], axis=1), h, ACT, P0, P1)
        # padded columns: W's padded rows cancel h's φ(0) there, its padded columns keep v's 0
        r = tl.sqrt(tl.sum(v * v, axis=1))  # (BLOCK_B,)
        renorm = ((t + 1 - transient) % qr_every == 0) | (t == T - 1)
        r_or_1 = tl.where(r > 0, r, 1.0)  # a zero vector (dead ReLUs) stays zero
        v = tl.where(renorm, v / r_or_1[:, None], v)
        total += tl.where(renorm & (t >= transient), tl.log(r), 0.0)
        z = z_next
        p += s_ut
    tl.store(out_ptr + k.to(tl.int64) * s_ok + rb, total, mask=rb < B)


def _elman_jacobian(
    h_ptr,
    w_ptr,
    ks_ptr,
    rows_ptr,
    logs_ptr,
    last_h,
    T,
    B,
    H,
    n_ks,
    rescale_every,
    s_hk,
    s_ht,
    s_hb,
    s_wk,
    s_wi,
    s_wj,
    s_rk,
    s_rb,
    s_rn,
    s_rr,
    s_lk,
    s_lb,
    s_ln,
    ACT: tl.constexpr,
    P0: tl.constexpr,
    P1: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Rows of J(k) = ∂h_T/∂h_{T−k} = J(k−1) D_{T−k+1} W_hh along trajectory b of member k:
    each row a covector carried back from the last step, v ← (v ⊙ φ′(z_t)) W_hh (the δ
    recursion's form, φ′ through h_t), rescaled by its largest entry every ``rescale_every``
    steps and at each distance asked for, the log of the scale summed aside. At the distances
    ks (ascending) it writes the rows (rows[k, b, i, r, :]) and their log-scales (logs[k, b, i,
    r]) (``jacobian_loop``). W_hh on chip, as ``_elman_tangent``."""
    k = tl.program_id(0)
    b = tl.program_id(1)
    rr = tl.program_id(2) * BLOCK_R + tl.arange(0, BLOCK_R)
    rh = tl.arange(0, BLOCK_H)
    w_ptrs = w_ptr + k.to(tl.int64) * s_wk + rh[:, None] * s_wi + rh[None, :] * s_wj
    w = tl.load(w_ptrs, mask=(rh[:, None] < H) & (rh[None, :] < H), other=0.0)  # W_hh, on chip
    v = tl.where(rr[:, None] == rh[None, :], 1.0, 0.0).to(w.dtype)  # rows of J(0) = I
    log_scale = tl.zeros([BLOCK_R], dtype=w.dtype)
    slot = tl.full([], 0, tl.int32)
    p = h_ptr + k.to(tl.int64) * s_hk + b.to(tl.int64) * s_hb + last_h + rh  # h_{T−1}
    out = rows_ptr + k.to(tl.int64) * s_rk + b.to(tl.int64) * s_rb
    out_log = logs_ptr + k.to(tl.int64) * s_lk + b.to(tl.int64) * s_lb
    row_mask = (rr[:, None] < H) & (rh[None, :] < H)
    wanted = tl.load(ks_ptr)
    for step in range(1, T + 1):  # h_{T−step+1} = the h at index T − step
        h = tl.load(p, mask=rh < H, other=0.0)
        d = _phi_grad(v, h[None, :], ACT, P0, P1)  # v ⊙ φ′(z): padded columns stay 0
        v = tl.sum(d[:, :, None] * w[None, :, :], axis=1)
        hit = step == wanted
        if (step % rescale_every == 0) | hit:
            top = tl.max(tl.abs(v), axis=1)
            scale = tl.where(top > 0, top, 1.0)  # a zero row (dead units) stays zero
            v = v / scale[:, None]
            log_scale += tl.log(scale)
        if hit:
            tl.store(out + slot * s_rn + rr[:, None] * s_rr + rh[None, :], v, mask=row_mask)
            tl.store(out_log + slot * s_ln + rr, log_scale, mask=rr < H)
            slot += 1
            wanted = tl.load(ks_ptr + slot, mask=slot < n_ks, other=0)
        p -= s_ht


@functools.cache
def _kernels(interpret: bool):
    """(forward, backward) as Triton kernels, interpreted or compiled, wrapped once per mode.
    The interpreter also needs TRITON_INTERPRET=1 before triton is imported (triton wraps its
    own library functions then), which is why it is a process-wide switch in the tests."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction as wrap
    else:
        wrap = triton.jit
    kernels = (_elman_forward, _elman_backward, _elman_forward_wide, _elman_backward_wide)
    kernels += (_elman_tangent, _elman_jacobian)
    return tuple(wrap(k) for k in kernels)


def _meta(B: int, H: int, dtype: torch.dtype, num_warps: int | None = None) -> dict:
    """Tile sizes, the product's form and warps, from (B, H, dtype) only (never K).

    ``RNNLAB_TRITON_TILE`` (read at each call; for tuning, ``rnnlab.bench`` times several)
    overrides them, e.g. ``dot=0,block_b=4,warps=8``; what it leaves out keeps the defaults
    of the form chosen. float64 always takes the broadcast-and-sum form: Triton 3.6's front
    end rejects an fp64 ``tl.dot``. Register use per tiling: ``rnnlab.model.backends.compile_check``.
    """
    block_h = max(16, triton.next_power_of_2(H))
    override = tile_override()
    wide = bool(override.pop("WIDE", MAX_H[dtype] < H))  # W_hh in chunks: the *_wide kernels
    if not wide and MAX_H[dtype] < H:  # ``supported`` refuses it: W_hh would not fit on chip
        raise ValueError(f"H = {H} > {MAX_H[dtype]} in {dtype} runs only in chunks (wide=0 asked)")
    # tl.dot needs tiles of 16 sequences; in IEEE fp32 it runs on FMA units, each thread
    # holding a K-long strip of W_hh, kept in registers by BLOCK_H / 4 warps (sm_90a: 4 warps at
    # H = 64 spill, 16 do not; at H = 128 even 32 spill with tanh). With few sequences, one or
    # two such tiles would leave one or two programs to walk all T steps: tiles of 4 with
    # broadcast-and-sum products spread them over more programs, W_hh held in registers
    # (72–96 registers at H = 64 with 4 warps, 126–128 at H = 128 with 8; no spills).
    # Measured on an H200 (recursion alone, tanh, fp32, ms per forward + backward against
    # cuDNN): the broadcast-and-sum form with few sequences per program wins everywhere,
    # more programs hiding each step's latency: (100, 64, 64) 4 per program 1.03× cuDNN
    # (tl.dot 1.05–1.22×); (1000, 32, 128) 1 per program 0.81× (4: 1.55×); (5000, 16, 64)
    # 1 per program 0.74–0.76× (4: 1.37×). So tl.dot only when asked for.
    dot = not wide and bool(override.get("DOT", False)) and dtype != torch.float64
    few = 4 if B >= 64 else 2 if B > 32 else 1  # sequences per program, tiles of the sum form
    if wide:  # (few, 64, 64) products over 8 warps: 64-78 registers fp32, 96-128 fp64
        meta = {"BLOCK_B": few, "CHUNK": 64, "num_warps": 8}
    elif dot or (dtype == torch.float64 and B >= 64):  # tiles of 16
        meta = {"BLOCK_B": 16, "num_warps": max(4, block_h // 4)}
    else:
        meta = {"BLOCK_B": few, "num_warps": 4 if block_h <= 64 else 8}
    meta |= {k: v for k, v in override.items() if k != "DOT" and (wide or k != "CHUNK")}
    if num_warps:
        meta["num_warps"] = num_warps
    if dot:
        meta["BLOCK_B"] = max(16, meta["BLOCK_B"])
    form = {"WIDE": True} if wide else {"WIDE": False, "DOT": dot, "BLOCK_H": block_h}
    return {**meta, **form, "num_stages": 1}


TILE_KEYS = {"dot": "DOT", "block_b": "BLOCK_B", "warps": "num_warps"} | WIDE_KEYS
"""``RNNLAB_TRITON_TILE`` keys → the kernels' names. dot and wide are 0 or 1; the others
powers of two (warps up to 32)."""


def tile_override() -> dict[str, int]:
    """``RNNLAB_TRITON_TILE``, read now: e.g. ``dot=0,block_b=4,warps=8`` → the kernels' names.
    A malformed value is a ValueError naming the variable and the item."""
    raw = os.environ.get("RNNLAB_TRITON_TILE", "")
    override = {}
    for item in filter(None, (i.strip() for i in raw.split(","))):
        key, _, value = (part.strip() for part in item.partition("="))
        n = int(value) if re.fullmatch(r"[0-9]{1,4}", value) else -1
        flag = key in ("dot", "wide")
        ok = n in (0, 1) if flag else n >= 1 and n & (n - 1) == 0 and (key != "warps" or n <= 32)
        if key not in TILE_KEYS or not ok:
            raise ValueError(
                f"RNNLAB_TRITON_TILE={raw[:80]!r}: {item[:40]!r} is not KEY=VALUE with KEY one "
                f"of {', '.join(TILE_KEYS)} (dot, wide: 0 or 1; the others a power of two, "
                "warps at most 32)"
            )
        override[TILE_KEYS[key]] = n
    return override


def forward_loop(hs: torch.Tensor, w_t: torch.Tensor, activation: str, num_warps=None) -> None:
    """The forward recursion over hs (K, T, B, H) in place; w_t = W_hhᵀ (K, H, H)."""
    K, T, B, H = hs.shape
    meta = _meta(B, H, hs.dtype, num_warps)
    fwd = _kernels(interpreting())[2 if meta.pop("WIDE") else 0]
    grid = (K, triton.cdiv(B, meta["BLOCK_B"]))
    if hs.numel() == 0:
        return
    with _on(hs):
        fwd[grid](
            hs,
            w_t,
            T,
            B,
            H,
            hs.stride(0),
            hs.stride(1),
            hs.stride(2),
            *w_t.stride(),
            **_act(activation),
            LIBDEVICE_TANH=not interpreting(),
            **meta,
        )


def _act(activation: str) -> dict:
    """The kernels' activation code and its arguments (ACT, P0, P1)."""
    ops = activations.get(activation).ops
    p0, p1 = (*(ops.args if ops else ()), 0.0, 0.0)[:2]
    return {"ACT": ACT_CODES[activation], "P0": float(p0), "P1": float(p1)}


def _on(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it the tensor's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def backward_loop(
    dz: torch.Tensor,
    hs: torch.Tensor,
    w: torch.Tensor,
    norms: torch.Tensor | None,
    activation: str,
    num_warps=None,
) -> None:
    """The BPTT recursion over dz (K, T, B, H) in place; norms (T, K, B) gets ‖δ_t‖₂."""
    K, T, B, H = hs.shape
    meta = _meta(B, H, hs.dtype, num_warps)
    bwd = _kernels(interpreting())[3 if meta.pop("WIDE") else 1]
    grid = (K, triton.cdiv(B, meta["BLOCK_B"]))
    n = norms if norms is not None else dz  # a dummy pointer when NORMS is off
    s_nt, s_nk = (norms.stride(0), norms.stride(1)) if norms is not None else (0, 0)
    if hs.numel() == 0:
        return
    with _on(hs):
        bwd[grid](
            dz,
            hs,
            w,
            n,
            (T - 1) * dz.stride(1),
            (T - 1) * hs.stride(1),
            (T - 1) * s_nt,
            T,
            B,
            H,
            dz.stride(0),
            dz.stride(1),
            dz.stride(2),
            hs.stride(0),
            hs.stride(1),
            hs.stride(2),
            *w.stride(),
            s_nt,
            s_nk,
            **_act(activation),
            NORMS=norms is not None,
            **meta,
        )


def tangent_loop(
    u: torch.Tensor,
    w_t: torch.Tensor,
    v0: torch.Tensor,
    activation: str,
    transient: int,
    qr_every: int,
) -> torch.Tensor:
    """Σ ln ‖v‖ over the renormalisations at steps ≥ ``transient`` (K, B), for the recursion
    driven by u (K, T, B, H) with W_hhᵀ = w_t (K, H, H) from the unit tangent vectors v0
    (B, H) (the same for every member): the k = 1 Lyapunov estimate of
    ``rnnlab.measure.theory.lyapunov_spectrum`` in one launch for the whole stack."""
    K, T, B, H = u.shape
    meta = _tangent_meta(H)
    out = u.new_zeros(K, B)
    if u.numel() == 0:
        return out
    v0 = v0.contiguous()
    with _on(u):
        _kernels(interpreting())[4][(K, triton.cdiv(B, meta["BLOCK_B"]))](
            u,
            w_t,
            v0,
            out,
            T,
            B,
            H,
            transient,
            qr_every,
            u.stride(0),
            u.stride(1),
            u.stride(2),
            *w_t.stride(),
            v0.stride(0),
            out.stride(0),
            **_act(activation),
            LIBDEVICE_TANH=not interpreting(),
            **meta,
        )
    return out


def jacobian_loop(
    hs: torch.Tensor, w: torch.Tensor, ks: list[int], activation: str, rescale_every: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of J(k) = ∂h_T/∂h_{T−k} at the distances ``ks`` (ascending, 1 ≤ k ≤ T) along
    the trajectories hs (K, T, B, H) = h_t (float64) of the networks W_hh = w (K, H, H): rows
    (K, B, len(ks), H, H) and, per row, the log of the scale it was divided by, logs (K, B,
    len(ks), H): J(k) = diag(exp(logs)) rows. One launch for the whole stack, a program per
    (member, trajectory, row); ``rnnlab.measure.dynamics.jacobian_spectrum``'s products."""
    K, T, B, H = hs.shape
    n = len(ks)
    rows = hs.new_zeros(K, B, n, H, H)
    logs = hs.new_zeros(K, B, n, H)
    if hs.numel() == 0 or n == 0:
        return rows, logs
    if list(ks) != sorted(set(ks)) or ks[0] < 1 or ks[-1] > T:
        raise ValueError(f"distances must ascend within 1..{T}, got {ks}")
    wanted = torch.tensor(ks, dtype=torch.int32, device=hs.device)
    meta = _tangent_meta(H)  # one row a program: the tangent kernel's tile
    block_r = meta.pop("BLOCK_B")
    with _on(hs):
        _kernels(interpreting())[5][(K, B, triton.cdiv(H, block_r))](
            hs,
            w,
            wanted,
            rows,
            logs,
            (T - 1) * hs.stride(1),  # the last step's offset: int64 where int32 would wrap
            T,
            B,
            H,
            n,
            rescale_every,
            hs.stride(0),
            hs.stride(1),
            hs.stride(2),
            *w.stride(),
            *rows.stride()[:4],
            *logs.stride()[:3],
            **_act(activation),
            BLOCK_R=block_r,
            **meta,
        )
    return rows, logs


def _tangent_meta(H: int) -> dict:
    """``tangent_loop``'s tile, fixed (``RNNLAB_TRITON_TILE`` tunes the training kernels, not
    this measurement): one sequence a program, 4 warps — sm_90a, float64, H = 64: 128
    registers, no spills; tiles of 16 sequences spill ~340 bytes a thread (``compile_check``)."""
    block_h = max(16, triton.next_power_of_2(H))
    return {"BLOCK_B": 1, "BLOCK_H": block_h, "num_warps": 4, "num_stages": 1}


def tangent_supported(u: torch.Tensor, activation: str) -> tuple[bool, str]:
    """Whether ``tangent_loop`` covers u (K, T, B, H) with that activation: as ``supported``,
    W_hh held on chip (H ≤ ``MAX_H``: no chunked form)."""
    if u.dim() == 4 and u.shape[-1] > MAX_H.get(u.dtype, 0):
        return False, f"H = {u.shape[-1]} > {MAX_H.get(u.dtype)} in {u.dtype}"
    ok, why = supported(u, activation)
    if ok and u.is_cuda and not _tangent_compiles(u.device, u.dtype):
        return False, f"Triton does not compile the tangent kernel in {u.dtype} for this device"
    return ok, why


@functools.cache
def _tangent_compiles(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether Triton builds ``_elman_tangent`` for this device and dtype (tried once, tiny);
    if not, says so once: dyn/lyapunov_max then takes ~6 small kernels a step."""

    def attempt():
        u = torch.zeros(1, 2, 1, 16, dtype=dtype, device=device)
        tangent_loop(u, torch.eye(16, dtype=dtype, device=device)[None], u[0, 0], "tanh", 0, 1)

    where = f"{device} in {dtype}"
    return _builds("tangent kernel", where, "dyn/lyapunov_max runs the torch loop", attempt)


def _builds(kernel: str, where: str, instead: str, attempt) -> bool:
    """Run ``attempt`` (a tiny launch of a measurement kernel); if Triton cannot build the
    kernel there, warn once, naming what runs ``instead``, and return False."""
    try:
        attempt()
        return True
    except Exception as e:
        warnings.warn(
            f"rnnlab: Triton's {kernel} does not build for {where} "
            f"({type(e).__name__}: {str(e)[:200]}); {instead}",
            stacklevel=3,
        )
        return False


def jacobian_supported(hs: torch.Tensor, activation: str) -> tuple[bool, str]:
    """Whether ``jacobian_loop`` covers the trajectories hs (K, T, B, H) with that activation:
    float64, W_hh on chip (H ≤ ``MAX_H``), as ``tangent_supported``."""
    if hs.dtype != torch.float64:
        return False, f"dtype {hs.dtype} (the Jacobian's products run in float64)"
    ok, why = tangent_supported(hs, activation)
    if ok and hs.is_cuda and not _jacobian_compiles(hs.device):
        return False, "Triton does not compile the Jacobian kernel for this device"
    return ok, why


@functools.cache
def _jacobian_compiles(device: torch.device) -> bool:
    """Whether Triton builds ``_elman_jacobian`` for this device (tried once, tiny); if not,
    says so once: the Jacobian spectrum's products then run on the host."""

    def attempt():
        hs = torch.zeros(1, 2, 1, 16, dtype=torch.float64, device=device)
        jacobian_loop(hs, torch.eye(16, dtype=torch.float64, device=device)[None], [1], "tanh", 8)

    instead = "the Jacobian spectrum runs on the host"
    return _builds("Jacobian kernel", str(device), instead, attempt)


@functools.cache
def _fp64_compiles(device: torch.device, wide: bool) -> bool:
    """Whether Triton builds both fp64 kernels of one form for this device (tried once on a
    tiny case: H = 16, or just above ``MAX_H`` for the chunked form); if not, says so once."""
    H = MAX_H[torch.float64] + 8 if wide else 16
    try:
        hs = torch.zeros(1, 2, 1, H, dtype=torch.float64, device=device)
        w = torch.eye(H, dtype=torch.float64, device=device)[None]
        forward_loop(hs, w, "tanh")
        norms = torch.empty(2, 1, 1, dtype=torch.float64, device=device)
        backward_loop(torch.ones_like(hs), hs, w, norms, "tanh")
        return True
    except Exception as e:
        form = "chunked" if wide else "register"
        warnings.warn(
            f"rnnlab: Triton's float64 Elman kernels ({form} form) do not build for {device} "
            f"({type(e).__name__}: {str(e)[:200]}); float64 runs take the C++ loops",
            stacklevel=2,
        )
        return False


def supported(hs: torch.Tensor, activation: str | None = None) -> tuple[bool, str]:
    """Whether the kernels cover hs (K, T, B, H) with that activation (None: any of
    ``ACT_CODES``), and if not why."""
    if activation is not None and activation not in ACT_CODES:
        return False, f"no Triton kernel for activation {activation!r}"
    if not (hs.is_cuda or interpreting()):
        return False, "not a CUDA tensor (and TRITON_INTERPRET is off)"
    if hs.dtype not in MAX_H:
        return False, f"dtype {hs.dtype} (float32 and float64 only)"
    if hs.dim() != 4 or hs.stride(-1) != 1:
        return False, "hs must be (K, T, B, H) with a contiguous last dimension"
    B, H = hs.shape[-2:]
    if MAX_WIDE_H < H:
        return False, f"H = {H} > {MAX_WIDE_H}: the loops' large multiplies win there"
    if MAX_H[hs.dtype] < H and not tile_override().get("WIDE", WIDE_BY_DEFAULT):
        return False, f"H = {H} > {MAX_H[hs.dtype]} needs the chunked kernels (asked off: wide=0)"
    wide = _meta(B, H, hs.dtype)["WIDE"]
    if hs.dtype == torch.float64 and hs.is_cuda and not _fp64_compiles(hs.device, wide):
        return False, "Triton does not compile the fp64 kernels for this device"
    return True, ""
