"""The compiled Triton kernels on a GPU against the C++ loops and autograd (skip without CUDA).

python -m pytest tests/test_triton_cuda.py -q     # on a machine with CUDA and triton
"""

import os

import pytest
import torch
from elman_cases import NAMES, TOL, fused, reference, rel_err, stack

from rnnlab.rnn import ACTIVATIONS

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
    "K, T, B, H", [(1, 100, 64, 64), (1, 1000, 32, 128), (1, 5000, 16, 64), (16, 100, 64, 64)]
)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_kernel_equals_cpp_loops(monkeypatch, activation, K, T, B, H):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = stack(K, T, B, 2, H, torch.float32, device="cuda")
    args[2] = args[2] / 1.2  # W_hh's spectral radius about 1: no blow-up over 5000 steps
    args[4] = args[4] / (T * B) ** 0.5
    monkeypatch.setenv("RNNLAB_BACKEND", "cpp")
    want = fused(*args, activation)
    monkeypatch.setenv("RNNLAB_BACKEND", "triton")
    got = fused(*args, activation)
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= 1e-4, f"{name}: {rel_err(a, r):.2e}"


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_cuda_float64(monkeypatch, activation):
    """fp64 on the GPU: the kernel where Triton builds an fp64 dot, else the loops; either way
    equal to autograd."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("RNNLAB_BACKEND", raising=False)
    args = stack(2, 57, 5, 3, 16, torch.float64, device="cuda")
    got, want = fused(*args, activation), reference(*args, activation)
    for name, a, r in zip(NAMES, got, want, strict=True):
        assert rel_err(a, r) <= TOL[torch.float64], f"{name}: {rel_err(a, r):.2e}"
