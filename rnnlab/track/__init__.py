"""The tracking boundary: measurements in, stored runs out.

Training yields :class:`rnnlab.measure.measurement.Measurement`; a tracker stores them. What
the sweep needs of one is :class:`Tracker`; two implement it:

  ``rnnlab.track.mlflow.MlflowTracker``  the production one: an MLflow tracking store
                                         (embedded SQLite by default, any URI works);
  ``rnnlab.track.memory.MemoryTracker``  records into dicts, for unit tests.

``rnnlab.track.lock`` holds the per-experiment lock the MLflow tracker takes while it trains.
Only this package imports MLflow (``rnnlab.report.load`` reads the store back through
``MlflowTracker.client``); importing this module does not (the trackers are imported on
first use), so the CLI can ask for :func:`default_tracking_uri` without loading MLflow.

MLflow schema (docs/measurements.md, "The MLflow schema"; every name in ``rnnlab.measure.names``):
  experiment  = the experiment file's ``name``; its description is the experiment note.
  parent run  = one per ``rnnlab sweep`` invocation (tag rnnlab.role=sweep).
  child run   = one per grid point, named like ``adding-T100-tanh-orthogonal1-s0``;
                params = every leaf of the resolved config by dotted key;
                tags   = rnnlab.run_key, rnnlab.status (running | finished | diverged |
                         failed | killed), rnnlab.version, mlflow.source.git.commit;
                metrics at training step s (see rnnlab.train), plus ``grad_h/init`` and
                ``grad_h/final``: the first and last gradient profiles with MLflow step = the
                distance k = L − t, so the UI charts the decay curve;
                artifacts: config.yaml, profiles.parquet (every profile: step, t, k, n_t),
                profile.png (the first and last profile, shown inline by the UI; drawn
                by the worker that trained the run),
                and <name>.parquet for each table the measurements carried
                (``Measurement.tables``, a ``step`` column in front: jacobian.parquet).
SQLite cannot store ±inf: MLflow stores them as ±1.8e308. profiles.parquet keeps them exact.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rnnlab import lazy_exports

if TYPE_CHECKING:
    from rnnlab.config import Experiment, RunConfig
    from rnnlab.measure.measurement import Measurement

RESULTS = Path("results")


def default_tracking_uri() -> str:
    """--tracking-uri > $MLFLOW_TRACKING_URI > the embedded store results/mlflow.db."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(RESULTS / 'mlflow.db').absolute()}"
    )


def sqlite_path(uri: str) -> Path | None:
    """The database file of an SQLite store's URI; None for any other store, and for an
    in-memory SQLite one (``sqlite://``, ``sqlite:///:memory:``), which has no file."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///")
    return Path(path) if path not in ("", ":memory:") else None


class StoreBusy(RuntimeError):
    """Another live rnnlab process is training this experiment into this store."""


def mlflow_status(status: str) -> str:
    """The MLflow run status that closes a run of this rnnlab status."""
    return {"finished": "FINISHED", "diverged": "FINISHED", "killed": "KILLED"}.get(
        status, "FAILED"
    )


def pid_alive(pid: int) -> bool:
    """Is process ``pid`` running on this host (one we may not signal counts as running)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class PriorRun:
    """A grid-point run already in the store, as resume sees it."""

    run_id: str
    run_key: str
    status: str  # rnnlab.status: running | finished | diverged | failed | killed
    mlflow_status: str  # RUNNING | FINISHED | FAILED | KILLED
    host: str | None
    pid: str | None

    def alive(self) -> bool:
        """Is the process that opened this RUNNING run still running (on this host)?"""
        if self.host != socket.gethostname() or not (self.pid or "").isdigit():
            return (
                self.host is not None and self.host != socket.gethostname()
            )  # cannot tell: assume so
        return pid_alive(int(self.pid))


@runtime_checkable
class Tracker(Protocol):
    """What a sweep (``rnnlab.run.sweep``) needs of a tracker. A run is addressed by a
    ``handle`` the sweep chooses (its grid index) from ``start_run`` to ``end_run``."""

    seconds: float
    """Time spent in tracking calls so far: the tracking overhead the sweep reports."""

    figures: bool
    """Whether it stores each run's profile.png: the sweep's workers then draw it and hand
    it to ``end_run`` (drawing is theirs: the driver is the one writer)."""

    def check(self, create: bool = True) -> None:
        """Fail fast (ConfigError) when the store cannot be reached or written."""

    def open_experiment(self, experiment: Experiment) -> None:
        """Get or create the experiment the runs go into."""

    def acquire(self, experiment: Experiment) -> int:
        """Hold the experiment's lock (StoreBusy if a live process holds it); returns how
        many sweeps left open by dead processes were closed."""

    def release(self) -> None:
        """Give the experiment's lock back."""

    def prior_runs(self) -> list[PriorRun]:
        """Every live grid-point run already in the experiment."""

    def mark_killed(self, run_id: str) -> None:
        """Close a run whose process died without closing it."""

    def supersede(self, run_id: str) -> None:
        """Retire a finished run that ``--rerun`` replaces."""

    def start_sweep(self, experiment: Experiment, grid: dict[str, str], n_runs: int) -> None:
        """Open the parent run of one sweep invocation, of ``n_runs`` to train in the grid
        ``grid`` (run_key → run name of every point)."""

    def start_run(
        self, handle: int, run: RunConfig, name: str, tags: dict[str, str] | None = None
    ) -> None:
        """Open the run of one grid point."""

    def log(self, handle: int, m: Measurement) -> None:
        """Record one measurement (may be buffered until ``end_run``)."""

    def end_run(
        self,
        handle: int,
        status: str,
        error: str | None = None,
        step: int | None = None,
        figure: bytes | None = None,
    ) -> str:
        """Store what is buffered (and ``figure``, the run's profile.png) and close the run as
        ``status``; returns its run id."""

    def abandon(self, handle: int, error: str) -> None:
        """Close a run as failed, writing nothing else (the store refuses writes)."""

    def end_sweep(self, status: str, summary: dict[str, Any]) -> None:
        """Close the parent run with the sweep's counts."""

    def runs_url(self) -> str:
        """Where a user browses the runs."""


_LAZY = {  # name → module: these import MLflow, so only on first use
    "MlflowTracker": "rnnlab.track.mlflow",
    "git_commit": "rnnlab.track.mlflow",
    "profile_frame": "rnnlab.track.mlflow",
    "MemoryTracker": "rnnlab.track.memory",
    "ExperimentLock": "rnnlab.track.lock",
}
__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "RESULTS",
    "PriorRun",
    "StoreBusy",
    "Tracker",
    "default_tracking_uri",
    "mlflow_status",
    "pid_alive",
    "sqlite_path",
    *_LAZY,
]
