"""Where the jobs of a sweep run: one file per executor, one table (see ``base``)."""

from __future__ import annotations

from rnnlab.run.executors.base import Executor

EXECUTORS = {
    "inline": "rnnlab.run.executors.inline:Inline",
    "processes": "rnnlab.run.executors.processes:Processes",
    "ray": "rnnlab.run.executors.ray:Ray",
    "slurm": "rnnlab.run.executors.slurm:Slurm",
}
"""Name → class, imported on use (Ray and submitit are optional and slow to import)."""


def make(name: str, **options) -> Executor:
    import importlib

    module, _, cls = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)
