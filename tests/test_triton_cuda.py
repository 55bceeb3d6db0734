"""The compiled Triton kernels on a GPU against the C++ loops and autograd (skip without CUDA).

python -m pytest tests/test_triton_cuda.py -q     # on a machine with CUDA and triton
"""

import os

import pytest
import torch
from elman_cases import NAMES, TOL, fused, reference, rel_err, stack

from rnnlab.model.activations import ACTIVATIONS

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter is on in this process"
    ),
]


@pytest.fixture(autouse=True)
def compiled():
    pytest.importorskip("triton")


@pytest.mark.parametrize(
    "K, T, B, H",
    [
        (1, 100, 64, 64),
        (1, 1000, 32, 128),
        (1, 5000, 16, 64),
        (16, 100, 64, 64),
        (1, 1000, 64, 256),  # H > 128: the chunked (wide) kernels
        (3, 200, 5, 384),
    ],
)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_kernel_equals_cpp_loops(monkeypatch, activation, K, T, B, H):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("RNNLAB_TRITON_TILE", raising=False)  # the defaults (H > 128: chunked)
    args = stack(K, T, B, 2, H, torch.float32, device="cuda")
    # ‖W_hh‖₂ = 0.95: every φ here is 1-Lipschitz, so the recursion contracts and rounding
    # differences between the backends do not grow over 5000 steps (nor does h blow up)
    args[2] = 0.95 * args[2] / torch.linalg.matrix_norm(args[2], ord=2, keepdim=True)
    args[4] = args[4] / (T * B) ** 0.5
    monkeypatch.setenv("RNNLAB_BACKEND", "cpp")
    want = fused(*args, activation)
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")
    got = fused(*args, activation)
    # A kinked φ (relu, leaky_relu, hardtanh) switches φ′ where z crosses its kink: over
    # 1000 steps one unit whose z sits within rounding of 0 takes the other branch in one
    # backend (measured on an H200: ∂L/∂x 8.9e-4 for relu at (1000, 32, 128), all else
    # ≤ 1e-4); the smooth ones keep 1e-4.
    tol = 2e-3 if activation in ("relu", "leaky_relu", "hardtanh") else 1e-4
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= tol, f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize(
    "tile",
    ["dot=1", "dot=1,warps=8", "dot=0,block_b=4", "dot=0,block_b=1", "wide=1", "wide=1,chunk=16"],
)
@pytest.mark.parametrize("T, B, H", [(100, 64, 64), (1000, 32, 128), (57, 5, 24)])
def test_cuda_tiles_equal_cpp_loops(monkeypatch, T, B, H, tile):
    """The non-default tilings that ``make bench`` times, tanh."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = stack(1, T, B, 2, H, torch.float32, device="cuda")
    args[2] = 0.95 * args[2] / torch.linalg.matrix_norm(args[2], ord=2, keepdim=True)
    monkeypatch.setenv("RNNLAB_BACKEND", "cpp")
    want = fused(*args, "tanh")
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")
    monkeypatch.setenv("RNNLAB_TRITON_TILE", tile)
    got = fused(*args, "tanh")
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= 1e-4, f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize("B, H", [(16, 64), (64, 64), (64, 256)])
def test_cuda_stack_equals_each_member_alone_bit_for_bit(B, H):
    """The kernels' outputs (h_t, ∂L/∂z_t, ‖δ_t‖) for member k of a stack of 3 are the bits of
    member k run alone, in each form (H = 64: W_hh on chip; H = 256: in chunks)."""
    from rnnlab.model.backends import triton_elman

    x, w_ih, w_hh, b, weights = stack(3, 100, B, 2, H, torch.float32, device="cuda")
    with torch.no_grad():
        hs = torch.baddbmm(b.unsqueeze(1), x.reshape(3, -1, 2), w_ih.transpose(1, 2))
        hs = hs.view(3, 100, B, H)
        alone = [hs[k : k + 1].clone() for k in range(3)]
        triton_elman.forward_loop(hs, w_hh.transpose(1, 2), "tanh")
        dz, norms = weights.clone(), hs.new_empty(100, 3, B, dtype=torch.float64)
        triton_elman.backward_loop(dz, hs, w_hh, norms, "tanh")
        for k in range(3):
            triton_elman.forward_loop(alone[k], w_hh[k : k + 1].transpose(1, 2), "tanh")
            assert torch.equal(alone[k][0], hs[k])
            dz_k, norms_k = weights[k : k + 1].clone(), hs.new_empty(100, 1, B, dtype=torch.float64)
            triton_elman.backward_loop(dz_k, alone[k], w_hh[k : k + 1], norms_k, "tanh")
            assert torch.equal(dz_k[0], dz[k]) and torch.equal(norms_k[:, 0], norms[:, k])


@pytest.mark.parametrize("B, H", [(5, 16), (64, 16), (5, 96), (64, 96)])  # 96: in chunks
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_float64(monkeypatch, activation, B, H):
    """fp64 on the GPU: the kernel (broadcast-and-sum form; chunked above H = 64) where Triton
    compiles it, else the loops; either way equal to autograd."""
    from rnnlab.model import backends

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("RNNLAB_BACKEND", raising=False)
    monkeypatch.delenv("RNNLAB_TRITON_TILE", raising=False)
    if H > 64:  # the chunked fp64 kernels, by default: they must compile on an sm_90 card
        probe = torch.zeros(2, 57, B, H, dtype=torch.float64, device="cuda")
        assert backends.backend(probe) == "triton"
    args = stack(2, 57, B, 3, H, torch.float64, device="cuda")
    got, want = fused(*args, activation), reference(*args, activation)
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= TOL[torch.float64], f"{name}: {rel_err(a, r):.2e}"


def stacked_networks(H: int) -> tuple[torch.Tensor, ...]:
    """(W_xh, W_hh, b, x) of 3 float64 networks at gains 0.5, 0.9, 1.2 (below chaos: CPU and
    GPU trajectories stay within rounding over L = 100 steps), 16 trajectories of D = 2."""
    gen = torch.Generator().manual_seed(2)
    K, L, B, D, f64 = 3, 100, 16, 2, torch.float64
    w_ih = torch.randn(K, H, D, generator=gen, dtype=f64)
    x = torch.randn(K, L, B, D, generator=gen, dtype=f64)
    w_hh = torch.randn(K, H, H, generator=gen, dtype=f64) / H**0.5
    w_hh = w_hh * torch.tensor([0.5, 0.9, 1.2], dtype=f64)[:, None, None]
    return w_ih, w_hh, 0.1 * torch.randn(K, H, generator=gen, dtype=f64), x


@pytest.mark.parametrize("H", [16, 64, 70, 96])  # > 64 in float64: the torch loop, member by member
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_lyapunov_max_equals_the_cpu_and_stacks_keep_their_bits(activation, H):
    """dyn/lyapunov_max on the GPU (one tangent-kernel launch for a stack of 3 where it covers
    the shape) against the CPU's torch recursion, and member j of the stack against member j
    alone, bit for bit. float64 throughout and gains below chaos, so the CPU's and the GPU's
    trajectories stay within rounding of each other over L = 100 steps."""
    from rnnlab.measure import theory
    from rnnlab.model import backends

    params = stacked_networks(H)
    K, L, B, _ = params[3].shape
    f64 = torch.float64
    cpu = theory.lyapunov_max_stacked(*params, activation)
    on_gpu = [p.cuda() for p in params]
    drive = torch.zeros(K, L, B, H, dtype=f64, device="cuda")
    assert backends.tangent_covers(drive, activation) == (H <= 64)  # the kernel ran, or not
    gpu = theory.lyapunov_max_stacked(*on_gpu, activation)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-9)
    for j in range(K):  # alone: its own tensors, at the addresses a single network has
        alone = theory.lyapunov_max_stacked(*(p[j : j + 1].clone() for p in on_gpu), activation)
        assert torch.equal(alone, gpu[j : j + 1])


@pytest.mark.parametrize("H", [16, 64, 70])  # > 64: the host's products (None)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_jacobian_rows_equal_the_host_products_and_keep_their_bits(activation, H):
    """The Jacobian spectrum's products on the GPU (one launch for a stack of 3) against the
    host's product of whole matrices on the CPU (ln σ_max to rounding, ln σ_min to its
    resolution where both resolve it: at the resolution's edge one may, the other not), and
    member j of the stack against member j alone, bit for bit. The networks of
    test_cuda_lyapunov_max_equals_the_cpu_and_stacks_keep_their_bits, whose exponents agree
    across the devices."""
    import numpy as np

    from rnnlab.measure import dynamics
    from rnnlab.model.elman import MemberWeights

    params = w_ih, w_hh, bias, x = stacked_networks(H)
    K = len(w_hh)
    on_gpu = [p.cuda() for p in params]
    rows = dynamics.jacobian_spectra_on_device(*on_gpu, activation)
    assert (rows is not None) == (H <= 64)
    if rows is None:
        return
    for j in range(K):
        member = MemberWeights(w_ih[j], w_hh[j], bias[j], activation)
        want = dynamics.jacobian_spectrum(member, x[j])
        got = dynamics.spectrum_from_rows(*rows[j])
        np.testing.assert_allclose(got["log_sv_max"], want["log_sv_max"], rtol=0, atol=1e-9)
        both = ~np.isnan(got["log_sv_min"]) & ~np.isnan(want["log_sv_min"])
        assert both.sum() >= 0.8 * (~np.isnan(want["log_sv_min"])).sum()
        np.testing.assert_allclose(
            got["log_sv_min"][both], want["log_sv_min"][both], rtol=0, atol=1e-4
        )
        alone = dynamics.jacobian_spectra_on_device(
            *(p[j : j + 1].clone() for p in on_gpu), activation
        )
        assert torch.equal(alone[0][0], rows[j][0]) and torch.equal(alone[0][1], rows[j][1])
