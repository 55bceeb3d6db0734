"""Optimizers for a stack of K networks, each member with its own learning rate.

Parameters carry a leading member dimension K (``rnnlab.model.elman.Elman``); ``lr`` is a (K,) tensor.
The updates are PyTorch's (``torch.optim.SGD``, ``Adam``, ``RMSprop`` with their default
hyper-parameters; tested against them) written as plain elementwise tensor ops, so that:

- each member moves by its own learning rate in the same step, with no host work per member;
- a member's bits never depend on the stack it trains in: every op is one correctly rounded
  IEEE operation per element (no fused multiply-add forms such as ``add_(x, alpha=a)``, whose
  vectorised and scalar paths round differently), with per-member scalars broadcast from (K,)
  tensors, so an element's result is the same wherever it sits in the stacked tensor;
- shrinking the stack (a member diverged) is indexing the state;
- a step is ``advance()``, the host's part (the step count, and Adam's bias corrections written
  into a device tensor), then ``apply(lr)``, device work only, with no Python number that
  changes from step to step: a CUDA graph captures ``apply`` once and replays it
  (``rnnlab.train``). The state must exist before a capture: the first step runs as it is.

    opt = OPTIMIZERS["adam"](params, momentum=0.0)
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

    def step(self, lr: torch.Tensor) -> None:
        """One update of every parameter from its ``.grad``; lr (K,)."""
        self.advance()
        self.apply(lr)

    def advance(self) -> None:
        """The host's part of the next step: count it."""
        self.steps += 1

    @torch.no_grad()
    def apply(self, lr: torch.Tensor) -> None:
        """The device's part of the step ``advance`` began: θ ← θ − lr·u for every parameter."""
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
    u = (m / c₁) / (√v / c₂ + ε) with the bias corrections c₁ = 1 − β₁ᵗ, c₂ = √(1 − β₂ᵗ).

    c₁ and c₂ change every step, so ``advance`` writes them into a device tensor that ``apply``
    reads (a Python number would be frozen into a captured step). A division by a host number
    is what the element sees in ATen: on a CPU t / c, on CUDA t × fl(1/c) with the reciprocal
    rounded to the dtype first (``div_true_kernel_cuda``), so on CUDA the tensor holds 1/c and
    multiplies, on a CPU it holds c and divides: the bits of dividing by c as a Python number.
    """

    betas, eps = (0.9, 0.999), 1e-8
    corrections: torch.Tensor | None = None
    """(2,) in the parameters' dtype and device: (c₁, c₂), or on CUDA (1/c₁, 1/c₂)."""

    def advance(self):
        super().advance()
        b1, b2 = self.betas
        p = self.params[0]
        if self.corrections is None:
            self.corrections = torch.empty(2, dtype=p.dtype, device=p.device)
        for i, c in enumerate((1 - b1**self.steps, (1 - b2**self.steps) ** 0.5)):
            if p.is_cuda:  # 1/c rounded to the dtype: CUDA's own host-side reciprocal
                c = (1 / torch.tensor(c, dtype=p.dtype)).item()
            self.corrections[i].fill_(c)  # a kernel with c as its argument: no host wait

    def direction(self, g, s):
        b1, b2 = self.betas
        if "m" not in s:
            s["m"], s["v"] = torch.zeros_like(g), torch.zeros_like(g)
        m, v = s["m"], s["v"]
        m.mul_(b1).add_(g * (1 - b1))
        v.mul_(b2).add_(g * g * (1 - b2))
        c1, c2 = self.corrections
        if g.is_cuda:
            return (m * c1) / (v.sqrt() * c2 + self.eps)
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
