"""Ensembles: K independent networks trained as one stacked computation.

A sweep is mostly many small, shape-identical runs (seeds above all). Grid points whose
configs agree on everything but ``config.MEMBER_KEYS`` (seed, init, gain, lr, clip_norm,
divergence_threshold) train together: their parameters are stacked along a leading member
dimension, the recursion and the optimizer step run over all members in one call, and the
loop's per-step work (backward call, optimizer step, the host sync at probe steps) is paid
once for all K.

Nothing is shared but the computation: each member draws its own batches, has its own
optimizer state (``rnnlab.optim``), its own clipping and learning rate, and stops alone when
it diverges (``rnnlab.train`` drops it from the stack). Every per-member multiply and
reduction runs on the shapes it has alone (``rnn.member_mm``), so each member's numbers are
the same bits as training it alone: ``train.ensemble`` is not part of ``run_key`` and a
resumed sweep may regroup the members still to train.

    Ensemble([build(r)[1] for r in runs])      # K RNNModels → one stacked module
    groups(grid, todo, workers)                # which grid points train together
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.config import RunConfig
from rnnlab.rnn import RNNModel, _ElmanBPTT, member_mm

AUTO_MAX = 16
"""``train.ensemble: auto`` stacks at most this many members…"""
AUTO_MEMORY = 2**30
"""…and at most this many bytes of hidden states and their gradients."""
CPU_SMALL_OP = 2**17
"""On a CPU, ``auto`` stacks when one time step's multiply (B·H² multiply-adds) is below
this, so per-call overhead dominates it…"""
CPU_SMALL_STEP = 2**24
"""…or when a whole sequence's (L·B·H²) is, so the per-step work (loss, optimizer, sync)
dominates. Above both the kernels are compute-bound and a stack of K costs what K runs do
(measured on a 2-core AVX-512 CPU: 0.87–1.05× there; 1.05–2.6× below; see README)."""


class Ensemble(nn.Module):
    """K RNNModels of one shape stacked along a leading member dimension.

    Parameters keep the member's names with a leading K: ``rnn.weight_ih`` (K, H, D),
    ``rnn.weight_hh`` (K, H, H), ``rnn.bias`` (K, H), ``readout.weight`` (K, O, H),
    ``readout.bias`` (K, O). ``forward`` maps x (K, L, B, D) to the readout (K, S, B, O);
    after backward, ``hidden_grad_norms`` is (K, L, B), as for a single VanillaRNN.

    Args:
        members: freshly built (or trained) models of identical shape and activation, on the
            device the ensemble should use. They serve as templates for :meth:`member`.
    """

    def __init__(self, members: list[RNNModel]):
        super().__init__()
        first = members[0]
        self.activation = first.rnn.activation
        self.readout_steps = first.readout_steps
        named = [dict(m.named_parameters()) for m in members]

        def stack(name: str) -> nn.Parameter:
            return nn.Parameter(torch.stack([n[name].detach() for n in named]))

        self.rnn = nn.ParameterDict(
            {k: stack(f"rnn.{k}") for k in ("weight_ih", "weight_hh", "bias")}
        )
        self.readout = nn.ParameterDict({k: stack(f"readout.{k}") for k in ("weight", "bias")})
        self.members = list(members)  # a plain list: templates, not submodules
        self.record_hidden_grads = True
        self.hidden_grad_norms: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, L, B, D) → outputs at the read-out steps (K, S, B, O)."""
        self.hidden_grad_norms = None
        r = self.rnn
        recorder = self if self.record_hidden_grads else None
        hs = _ElmanBPTT.apply(
            x, r["weight_ih"], r["weight_hh"], r["bias"], self.activation, recorder
        )
        seen = hs[:, self.readout_steps]  # (K, S, B, H)
        K, S, B, H = seen.shape
        out = member_mm(
            seen.reshape(K, S * B, H),
            self.readout["weight"].transpose(1, 2),
            self.readout["bias"].unsqueeze(1),
        )
        return out.view(K, S, B, -1)

    @torch.no_grad()
    def member(self, k: int) -> RNNModel:
        """Member k as a plain RNNModel holding its current weights (for theory probes)."""
        model = self.members[k]
        for name, p in model.named_parameters():
            p.copy_(self.get_parameter(name)[k])
        return model

    @torch.no_grad()
    def keep(self, positions: list[int]) -> None:
        """Keep only the members at ``positions``: new, smaller parameters (gradients kept).
        An optimizer over the old parameters must be rebuilt (``rnnlab.train`` does)."""
        for params in (self.rnn, self.readout):
            for name, p in list(params.items()):
                kept = nn.Parameter(p[positions])
                kept.grad = p.grad[positions] if p.grad is not None else None
                params[name] = kept
        self.members = [self.members[i] for i in positions]


# ------------------------------------------------------------------------ grouping
def group_limit(run: RunConfig) -> int:
    """The largest ensemble ``run.train.ensemble`` allows for this run's shape and device."""
    setting = run.train.ensemble
    if setting == "off":
        return 1
    if setting != "auto":
        return setting
    from rnnlab.tasks import make_task

    L = make_task(**run.task.model_dump()).length
    B, H = run.train.batch_size, run.model.hidden_size
    op = B * H * H
    device = run.train.device
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if on_cpu and op > CPU_SMALL_OP and L * op > CPU_SMALL_STEP:
        return 1
    width = 8 if run.train.dtype == "float64" else 4
    per_member = 2 * L * B * H * width  # h_t and δ_t for every step
    return max(1, min(AUTO_MAX, AUTO_MEMORY // per_member))


def groups(grid: list[RunConfig], todo: list[int], workers: int = 1) -> list[list[int]]:
    """Partition the grid points ``todo`` into ensembles, the costliest first.

    Points with equal ``ensemble_key`` form a family; a family larger than its limit is cut
    into near-equal parts (10 under a limit of 8: 5 + 5, not 8 + 2). Under ``auto``, the
    largest ensembles are split further while there are fewer ensembles than ``workers``:
    an idle worker costs more than a smaller stack.
    """
    families: dict[str, list[int]] = {}
    for i in todo:
        families.setdefault(grid[i].ensemble_key, []).append(i)
    units: list[list[int]] = []
    for members in families.values():
        parts = math.ceil(len(members) / group_limit(grid[members[0]]))
        units += [members[j::parts] for j in range(parts)]
    while len(units) < workers:
        splittable = [u for u in units if len(u) > 1 and grid[u[0]].train.ensemble == "auto"]
        if not splittable:
            break
        big = max(splittable, key=len)
        units.remove(big)
        units += [big[0::2], big[1::2]]
    return sorted(units, key=lambda u: -_cost(grid[u[0]]) * len(u))


def _cost(run: RunConfig) -> float:
    """Relative work of one member: steps × sequence length × H (for scheduling only)."""
    return (run.train.steps + 1) * run.task.seq_len * run.model.hidden_size
