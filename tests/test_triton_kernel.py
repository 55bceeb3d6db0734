"""The persistent Triton kernels (rnnlab/model/backends/triton_elman.py) against autograd, run by
Triton's interpreter on CPU tensors at small shapes.

The interpreter is a process-wide switch read when triton is imported (triton's own library
functions are wrapped then), so this module sets TRITON_INTERPRET=1 before anything imports
triton. With a GPU the compiled kernels are tested instead (tests/test_triton_cuda.py) and this
module skips, unless TRITON_INTERPRET=1 was set by the caller.
"""

import math
import os
import sys

import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before the first import of triton, below
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip(
        "the interpreter must be on from triton's import; with a GPU see test_triton_cuda.py",
        allow_module_level=True,
    )
triton_elman = pytest.importorskip("rnnlab.model.backends.triton_elman")  # needs triton

from elman_cases import NAMES, TOL, fused, reference, rel_err, stack  # noqa: E402

from rnnlab.measure import theory  # noqa: E402
from rnnlab.model import backends as kernels  # noqa: E402
from rnnlab.model.activations import ACTIVATIONS  # noqa: E402
from rnnlab.model.backends import cpp as _ext  # noqa: E402
from rnnlab.model.elman import Elman, MemberInit  # noqa: E402


@pytest.fixture
def interpreted(monkeypatch):
    """The Triton backend, forced (CPU tensors: the interpreter)."""
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(
    "every_step, K", [(False, 1), (True, 3)], ids=["last-K1", "every-K3"]
)  # stacks of 1 and 3 alternate with the loss's form: each activation and T meets both
@pytest.mark.parametrize("T", [1, 2, 57])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_kernel_equals_autograd(interpreted, monkeypatch, activation, T, every_step, K, dtype):
    B = 5 if K == 1 else 3
    if T > 2:  # tiles of 4 (K = 1: a full and a partial one; K = 3: one partial tile each);
        # T ≤ 2 keeps the default for these B, one sequence a program (the interpreter walks
        # programs one by one: 57 steps × 5 programs is most of this file's time)
        monkeypatch.setenv("RNNLAB_TRITON_TILE", "block_b=4")
    x, w_ih, w_hh, b, weights = stack(K, T, B, 3, 16, dtype)
    if not every_step:
        weights[:, :-1] = 0  # the loss reads the last step only
    got, want = (
        fused(x, w_ih, w_hh, b, weights, activation),
        reference(x, w_ih, w_hh, b, weights, activation),
    )
    for name, a, r in zip(NAMES, got, want, strict=True):
        norms = name == "hidden_grad_norms"  # summed in float64 whatever the dtype
        assert a.dtype == (torch.float64 if norms else dtype) and a.shape == r.shape, name
        assert rel_err(a, r) <= TOL[dtype], f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_dot_form_equals_autograd(interpreted, monkeypatch, activation):
    """The product as tl.dot on tiles of 16 sequences (float32's default from B = 64 on)
    instead of broadcast-and-sum on tiles of 4 (the default below, so in the test above)."""
    monkeypatch.setenv("RNNLAB_TRITON_TILE", "dot=1")
    dtype = torch.float32  # float64 never takes tl.dot (Triton 3.6 has none)
    args = stack(1, 57, 5, 3, 16, dtype)
    got, want = fused(*args, activation), reference(*args, activation)
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= TOL[dtype], f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize("tile", ["dot=1", "dot=0,block_b=4"], ids=["dot", "sum"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_stack_of_three_equals_autograd_and_each_member_alone_bit_for_bit(
    interpreted, monkeypatch, activation, tile
):
    """B = 20 spans several sequence blocks, H = 24 is padded to 32: masked edges are covered."""
    monkeypatch.setenv("RNNLAB_TRITON_TILE", tile)
    x, w_ih, w_hh, b, weights = stack(3, 9, 20, 3, 24, torch.float32, seed=1)
    got = fused(x, w_ih, w_hh, b, weights, activation)
    for name, a, r in zip(
        NAMES, got, reference(x, w_ih, w_hh, b, weights, activation), strict=True
    ):
        assert rel_err(a, r) <= TOL[torch.float32], f"{name}: {rel_err(a, r):.2e}"
    with torch.no_grad():  # the recursions themselves: the stack's h_t and ∂L/∂z_t, member k
        hs = torch.baddbmm(b.unsqueeze(1), x.reshape(3, -1, 3), w_ih.transpose(1, 2))
        hs = hs.view(3, 9, 20, 24)
        alone = [hs[k : k + 1].clone() for k in range(3)]
        triton_elman.forward_loop(hs, w_hh.transpose(1, 2), activation)
        for k in range(3):
            triton_elman.forward_loop(alone[k], w_hh[k : k + 1].transpose(1, 2), activation)
            assert torch.equal(alone[k][0], hs[k])
        dz, norms = weights.clone(), hs.new_empty(9, 3, 20)
        triton_elman.backward_loop(dz, hs, w_hh, norms, activation)
        for k in range(3):
            dz_k, norms_k = weights[k : k + 1].clone(), hs.new_empty(9, 1, 20)
            triton_elman.backward_loop(dz_k, hs[k : k + 1], w_hh[k : k + 1], norms_k, activation)
            assert torch.equal(dz_k[0], dz[k]) and torch.equal(norms_k[:, 0], norms[:, k])


WIDE_CASES = [  # (activation, T, loss on every step, K, dtype)
    *[(a, 5, True, 3, torch.float32) for a in sorted(ACTIVATIONS)],
    ("tanh", 1, False, 1, torch.float64),
    ("tanh", 2, True, 3, torch.float64),
    ("relu", 5, False, 1, torch.float64),
]


@pytest.mark.parametrize("activation, T, every_step, K, dtype", WIDE_CASES)
def test_wide_form_equals_autograd(interpreted, monkeypatch, activation, T, every_step, K, dtype):
    """The chunked kernels (H above what one program holds: W_hh read in chunks each step) at
    a small H by override: H = 24 in chunks of 16 (one full, one partial). Fewer cases than the
    on-chip form's: φ and φ′ are the same functions in both, and the interpreter walks every
    chunk of every step (it is ~10× slower here)."""
    monkeypatch.setenv("RNNLAB_TRITON_TILE", "wide=1,chunk=16")
    B = 5 if K == 1 else 3
    x, w_ih, w_hh, b, weights = stack(K, T, B, 3, 24, dtype)
    if not every_step:
        weights[:, :-1] = 0
    got = fused(x, w_ih, w_hh, b, weights, activation)
    want = reference(x, w_ih, w_hh, b, weights, activation)
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= TOL[dtype], f"{name}: {rel_err(a, r):.2e}"


def test_wide_form_stack_equals_each_member_alone_bit_for_bit(monkeypatch):
    """As the on-chip forms: member k's h_t, ∂L/∂z_t and ‖δ_t‖ alone are its bits in a stack
    of 3; B = 6 in blocks of 4 (one partial), H = 24 in chunks of 16."""
    monkeypatch.setenv("RNNLAB_TRITON_TILE", "wide=1,chunk=16,block_b=4")
    x, w_ih, w_hh, b, weights = stack(3, 5, 6, 3, 24, torch.float32, seed=2)
    with torch.no_grad():
        hs = torch.baddbmm(b.unsqueeze(1), x.reshape(3, -1, 3), w_ih.transpose(1, 2))
        hs = hs.view(3, 5, 6, 24)
        alone = [hs[k : k + 1].clone() for k in range(3)]
        triton_elman.forward_loop(hs, w_hh.transpose(1, 2), "tanh")
        dz, norms = weights.clone(), hs.new_empty(5, 3, 6, dtype=torch.float64)
        triton_elman.backward_loop(dz, hs, w_hh, norms, "tanh")
        for k in range(3):
            triton_elman.forward_loop(alone[k], w_hh[k : k + 1].transpose(1, 2), "tanh")
            assert torch.equal(alone[k][0], hs[k])
            dz_k, norms_k = weights[k : k + 1].clone(), hs.new_empty(5, 1, 6, dtype=torch.float64)
            triton_elman.backward_loop(dz_k, alone[k], w_hh[k : k + 1], norms_k, "tanh")
            assert torch.equal(dz_k[0], dz[k]) and torch.equal(norms_k[:, 0], norms[:, k])


def test_wide_form_is_the_form_above_max_h(interpreted, monkeypatch):
    """H = MAX_H + 8 (float32) is the chunked kernels' (the on-chip form's below), taken by
    backend selection unasked (``wide=0`` turns them off); equal to autograd."""
    H = triton_elman.MAX_H[torch.float32] + 8
    assert triton_elman._meta(4, H, torch.float32)["WIDE"]
    assert not triton_elman._meta(4, H - 8, torch.float32)["WIDE"]
    hs = torch.zeros(1, 3, 2, H)
    assert triton_elman.WIDE_BY_DEFAULT and triton_elman.supported(hs)[0]
    monkeypatch.setenv("RNNLAB_TRITON_TILE", "wide=0")
    ok, why = triton_elman.supported(hs)
    assert not ok and "wide=0" in why
    with pytest.raises(ValueError, match="only in chunks"):  # never the on-chip form up there
        triton_elman._meta(4, H, torch.float32)
    assert triton_elman.supported(torch.zeros(1, 3, 2, H - 8))[0]  # on chip: wide=0 is its form
    monkeypatch.delenv("RNNLAB_TRITON_TILE")
    args = stack(1, 3, 2, 2, H, torch.float32)
    got, want = fused(*args, "tanh"), reference(*args, "tanh")
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= TOL[torch.float32], f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize("record", [True, False], ids=["profile", "no-profile"])
def test_one_network_on_triton_equals_the_cpp_loops(monkeypatch, record):
    """The user-facing module (one network: K = 1), with and without the norms."""
    g = torch.Generator().manual_seed(3)
    rnn = Elman(3, 20, activation="tanh", members=[MemberInit("gaussian", 1.1, g)])
    rnn.record_hidden_grads = record
    x = torch.randn(1, 30, 6, 3, generator=g)
    out = {}
    for name in ("triton", "cpp" if _ext.loops() is not None else "python"):
        monkeypatch.setenv("RNNLAB_BACKEND", name)
        rnn.zero_grad()
        hs = rnn.hidden(x)
        (hs.sin().sum()).backward()
        out[name] = [hs.detach(), *(p.grad.clone() for p in rnn.parameters())]
        assert (rnn.hidden_grad_norms is not None) == record
        if record:
            out[name].append(rnn.hidden_grad_norms)
    for a, b in zip(*out.values(), strict=True):
        assert rel_err(a, b) <= 1e-5


def test_backend_choice(monkeypatch):
    x = torch.zeros(1, 3, 2, 16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.delenv("RNNLAB_BACKEND", raising=False)
    assert kernels.backend(x) in ("cpp", "python")  # CPU tensors never take Triton by default
    monkeypatch.setenv("RNNLAB_BACKEND", "python")
    assert kernels.backend(x) == "python"
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        kernels.backend(x)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.backend(x) == "triton"
    monkeypatch.delenv("RNNLAB_BACKEND")  # the interpreter alone does not take CPU runs over
    assert kernels.backend(x) in ("cpp", "python")
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")
    assert kernels.backend(torch.zeros(1, 3, 2, 256)) == "triton"  # the chunked kernels
    monkeypatch.setenv("RNNLAB_TRITON_TILE", "wide=0")  # asked off
    with pytest.raises(RuntimeError, match="wide=0"):
        kernels.backend(torch.zeros(1, 3, 2, 256))
    with pytest.raises(RuntimeError, match="H = 1024 > 512"):  # the loops' cuBLAS multiplies
        kernels.backend(torch.zeros(1, 3, 2, 1024))
    monkeypatch.delenv("RNNLAB_BACKEND")
    assert kernels.backend(torch.zeros(1, 3, 2, 1024)) in ("cpp", "python")  # falls back
    monkeypatch.delenv("RNNLAB_TRITON_TILE")
    assert kernels.backend(torch.zeros(1, 3, 2, 256)) in ("cpp", "python")
    monkeypatch.setenv("RNNLAB_BACKEND", "fortran")
    with pytest.raises(ValueError, match="fortran"):
        kernels.backend(x)


def test_tile_override_reads_every_key_and_refuses_the_rest(monkeypatch):
    monkeypatch.setenv("RNNLAB_TRITON_TILE", " dot=1, block_b=4,warps=8 ,wide=0,chunk=16")
    assert triton_elman.tile_override() == {
        "DOT": 1,
        "BLOCK_B": 4,
        "num_warps": 8,
        "WIDE": 0,
        "CHUNK": 16,
    }
    for bad in (
        "x",
        "dot=2",
        "wide=-1",
        "block_b=3",
        "warps=64",
        "chunk=0",
        "colour=1",
        "dot",
        "warps=²",
        "chunk=" + "1" * 5000,
    ):
        monkeypatch.setenv("RNNLAB_TRITON_TILE", bad)
        with pytest.raises(ValueError, match=f"RNNLAB_TRITON_TILE='{bad[:30]}.*' is not"):
            triton_elman.tile_override()


# ------------------------------------------------------------ the k = 1 Lyapunov tangent kernel
def _drive(K, T, B, H, g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(K, H, H, dtype=torch.float64, generator=gen) * g / H**0.5
    return w, 0.5 * torch.randn(K, T, B, H, dtype=torch.float64, generator=gen)


@pytest.mark.parametrize(
    "activation, g, K, qr_every",
    [
        ("tanh", 3.0, 1, 5),
        ("relu", 1.8, 2, 1),
        ("sigmoid", 4.0, 1, 1),
        ("linear", 1.1, 2, 5),
        ("leaky_relu", 1.5, 1, 7),
        ("hardtanh", 2.0, 2, 5),
    ],
)
def test_tangent_kernel_equals_the_torch_recursion(monkeypatch, activation, g, K, qr_every):
    """theory.lyapunov_spectrum at k = 1 on the kernel (one launch for the stack) against its
    own torch recursion, float64: the same arithmetic but each product summed in another order,
    so equal to rounding. The chaotic cases (tanh g = 3, relu g = 1.8, hardtanh g = 2) would
    drift apart if the trajectory differed by more. H = 12 pads the tile's columns."""
    w, u = _drive(K, 23, 2, 12, g)
    monkeypatch.setenv("RNNLAB_BACKEND", "python")
    assert not kernels.tangent_covers(u, activation)
    want = theory.lyapunov_spectrum(w, u, activation, k=1, qr_every=qr_every)
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")
    assert kernels.tangent_covers(u, activation)
    got = theory.lyapunov_spectrum(w, u, activation, k=1, qr_every=qr_every)
    assert got.shape == (K, 1) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    assert not torch.equal(got, torch.zeros_like(got))


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log")  # ln 0 = −∞: the answer
def test_tangent_kernel_edges(monkeypatch):
    """One step (no transient: its one renormalisation counts), a single network's 2-D weights,
    and a dead ReLU network (a zero tangent vector: −∞, not NaN), against the torch recursion."""
    w, u = _drive(1, 1, 2, 8, 1.3)
    runs = {}
    for backend in ("python", "triton"):
        monkeypatch.setenv("RNNLAB_BACKEND", backend)
        one = theory.lyapunov_spectrum(w[0], u[0], "tanh", k=1)
        runs[backend] = one, theory.lyapunov_spectrum(w, u - 100, "relu", k=1)
    (want, dead_want), (got, dead) = runs["python"], runs["triton"]
    assert got.shape == (1,)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert dead.tolist() == dead_want.tolist() == [[-math.inf]]


def test_tangent_kernel_stack_equals_each_member_alone_bit_for_bit(interpreted):
    """lyapunov_max_stacked on the kernel: member j of a stack of 3 is the bits of member j
    alone (its drive its own multiply, its trajectories its own programs)."""
    gen = torch.Generator().manual_seed(5)
    K, L, B, D, H = 3, 17, 2, 3, 16
    w_ih, x = torch.randn(K, H, D, generator=gen), torch.randn(K, L, B, D, generator=gen)
    w_hh, b = torch.randn(K, H, H, generator=gen) * 0.4, torch.randn(K, H, generator=gen) * 0.1
    stacked = theory.lyapunov_max_stacked(w_ih, w_hh, b, x, "tanh")
    for j in range(K):
        one = (p[j : j + 1] for p in (w_ih, w_hh, b, x))
        assert torch.equal(theory.lyapunov_max_stacked(*one, "tanh"), stacked[j : j + 1])
    assert stacked.unique().numel() == K


def test_tangent_kernel_coverage(interpreted):
    """W_hh on chip only (float64: H ≤ 64); beyond, the torch recursion runs."""
    assert kernels.tangent_covers(torch.zeros(1, 3, 2, 64, dtype=torch.float64), "tanh")
    assert not kernels.tangent_covers(torch.zeros(1, 3, 2, 96, dtype=torch.float64), "tanh")
    assert not kernels.tangent_covers(torch.zeros(3, 2, 16, dtype=torch.float64), "tanh")


def test_a_kernel_that_does_not_build_says_so_and_the_loops_run(monkeypatch):
    """A card on which Triton cannot build a float64 kernel: one warning naming what runs
    instead (checked once per device; here the check itself, uncached)."""

    def fail(*args, **kwargs):
        raise RuntimeError("no fp64 on this card")

    monkeypatch.setattr(triton_elman, "forward_loop", fail)
    monkeypatch.setattr(triton_elman, "tangent_loop", fail)
    monkeypatch.setattr(triton_elman, "jacobian_loop", fail)
    with pytest.warns(UserWarning, match=r"do not build .*no fp64 on this card.*C\+\+ loops"):
        assert triton_elman._fp64_compiles.__wrapped__(torch.device("cpu"), False) is False
    with pytest.warns(UserWarning, match=r"tangent kernel does not build .*torch loop"):
        assert not triton_elman._tangent_compiles.__wrapped__(torch.device("cpu"), torch.float64)
    with pytest.warns(UserWarning, match=r"Jacobian kernel does not build .*on the host"):
        assert not triton_elman._jacobian_compiles.__wrapped__(torch.device("cpu"))


# ------------------------------------------------ the Jacobian spectrum's products on the device
def _stacked_network(K, L, B, D, H, g, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    w_ih = torch.randn(K, H, D, generator=gen, dtype=dtype)
    w_hh = torch.randn(K, H, H, generator=gen, dtype=dtype) * g / H**0.5
    b = 0.1 * torch.randn(K, H, generator=gen, dtype=dtype)
    return w_ih, w_hh, b, torch.randn(K, L, B, D, generator=gen, dtype=dtype)


def _assert_same_spectrum(got: dict, want: dict):
    """ln σ_max to rounding; ln σ_min to its resolution (an SVD finds σ_min only to ~ε σ_max:
    ``dynamics.RESOLVED``), unresolved (NaN) at the same distances; ±∞ where both are."""
    import numpy as np

    assert got["k"].tolist() == want["k"].tolist()
    np.testing.assert_allclose(got["log_sv_max"], want["log_sv_max"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["log_sv_min"], want["log_sv_min"], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "activation, g",
    [("tanh", 1.3), ("relu", 1.6), ("sigmoid", 4.0), ("leaky_relu", 1.2), ("hardtanh", 2.0)],
)
def test_jacobian_kernel_equals_the_host_products(interpreted, activation, g):
    """The Jacobian spectrum from the rows the kernel carries (a stack of 2, L = 19 crosses
    two rescalings, H = 5 pads the tile) against the host's product of whole matrices, member
    by member: the same SVDs of the same J(k) up to rounding and row scaling."""
    from rnnlab.measure import dynamics
    from rnnlab.model.elman import MemberWeights

    w_ih, w_hh, b, x = _stacked_network(2, 19, 3, 2, 5, g)
    rows = dynamics.jacobian_spectra_on_device(w_ih, w_hh, b, x, activation)
    assert rows is not None and len(rows) == 2
    for j, (r, logs, ks) in enumerate(rows):
        assert r.shape == (3, len(ks), 5, 5) and logs.shape == (3, len(ks), 5)
        member = MemberWeights(w_ih[j], w_hh[j], b[j], activation)
        _assert_same_spectrum(
            dynamics.spectrum_from_rows(r, logs, ks), dynamics.jacobian_spectrum(member, x[j])
        )


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log")  # ln 0 = −∞: the answer
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the interpreter's numpy, on NaN
@pytest.mark.filterwarnings("ignore:All-NaN slice encountered")
def test_jacobian_kernel_exact_cases(interpreted):
    """A linear network W_hh = g·Q: every singular value of J(k) is g^k (ln σ = k ln g, both
    ends), here across 40 steps of growth, past 5 rescalings; a dead ReLU network: J(k) = 0,
    ln σ = −∞ as on the host, not NaN; an infinite weight: NaN, as on the host."""
    from rnnlab.measure import dynamics
    from rnnlab.model.elman import MemberWeights

    gen = torch.Generator().manual_seed(3)
    H, g = 6, 1.7
    q = torch.linalg.qr(torch.randn(H, H, generator=gen, dtype=torch.float64))[0]
    w_ih = torch.randn(1, H, 2, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 40, 2, 2, generator=gen, dtype=torch.float64)
    ((r, logs, ks),) = dynamics.jacobian_spectra_on_device(
        w_ih, (g * q)[None], torch.zeros(1, H, dtype=torch.float64), x, "linear"
    )
    table = dynamics.spectrum_from_rows(r, logs, ks)
    exact = torch.tensor(ks, dtype=torch.float64).numpy() * math.log(g)
    assert abs(table["log_sv_max"] - exact).max() < 1e-12
    assert abs(table["log_sv_min"] - exact).max() < 1e-12
    bias = torch.full((1, H), -100.0, dtype=torch.float64)  # every unit off: J = 0
    ((r, logs, ks),) = dynamics.jacobian_spectra_on_device(w_ih, (g * q)[None], bias, x, "relu")
    dead = dynamics.spectrum_from_rows(r, logs, ks)
    host = dynamics.jacobian_spectrum(MemberWeights(w_ih[0], g * q, bias[0], "relu"), x[0])
    assert dead["log_sv_max"].tolist() == host["log_sv_max"].tolist() == [-math.inf] * len(ks)
    exploded = (g * q).clone()
    exploded[0, 0] = math.inf  # weights that overflowed: NaN products, data as on the host
    ((r, logs, ks),) = dynamics.jacobian_spectra_on_device(
        w_ih, exploded[None], torch.zeros(1, H, dtype=torch.float64), x, "tanh"
    )
    table = dynamics.spectrum_from_rows(r, logs, ks)
    member = MemberWeights(w_ih[0], exploded, torch.zeros(H, dtype=torch.float64), "tanh")
    host = dynamics.jacobian_spectrum(member, x[0])
    for column in ("log_sv_max", "log_sv_min"):
        assert all(math.isnan(v) for v in [*table[column], *host[column]])


def test_jacobian_rows_stack_equals_each_member_alone_bit_for_bit(interpreted):
    """Member j of a stack of 3 (float32 weights, as a trained model's) gets the bits of member
    j alone: its drive its own multiply, its trajectories and rows its own programs."""
    from rnnlab.measure import dynamics

    params = _stacked_network(3, 11, 2, 3, 8, 1.4, seed=5, dtype=torch.float32)
    stacked = dynamics.jacobian_spectra_on_device(*params, "tanh")
    for j in range(3):
        ((r, logs, ks),) = dynamics.jacobian_spectra_on_device(
            *(p[j : j + 1] for p in params), "tanh"
        )
        assert torch.equal(r, stacked[j][0]) and torch.equal(logs, stacked[j][1])
        assert ks == stacked[j][2]
    assert not torch.equal(stacked[0][0], stacked[1][0])


def test_jacobian_kernel_coverage(interpreted, monkeypatch):
    """float64 W_hh on chip (H ≤ 64) only, and a stack's rows within ``DEVICE_BYTES``: above
    either, and without the forced backend, the caller runs the host's products (None)."""
    from rnnlab.measure import dynamics

    assert kernels.jacobian_covers(torch.zeros(1, 1, 1, 64, dtype=torch.float64), "tanh")
    small = _stacked_network(2, 9, 3, 1, 4, 1.0)
    assert dynamics.jacobian_spectra_on_device(*small, "tanh") is not None
    monkeypatch.setattr(dynamics, "DEVICE_BYTES", 8 * 2 * 3 * (8 * 16 + 9 * 4))  # 8 distances
    assert dynamics.jacobian_spectra_on_device(*small, "tanh") is not None  # just fits
    monkeypatch.setattr(dynamics, "DEVICE_BYTES", dynamics.DEVICE_BYTES - 1)
    assert dynamics.jacobian_spectra_on_device(*small, "tanh") is None  # the host's products
    assert (
        dynamics.jacobian_spectra_on_device(*_stacked_network(1, 3, 1, 1, 65, 1.0), "tanh") is None
    )
    monkeypatch.delenv("RNNLAB_BACKEND")
    assert (
        dynamics.jacobian_spectra_on_device(*_stacked_network(1, 3, 1, 1, 8, 1.0), "tanh") is None
    )


def test_training_takes_the_jacobian_from_the_device_rows(interpreted, monkeypatch):
    """A stack trained on the Triton backend: its first probe's Jacobian tables come from the
    kernel's rows (the host's products are never run) and equal the host's products of the
    same initial weights."""
    from rnnlab.config import RunConfig
    from rnnlab.measure import dynamics, names
    from rnnlab.train import train_ensemble

    def run(seed):
        return RunConfig.model_validate(
            {
                "task": {"name": "adding", "seq_len": 9},
                "model": {"hidden_size": 6},
                "train": {"steps": 1, "batch_size": 3, "eval_size": 3},
                "probe": {"jacobian_trajectories": 2},
                "seed": seed,
            }
        )

    runs = [run(0), run(1)]
    host_products = dynamics.jacobian_spectrum

    def refuse(*args, **kwargs):
        raise AssertionError("the host's products ran")

    monkeypatch.setattr(dynamics, "jacobian_spectrum", refuse)
    got = {(k, m.step): m.tables for k, m in train_ensemble(runs)}
    monkeypatch.setattr(dynamics, "jacobian_spectrum", host_products)
    monkeypatch.setenv("RNNLAB_BACKEND", "python")
    want = {(k, m.step): m.tables for k, m in train_ensemble(runs) if m.step == 0}
    for key, tables in want.items():
        _assert_same_spectrum(got[key][names.TABLE_JACOBIAN], tables[names.TABLE_JACOBIAN])
    assert names.TABLE_JACOBIAN in got[(0, 1)]  # the last probe's too
