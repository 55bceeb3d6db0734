"""What a training step reports (:class:`Measurement`) and how many threads take a probe's
host measurements (``measure_threads``).

Torch-free, so that the sweep's driver, which only schedules runs and stores what their
workers send, needs no torch (3.3 s of a sweep's start on a GPU host, before any worker
starts; it still imports it to check ``RNNLAB_TRITON_TILE`` or ``train.device: cuda`` where
set): ``rnnlab.train`` yields these, ``rnnlab.track`` stores them, and the workers' pickles
name this module.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Measurement:
    """What one training step measured."""

    step: int
    metrics: dict[str, float]
    profile: np.ndarray | None = None
    """n_t for t = 1..L (float64, index t−1), on probe steps."""
    diverged: bool = False
    tables: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """More per-step tables: artifact name (``names.TABLES``) → columns of equal length. A
    tracker stores each name's tables over the run as one ``<name>.parquet`` with a ``step``
    column in front (the input-gradient profile at probe steps, the Jacobian spectrum at the
    first and last probe)."""


MEASURE_THREADS = "RNNLAB_MEASURE_THREADS"
"""Environment variable: how many threads take probe steps' host measurements
(``_host_measures``) off the training loop, which goes on training while they run; 0 runs
them in the loop. Default where training runs on a GPU (whose host would otherwise wait):
the cores this process may use, less the one that drives the GPU, at most
``DEFAULT_MAX_THREADS``; the local executor gives each worker its share (cores ÷ workers,
less one), a Ray task its ``resources.cpus`` less one (a Ray cluster's workers do not see
the driver's environment), each capped alike. Default on a CPU: 0 (its
cores train; on 2 cores a thread beside training took 0.75× to 1.2× the time, within the
machine's noise). The numbers do not depend on it: each measurement is one member's
operations on one thread (``_one_thread``; ``_Later`` sets it in each thread), in the same
order. While the newest probe is measured, the loop yields nothing after it, so a stop is
seen that much later; what was synced but not yet yielded is not logged (a run killed then
is trained again on resume, to the same bits)."""


DEFAULT_MAX_THREADS = 4
"""The default's cap. The measurements are many small float64 operations, each holding
Python's lock while it is dispatched, and the thread that drives the GPU needs that lock for
every launch: more threads starve it. An H200 host (16 cores), a stack of 64 tanh networks
at (100, 64, 64), 20 steps, probes at the first and last: 10.4 s with 0 threads, 4.7 s
with 2, 4.4 s with 4, 7.2 s with 15 (64 networks one after another: about 9.7 s, 64 times
the median of 4 runs of one, 0.151 s)."""


def measure_threads(share: int | None = None, device: str = "cuda") -> int:
    """``RNNLAB_MEASURE_THREADS``; else none where training runs on the CPU; else ``share``
    (an executor's), else one per core this process may use beyond the first; the defaults
    at most ``DEFAULT_MAX_THREADS``."""
    raw = os.environ.get(MEASURE_THREADS, "").strip()
    if not raw and device != "cuda":
        return 0
    if not raw:
        return min(DEFAULT_MAX_THREADS, usable_cores() - 1 if share is None else share)
    if not re.fullmatch(r"[0-9]{1,4}", raw):
        raise ValueError(
            f"{MEASURE_THREADS}={raw[:40]!r}: expected a whole number of threads, 0 to 9999"
        )
    return int(raw)


def usable_cores() -> int:
    """The cores this process may run on: its affinity (a SLURM job's cpuset, ``taskset``; a
    container's CPU quota does not show here)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
