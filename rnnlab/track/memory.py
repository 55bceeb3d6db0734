"""A :class:`rnnlab.track.Tracker` that records into dicts: the sweep without a store, for tests."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

from rnnlab.track import PriorRun, mlflow_status

if TYPE_CHECKING:
    from rnnlab.config import Experiment, RunConfig
    from rnnlab.measure.measurement import Measurement


class MemoryTracker:
    """In-memory recorder with MlflowTracker's interface, for tests."""

    def __init__(self, figures: bool = False):
        self.seconds = 0.0
        self.figures = figures  # ask the workers for each run's profile.png (kept as bytes)
        self.runs: dict[int, dict[str, Any]] = {}  # grid index → its latest run
        self.history: list[dict[str, Any]] = []  # every run ever started, like a store
        self.sweeps: list[dict[str, Any]] = []

    def check(self, create: bool = True) -> None:
        pass

    def open_experiment(self, experiment: Experiment) -> None:
        self.name = experiment.name

    def acquire(self, experiment: Experiment) -> int:
        return 0

    def release(self) -> None:
        pass

    def prior_runs(self) -> list[PriorRun]:
        return [
            PriorRun(
                r["run_id"],
                r["run_key"],
                r["status"],
                r["mlflow_status"],
                socket.gethostname(),
                str(os.getpid()) if r["status"] == "running" else None,
            )
            for r in self.history
            if not r.get("deleted")
        ]

    def mark_killed(self, run_id: str) -> None:
        self._by_id(run_id).update(status="killed", mlflow_status="KILLED")

    def supersede(self, run_id: str) -> None:
        self._by_id(run_id)["deleted"] = True

    def _by_id(self, run_id: str) -> dict[str, Any]:
        return next(r for r in self.history if r["run_id"] == run_id)

    def start_sweep(self, experiment: Experiment, grid: dict[str, str], n_runs: int) -> None:
        self.sweeps.append({"name": experiment.name, "n_runs": n_runs, "grid": grid})

    def start_run(
        self, handle: int, run: RunConfig, name: str, tags: dict[str, str] | None = None
    ) -> None:
        record = {
            "run_id": str(len(self.history)),
            "run_key": run.run_key,
            "name": name,
            "tags": dict(tags or {}),
            "params": run.params(),
            "metrics": {},
            "profiles": [],
            "tables": {},
            "status": "running",
            "mlflow_status": "RUNNING",
        }
        self.history.append(record)
        self.runs[handle] = record

    def log(self, handle: int, m: Measurement) -> None:
        r = self.runs[handle]
        for k, v in m.metrics.items():
            r["metrics"].setdefault(k, []).append((m.step, v))
        if m.profile is not None:
            r["profiles"].append((m.step, m.profile))
        for name, columns in m.tables.items():
            r["tables"].setdefault(name, []).append((m.step, columns))

    def end_run(
        self,
        handle: int,
        status: str,
        error: str | None = None,
        step: int | None = None,
        figure: bytes | None = None,
    ) -> str:
        self.runs[handle] |= {
            "status": status,
            "error": error,
            "step": step,
            "figure": figure,
            "mlflow_status": mlflow_status(status),
        }
        return self.runs[handle]["run_id"]

    def abandon(self, handle: int, error: str) -> None:
        self.runs[handle] |= {"status": "failed", "error": error, "mlflow_status": "FAILED"}

    def end_sweep(self, status: str, summary: dict[str, Any]) -> None:
        if self.sweeps:
            self.sweeps[-1] |= {"status": status, **summary}

    def runs_url(self) -> str:
        return "(in memory)"
