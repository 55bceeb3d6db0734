"""The tracking boundary: measurements in, MLflow runs out.

Training yields :class:`rnnlab.train.Measurement`; a tracker stores them. ``MlflowTracker``
is the production one (embedded SQLite store by default, any MLflow tracking URI works);
``MemoryTracker`` records into dicts for unit tests. Nothing else in rnnlab imports MLflow.

MLflow schema (see README, "MLflow schema"):
  experiment  = the experiment file's ``name``; its description is the experiment note.
  parent run  = one per ``rnnlab sweep`` invocation (tag rnnlab.role=sweep).
  child run   = one per grid point, named like ``adding-T100-tanh-orthogonal1-s0``;
                params = every leaf of the resolved config by dotted key;
                tags   = rnnlab.run_key, rnnlab.status (finished | diverged | failed),
                         rnnlab.version, mlflow.source.git.commit;
                metrics at training step s (see rnnlab.train), plus ``grad_h/init`` and
                ``grad_h/final``: the first and last gradient profiles with MLflow step = the
                distance k = L − t, so the UI charts the decay curve;
                artifacts: config.yaml, profiles.parquet (every profile: step, t, k, n_t),
                profile.png (the first and last profile, shown inline by the UI).
SQLite cannot store ±inf: MLflow stores them as ±1.8e308. profiles.parquet keeps them exact.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnnlab import __version__
from rnnlab.config import ConfigError, Experiment, RunConfig
from rnnlab.model.activations import ACTIVATION_COLORS
from rnnlab.train import Measurement
from rnnlab.ui import decay_url, save_view

RESULTS = Path("results")
MAX_BATCH = 1000  # MLflow's per-request metric limit

logging.getLogger("alembic").setLevel(logging.WARNING)
# MLflow logs a failed SQL statement (with its parameters) before raising; rnnlab reports
# the failure itself, in one line (rnnlab.run.sweep.StoreError).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


def default_tracking_uri() -> str:
    """--tracking-uri > $MLFLOW_TRACKING_URI > the embedded store results/mlflow.db."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(RESULTS / 'mlflow.db').absolute()}"
    )


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


class StoreBusy(RuntimeError):
    """Another live rnnlab process is training this experiment into this store."""


LOCK_HEARTBEAT = 20.0
"""Seconds between a lock holder's heartbeats…"""
LOCK_STALE = 120.0
"""…and the silence after which a holder on another host is taken for dead."""


def _process_start(pid: int) -> str:
    """The kernel's start time of a process (tells a reused pid from the original), or ''."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _directory_lock(path: Path):
    """An exclusive flock on a directory: serialises store creation between processes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def profile_frame(profiles: list[tuple[int, np.ndarray]]) -> pd.DataFrame:
    """Tidy table of recorded profiles: one row per (training step, time step t)."""
    frames = []
    for step, n in profiles:
        L = len(n)
        t = np.arange(1, L + 1)
        frames.append(pd.DataFrame({"step": step, "t": t, "k": L - t, "n_t": n}))
    cols = {"step": "int64", "t": "int64", "k": "int64", "n_t": "float64"}
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(cols)).astype(cols)
    )


