"""Scheduling: which grid points train together as one stack (``rnnlab.model``).

A sweep is mostly many small, shape-identical runs (seeds above all). Grid points whose
configs agree on everything but ``config.MEMBER_KEYS`` (seed, init, gain, lr, clip_norm,
divergence_threshold) train together: their parameters are stacked along a leading member
dimension, the recursion and the optimizer step run over all members in one call, and the
loop's per-step work (backward call, optimizer step, the host sync at probe steps) is paid
once for all K.

Nothing is shared but the computation: each member draws its own batches, has its own
optimizer state (``rnnlab.optim``), its own clipping and learning rate, and stops alone when
it diverges (``rnnlab.train`` drops it from the stack). Every per-member multiply and
reduction runs on the shapes it has alone (``rnnlab.model.elman.member_mm``), so each
member's numbers are the same bits as training it alone: ``train.ensemble`` is not part of
``run_key`` and a resumed sweep may regroup the members still to train.

    groups(grid, todo, workers)                # which grid points train together
"""

from __future__ import annotations

import ctypes
import functools
import math
import sys

from rnnlab.config import RunConfig
from rnnlab.model.cells import CELLS

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


def group_limit(run: RunConfig) -> int:
    """The largest ensemble ``run.train.ensemble`` allows for this run's shape and device."""
    setting = run.train.ensemble
    if setting == "off":
        return 1
    if setting != "auto":
        return setting
    if run.model.cell != "elman":  # a gated cell runs its members one after another anyway
        return 1
    from rnnlab.tasks import make_task

    L = make_task(**run.task.model_dump()).length
    B, H = run.train.batch_size, run.model.hidden_size
    op = B * H * H
    device = run.train.device
    on_cpu = device == "cpu" or (device == "auto" and not cuda_available())
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
    """Relative work of one member: steps × sequence length × H × gates (for scheduling only)."""
    m = run.model
    return (run.train.steps + 1) * run.task.seq_len * m.hidden_size * CELLS[m.cell].gates


@functools.cache
def cuda_available() -> bool:
    """``torch.cuda.is_available()`` without importing torch, which the sweep's driver never
    needs (3.3 s of a sweep's start on a GPU host): whether CUDA's driver (``libcuda``) sees a
    device, as CUDA_VISIBLE_DEVICES allows; torch's own answer where torch is loaded already.
    Only ``train.ensemble: auto``'s stack sizes read it: a wrong answer changes how runs are
    grouped, never a number (a member's bits do not depend on its stack)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver (or not Linux)
        return False
    count = ctypes.c_int(0)
    return (
        driver.cuInit(0) == 0
        and driver.cuDeviceGetCount(ctypes.byref(count)) == 0
        and count.value > 0
    )
