"""Optimizers for a stack of K networks, each member with its own learning rate.

Parameters carry a leading member dimension K (``rnnlab.model.elman.Elman``); ``lr`` is a (K,) tensor.
The updates are PyTorch's (``torch.optim.SGD``, ``Adam``, ``RMSprop`` with their default
hyper-parameters; tested against them) written as plain elementwise tensor ops, so that:

- each member moves by its own learning rate in the same step, with no host work per member;
- a member's bits never depend on the stack it trains in: every op is one correctly rounded
  IEEE operation per element (no fused multiply-add forms such as ``add_(x, alpha=a)``, whose
  vectorised and scalar paths round differently), with per-member scalars broadcast from (K,)
  tensors, so an element's result is the same wherever it sits in the stacked tensor;
- shrinking the stack (a member diverged) is indexing the state.

    opt = make_optimizer("adam", params, momentum=0.0)
    opt.step(lr)              # lr: (K,) float64 tensor, one learning rate per member
    opt.keep([0, 2], params)  # keep members 0 and 2: their state, their shrunk parameters
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class StackOptimizer:
    """Base: per-parameter state tensors with the parameter's (K, …) shape."""

    def __init__(self, params: list[torch.nn.Parameter], momentum: float = 0.0):
        self.params = list(params)
        self.momentum = momentum
        self.steps = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]

    @torch.no_grad()
    def keep(self, positions: list[int], params: list[torch.nn.Parameter]) -> None:
        """Keep the state of the members at ``positions`` only, for ``params``: the same
        parameters, shrunk to those members (``Elman.keep``)."""
        self.params = list(params)
        self.state = [{k: v[positions] for k, v in s.items()} for s in self.state]

    @torch.no_grad()
    def step(self, lr: torch.Tensor) -> None:
        """One update of every parameter from its ``.grad``; lr (K,)."""
        self.steps += 1
        for p, s in zip(self.params, self.state, strict=True):
            lr_p = lr.view(-1, *[1] * (p.dim() - 1)).to(p.dtype)
            p.sub_(lr_p * self.direction(p.grad, s))

    def direction(self, g: torch.Tensor, s: dict[str, torch.Tensor]) -> torch.Tensor:
        """u in θ ← θ − lr·u, updating the state ``s`` in place."""
        raise NotImplementedError


class SGD(StackOptimizer):
    """torch.optim.SGD (dampening 0, no Nesterov): b ← μ b + g (b₁ = g); u = b, or g if μ = 0."""

    def direction(self, g, s):
        if self.momentum == 0:
            return g
        if "buf" not in s:
            s["buf"] = g.clone()
        else:
            s["buf"].mul_(self.momentum).add_(g)
        return s["buf"]


class Adam(StackOptimizer):
    """torch.optim.Adam (Kingma & Ba 2015), β = (0.9, 0.999), ε = 1e-8:
    u = (m / (1 − β₁ᵗ)) / (√v / √(1 − β₂ᵗ) + ε)."""

    betas, eps = (0.9, 0.999), 1e-8

    def direction(self, g, s):
        b1, b2 = self.betas
        if "m" not in s:
            s["m"], s["v"] = torch.zeros_like(g), torch.zeros_like(g)
        m, v = s["m"], s["v"]
        m.mul_(b1).add_(g * (1 - b1))
        v.mul_(b2).add_(g * g * (1 - b2))
        c1, c2 = 1 - b1**self.steps, (1 - b2**self.steps) ** 0.5
        return (m / c1) / (v.sqrt() / c2 + self.eps)


class RMSprop(StackOptimizer):
    """torch.optim.RMSprop (Hinton 2012), α = 0.99, ε = 1e-8, not centred:
    v ← α v + (1 − α) g²; u = g / (√v + ε), through momentum b ← μ b + u when μ > 0."""

    alpha, eps = 0.99, 1e-8

    def direction(self, g, s):
        if "v" not in s:
            s["v"] = torch.zeros_like(g)
        v = s["v"]
        v.mul_(self.alpha).add_(g * g * (1 - self.alpha))
        u = g / (v.sqrt() + self.eps)
        if self.momentum == 0:
            return u
        if "buf" not in s:
            s["buf"] = torch.zeros_like(g)
        return s["buf"].mul_(self.momentum).add_(u)


OPTIMIZERS: dict[str, Callable[..., StackOptimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "rmsprop": RMSprop,
}
