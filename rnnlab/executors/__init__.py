"""Where the jobs of a sweep run: one file per executor, one table (see ``base``)."""

from __future__ import annotations

from rnnlab.executors.base import Executor

EXECUTORS = {
    "inline": "rnnlab.executors.inline:Inline",
    "processes": "rnnlab.executors.processes:Processes",
    "ray": "rnnlab.executors.ray:Ray",
    "slurm": "rnnlab.executors.slurm:Slurm",
}
"""Name → class, imported on use (Ray and submitit are optional and slow to import)."""


def make(name: str, **options) -> Executor:
    import importlib

    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