def _grid(spec: dict) -> dict[str, str]:
    """run_key → run name of every point of an experiment's grid (from its resolved spec)."""
    from rnnlab.config import load_experiment, run_name

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "experiment.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        experiment, grid = load_experiment(path)
    return {run.run_key: run_name(run, experiment.swept_keys()) for run in grid}


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
        try:
            os.kill(int(self.pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


@dataclass
class _Run:
    run_id: str
    run: RunConfig
    name: str
    metrics: list[Metric] = field(default_factory=list)
    profiles: list[tuple[int, np.ndarray]] = field(default_factory=list)


class MlflowTracker:
    """Writes a sweep into an MLflow tracking store, in batches."""

    def __init__(self, tracking_uri: str | None = None):
        self.uri = tracking_uri or default_tracking_uri()
        self._client: MlflowClient | None = None
        self.commit = git_commit()
        self.seconds = 0.0  # time spent in tracking calls: the tracking overhead
        self._runs: dict[int, _Run] = {}
        self.experiment_id: str | None = None
        self.parent_id: str | None = None

    def _timed(fn):
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return wrapper

    def _tags(self) -> dict[str, str]:
        tags = {"rnnlab.version": __version__}
        if self.commit:
            tags["mlflow.source.git.commit"] = self.commit
        return tags

    @property
    def client(self) -> MlflowClient:
        if self._client is None:  # created on first use: an SQLite store is created with it
            self._client = MlflowClient(self.uri)
        return self._client

    def check(self, create: bool = True) -> None:
        """Fail fast (ConfigError, exit 2) when the store cannot be reached or written.

        An SQLite store is checked on the filesystem first (a directory, a read-only or
        missing folder: seconds, not MLflow's minutes of retries) and created under a lock,
        so two processes creating one store do not race in MLflow's schema migrations.
        ``create=False`` (report, ui) refuses a store that does not exist yet."""
        if self.uri.startswith("sqlite:") and sqlite_path(self.uri) is None:
            raise ConfigError(
                [
                    f"cannot use the MLflow tracking store {self.uri}: an in-memory store loses "
                    "every run when rnnlab exits; name a file, e.g. sqlite:////abs/path/mlflow.db"
                ]
            )
        if (db := sqlite_path(self.uri)) is not None:
            self._check_sqlite(db, create)
        quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        saved = {k: os.environ.get(k) for k in quick}
        try:
            os.environ.update(quick)  # a dead server answers in seconds, not after minutes
            if db is not None:
                with _directory_lock(db.parent):
                    self.client.search_experiments(max_results=1)
            else:
                self.client.search_experiments(max_results=1)
        except Exception as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                [f"cannot use the MLflow tracking store {self.uri}: {detail[:300]}"]
            ) from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _check_sqlite(self, db: Path, create: bool) -> None:
        def refuse(why: str) -> None:
            raise ConfigError([f"cannot use the MLflow tracking store {self.uri}: {why}"])

        if db.is_dir():
            refuse(f"{db} is a directory; name a database file, e.g. {db / 'mlflow.db'}")
        if not db.exists():
            if not create:
                refuse("no store there yet; run `make sweep` (or rnnlab sweep) first")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                refuse(f"cannot create {db.parent} ({e.strerror})")
        if not db.parent.is_dir():
            refuse(f"{db.parent} is not a directory")
        if not os.access(db.parent, os.W_OK | os.X_OK):  # also false on a read-only filesystem
            refuse(f"{db.parent} is not writable (read-only filesystem or permissions)")
        if db.exists() and not os.access(db, os.R_OK | os.W_OK):
            refuse(f"{db} is not writable (read-only filesystem or permissions)")
        try:  # os.access trusts the mode bits: some filesystems (/proc, /sys) refuse anyway
            tempfile.TemporaryFile(dir=db.parent).close()
        except OSError as e:
            refuse(f"cannot write in {db.parent} ({e.strerror})")

    def check_experiment(self, name: str):
        """The store's live experiment of that name (or None); refuses (exit 2) a name the
        store holds as deleted, before any work."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise ConfigError(
                [
                    f"experiment {name!r} was deleted in {self.uri}; restore it "
                    f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or "
                    "choose another name"
                ]
            )
        return exp

    @_timed
    def open_experiment(self, experiment: Experiment) -> None:
        """Get or create the MLflow experiment; its note is the experiment's description."""
        exp = self.check_experiment(experiment.name)
        if exp is None:
            location = None
            if (db := sqlite_path(self.uri)) is not None:  # artifacts beside the store
                root = (db.parent / "artifacts").absolute()
                folder = (root / experiment.name).resolve()
                if folder.parent != root.resolve():  # names are validated; never escape
                    raise ConfigError([f"name {experiment.name!r}: not a plain folder name"])
                location = folder.as_uri()
            self.experiment_id = self.client.create_experiment(
                experiment.name, artifact_location=location
            )
        else:
            self.experiment_id = exp.experiment_id
        if experiment.description:
            self.client.set_experiment_tag(
                self.experiment_id, "mlflow.note.content", experiment.description
            )
        # MLflow 3's UI opens GenAI pages for other kinds; this one is model training.
        self.client.set_experiment_tag(
            self.experiment_id, "mlflow.experimentKind", "custom_model_development"
        )
        save_view(self.client, self.experiment_id)  # the decay curves in one click (rnnlab.ui)

    # ------------------------------------------------------------------ the lock
    # One live rnnlab process trains an experiment at a time, so a run_key is never trained
    # twice. The lock is a registered model named after the experiment in the store's model
    # registry: its creation is atomic in every MLflow store (a unique name), it works the
    # same for SQLite and for a tracking server shared by several machines, and it is
    # deleted on release. A holder killed without releasing (SIGKILL, power loss) is found
    # dead by the next process, by its pid on the same host or by its silent heartbeat.

    def _lock_name(self) -> str:
        return f"rnnlab-lock-experiment-{self.experiment_id}"

    def _holder_alive(self, tags: dict[str, str]) -> bool:
        if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
            pid = int(tags["pid"])
            start = tags.get("pid_start", "")
            return _pid_alive(pid) and (not start or _process_start(pid) == start)
        try:
            return time.time() - float(tags.get("heartbeat", "0")) < LOCK_STALE
        except ValueError:
            return False

    @_timed
    def acquire(self, experiment: Experiment) -> int:
        """Hold the experiment's lock (raises StoreBusy if a live process holds it); then
        close sweep parent runs left RUNNING by dead processes as KILLED. Returns how many."""
        name, pid = self._lock_name(), os.getpid()
        mine = {
            "token": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": str(pid),
            "pid_start": _process_start(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "heartbeat": f"{time.time():.0f}",
            "experiment": experiment.name,
        }
        for _ in range(5):
            try:
                self.client.create_registered_model(
                    name, tags=mine, description=f"rnnlab: {experiment.name!r} is being trained"
                )
                break
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            held = self._lock_tags(name)
            if held is None:
                continue  # released meanwhile: try again
            if self._holder_alive(held):
                raise StoreBusy(
                    f"experiment {experiment.name!r} is being trained into {self.uri} by "
                    f"another rnnlab (pid {held.get('pid')} on {held.get('host')}, since "
                    f"{held.get('since')}); wait for it to finish, then run this again to "
                    "resume"
                )
            self._break_stale(name, held)
        else:
            raise StoreBusy(f"could not take the lock of experiment {experiment.name!r}")
        self._lock = mine
        self._beat = threading.Event()
        threading.Thread(target=self._heartbeat, args=(name, self._beat), daemon=True).start()
        return self._close_dead_parents()

    def _lock_tags(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self.client.get_registered_model(name).tags)
        except MlflowException:
            return None

    def _break_stale(self, name: str, held: dict[str, str]) -> None:
        """Take a dead holder's lock away. Renaming is atomic, so of several processes that
        find the same stale lock exactly one moves it; one that moved a fresh lock (taken
        between its look and its rename) puts it back."""
        aside = f"{name}-stale-{uuid.uuid4().hex[:8]}"
        try:
            self.client.rename_registered_model(name, aside)
        except MlflowException:
            return
        if (self._lock_tags(aside) or {}).get("token") != held.get("token"):
            with contextlib.suppress(MlflowException):
                self.client.rename_registered_model(aside, name)
            return
        self.client.delete_registered_model(aside)

    def _heartbeat(self, name: str, stop: threading.Event) -> None:
        client = MlflowClient(self.uri)  # its own client: this runs beside the writer
        while not stop.wait(LOCK_HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat is not an error
                client.set_registered_model_tag(name, "heartbeat", f"{time.time():.0f}")

    def _close_dead_parents(self) -> int:
        """Sweep parent runs still RUNNING belong to dead processes (we hold the lock)."""
        dead = self.client.search_runs(
            [self.experiment_id],
            "tags.`rnnlab.role` = 'sweep' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        for r in dead:
            self.client.set_terminated(r.info.run_id, "KILLED")
        return len(dead)

    @_timed
    def release(self) -> None:
        """Give the experiment's lock back (only if it is still ours)."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        self._beat.set()
        self._lock = None
        name = self._lock_name()
        with contextlib.suppress(MlflowException):
            if (self._lock_tags(name) or {}).get("token") == lock["token"]:
                self.client.delete_registered_model(name)

    @_timed
    def prior_runs(self) -> list[PriorRun]:
        """Every live (not deleted) grid-point run already in the experiment."""
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            for r in page:
                tags = r.data.tags
                if "rnnlab.run_key" in tags:
                    out.append(
                        PriorRun(
                            r.info.run_id,
                            tags["rnnlab.run_key"],
                            tags.get("rnnlab.status", ""),
                            r.info.status,
                            tags.get("rnnlab.host"),
                            tags.get("rnnlab.pid"),
                        )
                    )
            token = page.token
            if not token:
                return out

    @_timed
    def mark_killed(self, run_id: str) -> None:
        """Close a run whose process died without closing it."""
        self.client.set_tag(run_id, "rnnlab.status", "killed")
        self.client.set_terminated(run_id, "KILLED")

    @_timed
    def supersede(self, run_id: str) -> None:
        """Soft-delete a finished run that --rerun replaces (`mlflow runs restore` undoes it)."""
        self.client.delete_run(run_id)

    @_timed
    def start_sweep(self, experiment: Experiment, n_runs: int) -> None:
        """Open the parent run of this sweep invocation; child runs nest under it."""
        tags = self._tags() | {"rnnlab.role": "sweep", "rnnlab.grid_size": str(n_runs)}
        name = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
        self.parent_id = self.client.create_run(
            self.experiment_id, run_name=name, tags=tags
        ).info.run_id
        spec = experiment.model_dump(mode="json")
        self.client.log_batch(
            self.parent_id, params=[Param("sweep", yaml.safe_dump(spec["sweep"])[:6000])]
        )
        self.client.log_text(
            self.parent_id, yaml.safe_dump(spec, sort_keys=False), "experiment.yaml"
        )
        self.client.log_dict(self.parent_id, _grid(spec), "grid.json")  # what `report` draws

    @_timed
    def start_run(
        self, handle: int, run: RunConfig, name: str, tags: dict[str, str] | None = None
    ) -> None:
        tags = (
            self._tags()
            | (tags or {})
            | {
                "rnnlab.run_key": run.run_key,
                "rnnlab.status": "running",
                "rnnlab.host": socket.gethostname(),
                "rnnlab.pid": str(os.getpid()),
            }
        )
        if color := ACTIVATION_COLORS.get(run.model.activation):  # the figures' colours in the UI
            tags["mlflow.runColor"] = color
        if self.parent_id:
            tags["mlflow.parentRunId"] = self.parent_id
        info = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info
        params = [Param(k, str(v)) for k, v in run.params().items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(info.run_id, params=params[i : i + 100])
        self._runs[handle] = _Run(info.run_id, run, name)

    @_timed
    def log(self, handle: int, m: Measurement) -> None:
        r = self._runs[handle]
        ts = int(time.time() * 1000)
        r.metrics += [Metric(k, float(v), ts, m.step) for k, v in m.metrics.items()]
        if m.profile is not None:
            r.profiles.append((m.step, m.profile))
        if len(r.metrics) >= MAX_BATCH:
            self._flush(r)

    def _flush(self, r: _Run) -> None:
        for i in range(0, len(r.metrics), MAX_BATCH):
            self.client.log_batch(r.run_id, metrics=r.metrics[i : i + MAX_BATCH])
        r.metrics = []

    @_timed
    def end_run(
        self, handle: int, status: str, error: str | None = None, step: int | None = None
    ) -> str:
        """Flush, store profiles and config, close the run (finished|diverged|failed|killed)."""
        r = self._runs.pop(handle)
        ts = int(time.time() * 1000)
        if r.profiles:  # the decay curves, charted by the UI over the distance k
            for key, (_, n) in (("grad_h/init", r.profiles[0]), ("grad_h/final", r.profiles[-1])):
                back = np.asarray(n, dtype=np.float64)[::-1]  # n_{L−k} for k = 0, 1, …
                r.metrics += [Metric(key, float(v), ts, k) for k, v in enumerate(back)]
                # log10 n_{L−k}/n_L: straight lines on the UI's default linear axis; underflow
                # (n = 0) and inf are left out, so a curve ends where the profile left range
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.log10(back / back[0])
                r.metrics += [
                    Metric(f"{key}_log10", float(v), ts, k)
                    for k, v in enumerate(rel)
                    if np.isfinite(v)
                ]
        self._flush(r)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            frame = profile_frame(r.profiles)
            frame.to_parquet(tmp / "profiles.parquet", index=False)
            if r.profiles:  # a small figure the UI's artifact view shows inline
                from rnnlab.report import run_profile_figure

                run_profile_figure(frame, tmp / "profile.png", title=r.name)
            (tmp / "config.yaml").write_text(
                yaml.safe_dump(r.run.model_dump(mode="json"), sort_keys=False)
            )
            if error:
                (tmp / "error.txt").write_text(error)
            self.client.log_artifacts(r.run_id, str(tmp))
        mlflow_status = {"finished": "FINISHED", "diverged": "FINISHED", "killed": "KILLED"}.get(
            status, "FAILED"
        )
        self.client.set_terminated(r.run_id, mlflow_status)  # closed first, then labelled:
        if status == "diverged" and step is not None:  # a run tagged done is always closed
            self.client.set_tag(r.run_id, "rnnlab.diverged_step", str(step))
        self.client.set_tag(r.run_id, "rnnlab.status", status)
        return r.run_id

    def abandon(self, handle: int, error: str) -> None:
        """Close a run as FAILED writing nothing else (its buffered metrics are dropped): for a
        store that refuses writes, where closing is the one update that may still pass."""
        r = self._runs.pop(handle)
        try:
            self.client.set_terminated(r.run_id, "FAILED")
            self.client.set_tag(r.run_id, "rnnlab.status", "failed")
        except Exception:
            pass  # left RUNNING: the next sweep closes it as KILLED (its process is gone)

    @_timed
    def end_sweep(self, status: str, summary: dict[str, Any]) -> None:
        if self.parent_id:
            self.client.log_batch(
                self.parent_id,
                metrics=[
                    Metric(f"sweep/{k}", float(v), int(time.time() * 1000), 0)
                    for k, v in summary.items()
                ],
            )
            self.client.set_terminated(
                self.parent_id, "FINISHED" if status == "finished" else status.upper()
            )

    def runs_url(self) -> str:
        """The experiment's runs page opened on the decay curves (rnnlab.ui): on the tracking
        server, or under `make ui` for SQLite."""
        host = (
            self.uri.rstrip("/")
            if self.uri.startswith(("http://", "https://"))
            else "http://127.0.0.1:5000"
        )
        return decay_url(host, self.experiment_id)


class MemoryTracker:
    """In-memory recorder with MlflowTracker's interface, for tests."""

    def __init__(self):
        self.seconds = 0.0
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

    def start_sweep(self, experiment: Experiment, n_runs: int) -> None:
        self.sweeps.append({"name": experiment.name, "n_runs": n_runs})

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

    def end_run(
        self, handle: int, status: str, error: str | None = None, step: int | None = None
    ) -> str:
        mlflow_status = {"finished": "FINISHED", "diverged": "FINISHED", "killed": "KILLED"}.get(
            status, "FAILED"
        )
        self.runs[handle] |= {
            "status": status,
            "error": error,
            "step": step,
            "mlflow_status": mlflow_status,
        }
        return self.runs[handle]["run_id"]

    def abandon(self, handle: int, error: str) -> None:
        self.runs[handle] |= {"status": "failed", "error": error, "mlflow_status": "FAILED"}

    def end_sweep(self, status: str, summary: dict[str, Any]) -> None:
        if self.sweeps:
            self.sweeps[-1] |= {"status": status, **summary}

    def runs_url(self) -> str:
        return "(in memory)"
