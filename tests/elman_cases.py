"""Shared by the Triton kernel tests: a random stack of Elman networks, the fused path's
gradients and norms on it, and the same from the plain autograd loop, member by member."""

from types import SimpleNamespace

import torch

from rnnlab.bench import autograd_reference
from rnnlab.model.elman import _ElmanBPTT

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖, in float64 (float32 gradients of a linear RNN can pass 1e19)."""
    a, b = a.double(), b.double()
    scale = b.norm()
    return float((a - b).norm() / scale) if scale > 0 else float(a.norm())


def stack(K, T, B, D, H, dtype, seed=0, device="cpu"):
    """x (K, T, B, D) and K members' weights (W_xh, W_hh, b), plus per-step loss weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(K, T, B, D, dtype=dtype, generator=g)
    w_ih = torch.randn(K, H, D, dtype=dtype, generator=g) / D**0.5
    w_hh = 1.2 * torch.randn(K, H, H, dtype=dtype, generator=g) / H**0.5
    b = 0.3 * torch.randn(K, H, dtype=dtype, generator=g)
    weights = torch.randn(K, T, B, H, dtype=dtype, generator=g)
    return [t.to(device) for t in (x, w_ih, w_hh, b, weights)]


def loss_of(hs, weights):  # a smooth loss: squared readout plus a linear term
    return ((hs * weights).sum(-1) ** 2).sum() + (hs * weights).sum()


def fused(x, w_ih, w_hh, b, weights, activation):
    """Gradients (x, W_xh, W_hh, b) and norms (K, T, B) through _ElmanBPTT on a stack."""
    leaves = [t.clone().requires_grad_() for t in (x, w_ih, w_hh, b)]
    rec = SimpleNamespace(hidden_grad_norms=None)
    loss_of(_ElmanBPTT.apply(*leaves, activation, rec), weights).backward()
    return [t.grad for t in leaves] + [rec.hidden_grad_norms]


def reference(x, w_ih, w_hh, b, weights, activation):
    """The same, member by member, through the plain autograd loop (retain_grad on each h_t)."""
    out = []
    for k in range(x.shape[0]):
        leaves = [t[k].clone().requires_grad_() for t in (x, w_ih, w_hh, b)]
        hs = autograd_reference(*leaves, activation)
        loss_of(torch.stack(hs), weights[k]).backward()
        grads = [t.grad if t.grad is not None else torch.zeros_like(t) for t in leaves]
        out.append([*grads, torch.stack([h.grad for h in hs]).norm(dim=-1)])
    return [torch.stack(parts) for parts in zip(*out, strict=True)]


NAMES = ["x", "weight_ih", "weight_hh", "bias", "hidden_grad_norms"]
