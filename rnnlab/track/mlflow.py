"""The production :class:`rnnlab.track.Tracker`: a sweep written into an MLflow tracking store.

The store is checked before any work (reachable, writable, an SQLite file created under a
lock); runs are written in batches (an SQLite store's metrics straight into its tables:
``_SqlMetrics``); each run's profiles, config and profile figure become its artifacts (the
schema: ``rnnlab.track``). The experiment's lock is ``rnnlab.track.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml
from mlflow.entities import Metric, Param
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient
from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

from rnnlab import __version__
from rnnlab.config import ConfigError, Experiment, RunConfig
from rnnlab.measure import names
from rnnlab.model.activations import ACTIVATION_COLORS
from rnnlab.model.cells import CELLS
from rnnlab.track import PriorRun, default_tracking_uri, mlflow_status, sqlite_path
from rnnlab.track.lock import ExperimentLock
from rnnlab.ui import decay_url, save_view, ui_base

if TYPE_CHECKING:
    from rnnlab.measure.measurement import Measurement

MAX_BATCH = 1000  # MLflow's per-request metric limit
FLUSH_SECONDS = 2.0
"""A training run's metrics reach the store at least this often (and every ``MAX_BATCH``
values), so the UI's charts follow it: batching by size alone held a run's first ~400 steps
back until then."""

logging.getLogger("alembic").setLevel(logging.WARNING)
# MLflow logs a failed SQL statement (with its parameters) before raising; rnnlab reports
# the failure itself, in one line (rnnlab.run.sweep.StoreError).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


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


@dataclass
class _Run:
    run_id: str
    run: RunConfig
    name: str
    artifact_uri: str
    """Where its artifacts go, from ``create_run``: ``MlflowClient.log_artifacts`` looks it up
    with a ``get_run`` each time, where the writer opens the repository as it would."""
    metrics: list[Metric] = field(default_factory=list)
    profiles: list[tuple[int, np.ndarray]] = field(default_factory=list)
    tables: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    latest: dict[str, tuple] = field(default_factory=dict)
    """Metric key → its latest row so far (``_SqlMetrics``): this process opened the run and
    is its only writer, so it knows every value the run holds."""
    flushed: float = field(default_factory=lambda: time.monotonic())
    """When its metrics last went to the store (``time.monotonic``)."""


class _SqlMetrics:
    """A run's metrics written into an SQLite store's own tables, one transaction per flush.

    What ``MlflowClient.log_batch`` stores, in the same rows: every metric in ``metrics``, and
    per key the latest one — greatest (step, timestamp, value), MLflow's rule — in
    ``latest_metrics``; NaN as value 0 with is_nan, ±inf as ±1.8e308 (MLflow's
    ``sanitize_metric_value``). log_batch builds an ORM object per value and re-reads the
    latest rows on every call: about 100 µs a metric, and a default sweep logs ~70,000, which
    made it most of the sweep writer's time. Here they are two executemany statements on
    MLflow's own table definitions (tests/test_end_to_end.py checks the store reads back the
    same through MLflow's API as after log_batch). Used only for runs this process created
    (it holds the experiment's lock: ``rnnlab.track.lock``)."""

    def __init__(self, store, metrics_table, latest_table):
        self.store = store
        self.metrics_table = metrics_table
        self.latest_table = latest_table

    @classmethod
    def of(cls, client: MlflowClient) -> _SqlMetrics | None:
        """The writer for the client's store, or None where it is not MLflow's SQL store
        with the tables expected (log_batch is used then)."""
        try:
            from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = client._tracking_client.store
        except (ImportError, AttributeError):
            return None
        if not isinstance(store, SqlAlchemyStore) or store.db_type != "sqlite":
            return None
        columns = {"run_uuid", "key", "value", "timestamp", "step", "is_nan"}
        tables = (SqlMetric.__table__, SqlLatestMetric.__table__)
        if any(set(t.columns.keys()) != columns for t in tables):
            return None
        return cls(store, *tables)

    def write(self, r: _Run) -> None:
        from sqlalchemy.dialects.sqlite import insert

        rows, seen, changed = [], set(), {}
        latest = dict(r.latest)  # the run's, once this transaction commits
        for m in r.metrics:
            is_nan, value = self.store.sanitize_metric_value(m.value)
            row = (m.key, value, m.timestamp, m.step, is_nan)
            if row in seen:  # log_batch drops a repeated metric within a call
                continue
            seen.add(row)
            rows.append(row)
            old = latest.get(m.key)
            if old is None or _recency(row) > _recency(old):
                latest[m.key] = changed[m.key] = row
        if not rows:
            return

        def as_dicts(items):
            return [
                {
                    "run_uuid": r.run_id,
                    "key": k,
                    "value": v,
                    "timestamp": ts,
                    "step": s,
                    "is_nan": n,
                }
                for k, v, ts, s, n in items
            ]

        with self.store.ManagedSessionMaker(read_only=False) as session:
            # A row already stored (the whole row is the key: a flush sent again after an
            # interrupt) is skipped, as log_batch skips it
            session.execute(self.metrics_table.insert().prefix_with("OR IGNORE"), as_dicts(rows))
            if changed:
                upsert = insert(self.latest_table).prefix_with("OR REPLACE")
                session.execute(upsert, as_dicts(changed.values()))
        r.latest = latest  # only what was committed: a failed write leaves it as it was


def _recency(row: tuple) -> tuple:
    """MLflow's order of a run's values of one key: (step, timestamp, value), the value as
    stored (NaN as 0); the greatest is the key's latest. ``row``: (key, value, timestamp,
    step, is_nan)."""
    _, value, timestamp, step, _ = row
    return step, timestamp, value


def table_frame(step: int, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """One step's table (``Measurement.tables``) with the training step in front."""
    return pd.DataFrame({"step": step, **{k: np.asarray(v) for k, v in columns.items()}})


def _create_store(db: Path) -> None:
    """A new SQLite store at ``db``, made whole or not at all: built in a temporary file beside
    it, which then takes its name. A Ctrl-C or a crash meanwhile leaves no store, so the next
    command creates it afresh, rather than a half-migrated one that MLflow refuses ever after.
    Called under the folder's lock, so a temporary file found there was left by a creator that
    died (killed, out of memory): removed. A link to a store yet to be made is followed.

    MLflow builds a new store's schema by running its migrations one by one: 1.3–1.6 s on the
    2-core CPU, the same every time. The first store is built so; an empty copy of it (no
    experiment) is kept in rnnlab's cache, keyed by MLflow's version (``_template``), and later
    stores start from a copy of that (0.03 s), MLflow adding the Default experiment where
    each store lives, as it does in a new store."""
    db = db.resolve()
    for stale in db.parent.glob(f".{glob.escape(db.name)}.*.creating*"):
        stale.unlink(missing_ok=True)
    template = _template()
    tmp = None
    if template is not None and template.is_file():
        with contextlib.suppress(Exception):  # a damaged template: built afresh below
            tmp = _build(db, template)
        if tmp is None:
            template.unlink(missing_ok=True)
    if tmp is None:
        tmp = _build(db, None)
        if template is not None:
            _keep_template(tmp, template)
    try:
        os.replace(tmp, db)
    finally:
        _remove(tmp)


def _build(db: Path, template: Path | None) -> Path:
    """A whole store in a new temporary file beside ``db`` (a new name each time: MLflow keeps
    a store per URI for the life of the process), from ``template`` or by MLflow's migrations;
    nothing left behind if that fails."""
    tmp = db.with_name(f".{db.name}.{uuid.uuid4().hex[:12]}.creating")
    client = None
    try:
        if template is not None:
            shutil.copyfile(template, tmp)
        client = MlflowClient(f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)  # the schema, and the Default experiment
        return tmp
    except BaseException:
        _remove(tmp)
        raise
    finally:
        if client is not None:
            _close(client)  # before the file moves


def _template() -> Path | None:
    """Where the empty store for this MLflow version is kept ($XDG_CACHE_HOME/rnnlab, else
    ~/.cache/rnnlab); None where there is no home to keep it in."""
    import mlflow

    try:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home directory
        return None
    return root / "rnnlab" / f"mlflow-{mlflow.__version__}-empty-store.db"


def _keep_template(store: Path, template: Path) -> None:
    """Keep an empty copy of the new ``store`` (its schema; the Default experiment removed, as
    its folder and time are the store's) as ``template``; quietly nothing if it cannot be."""
    part = template.with_name(f".{template.name}.{uuid.uuid4().hex[:12]}")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store, part)
        with contextlib.closing(sqlite3.connect(part)) as con:
            con.execute("DELETE FROM experiment_tags")
            con.execute("DELETE FROM experiments")
            con.commit()
        os.replace(part, template)
    except (OSError, sqlite3.Error):
        pass
    finally:
        _remove(part)


def _remove(path: Path) -> None:
    """An SQLite file and its journals, if there."""
    for leftover in (path, *(path.with_name(path.name + x) for x in ("-journal", "-wal", "-shm"))):
        leftover.unlink(missing_ok=True)


def _close(client: MlflowClient) -> None:
    """Close the connections of an SQLite store's client (MLflow keeps them pooled)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is not None and hasattr(store, "engine"):
        store.engine.dispose()


class MlflowTracker:
    """Writes a sweep into an MLflow tracking store, in batches."""

    figures = True  # each run's profile.png, drawn by the sweep's workers

    def __init__(self, tracking_uri: str | None = None):
        self.uri = tracking_uri or default_tracking_uri()
        self._client: MlflowClient | None = None
        self.commit = git_commit()
        self.seconds = 0.0  # time spent in tracking calls: the tracking overhead
        self._runs: dict[int, _Run] = {}
        self._lock: ExperimentLock | None = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None

    def _timed(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(self, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return wrapper

    def _tags(self) -> dict[str, str]:
        tags = {names.TAG_VERSION: __version__}
        if self.commit:
            tags[names.MLFLOW_GIT_COMMIT] = self.commit
        return tags

    @property
    def client(self) -> MlflowClient:
        if self._client is None:  # created on first use: an SQLite store is created with it
            self._client = MlflowClient(self.uri)
        return self._client

    # ------------------------------------------------------------------ the store
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
                    if not db.exists():
                        _create_store(db)
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

    def experiments(self) -> dict[str, str]:
        """Name → id of every live experiment in the store (MLflow's own Default left out)."""
        return {
            e.name: e.experiment_id for e in self.client.search_experiments() if e.name != "Default"
        }

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

    def save_view(self, experiment_id: str) -> None:
        """Store the decay-curve view (``rnnlab.ui``) on an experiment."""
        save_view(self.client, experiment_id)

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
                self.experiment_id, names.MLFLOW_NOTE, experiment.description
            )
        # MLflow 3's UI opens GenAI pages for other kinds; this one is model training.
        self.client.set_experiment_tag(
            self.experiment_id, names.MLFLOW_EXPERIMENT_KIND, "custom_model_development"
        )
        self.save_view(self.experiment_id)  # the decay curves in one click (rnnlab.ui)

    # ------------------------------------------------------------------ one trainer at a time
    @_timed
    def acquire(self, experiment: Experiment) -> int:
        """Hold the experiment's lock (raises StoreBusy if a live process holds it); then
        close sweep parent runs left RUNNING by dead processes as KILLED. Returns how many."""
        lock = ExperimentLock(self.client, self.uri, self.experiment_id, experiment.name)
        lock.acquire()
        self._lock = lock
        return self._close_dead_parents()

    def _close_dead_parents(self) -> int:
        """Sweep parent runs still RUNNING belong to dead processes (we hold the lock)."""
        dead = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{names.TAG_ROLE}` = '{names.ROLE_SWEEP}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        for r in dead:
            self.client.set_terminated(r.info.run_id, "KILLED")
        return len(dead)

    @_timed
    def release(self) -> None:
        """Give the experiment's lock back (only if it is still ours)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------ runs
    @_timed
    def prior_runs(self) -> list[PriorRun]:
        """Every live (not deleted) grid-point run already in the experiment."""
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            for r in page:
                tags = r.data.tags
                if names.TAG_RUN_KEY in tags:
                    out.append(
                        PriorRun(
                            r.info.run_id,
                            tags[names.TAG_RUN_KEY],
                            tags.get(names.TAG_STATUS, ""),
                            r.info.status,
                            tags.get(names.TAG_HOST),
                            tags.get(names.TAG_PID),
                        )
                    )
            token = page.token
            if not token:
                return out

    @_timed
    def mark_killed(self, run_id: str) -> None:
        """Close a run whose process died without closing it."""
        self.client.set_tag(run_id, names.TAG_STATUS, "killed")
        self.client.set_terminated(run_id, "KILLED")

    @_timed
    def supersede(self, run_id: str) -> None:
        """Soft-delete a finished run that --rerun replaces (`mlflow runs restore` undoes it)."""
        self.client.delete_run(run_id)

    @_timed
    def start_sweep(self, experiment: Experiment, grid: dict[str, str], n_runs: int) -> None:
        """Open the parent run of this sweep invocation; child runs nest under it. ``grid``:
        run_key → run name of every grid point (``grid.json``: what ``report`` draws)."""
        tags = self._tags() | {names.TAG_ROLE: names.ROLE_SWEEP, names.TAG_GRID_SIZE: str(n_runs)}
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
        self.client.log_dict(self.parent_id, grid, "grid.json")  # what `report` draws

    @_timed
    def start_run(
        self, handle: int, run: RunConfig, name: str, tags: dict[str, str] | None = None
    ) -> None:
        tags = (
            self._tags()
            | (tags or {})
            | {
                names.TAG_RUN_KEY: run.run_key,
                names.TAG_STATUS: "running",
                names.TAG_HOST: socket.gethostname(),
                names.TAG_PID: str(os.getpid()),
            }
        )
        if run.model.cell != "elman":  # the figures' colours in the UI: a gated cell's own
            tags[names.MLFLOW_RUN_COLOR] = CELLS[run.model.cell].color
        elif color := ACTIVATION_COLORS.get(run.model.activation):
            tags[names.MLFLOW_RUN_COLOR] = color
        if self.parent_id:
            tags[names.MLFLOW_PARENT_RUN] = self.parent_id
        info = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info
        params = [Param(k, str(v)) for k, v in run.params().items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(info.run_id, params=params[i : i + 100])
        self._runs[handle] = _Run(info.run_id, run, name, info.artifact_uri)

    @_timed
    def log(self, handle: int, m: Measurement) -> None:
        r = self._runs[handle]
        ts = int(time.time() * 1000)
        r.metrics += [Metric(k, float(v), ts, m.step) for k, v in m.metrics.items()]
        if m.profile is not None:
            r.profiles.append((m.step, m.profile))
        for name, columns in m.tables.items():
            r.tables.setdefault(name, []).append(table_frame(m.step, columns))
        if len(r.metrics) >= MAX_BATCH or time.monotonic() - r.flushed >= FLUSH_SECONDS:
            self._flush(r)

    def _flush(self, r: _Run) -> None:
        if self._sql is not None:
            self._sql.write(r)
        else:
            for i in range(0, len(r.metrics), MAX_BATCH):
                self.client.log_batch(r.run_id, metrics=r.metrics[i : i + MAX_BATCH])
        r.metrics = []
        r.flushed = time.monotonic()

    @functools.cached_property
    def _sql(self) -> _SqlMetrics | None:
        """The direct metric writer for an SQLite store (None for a tracking server)."""
        return _SqlMetrics.of(self.client) if sqlite_path(self.uri) is not None else None

    @_timed
    def end_run(
        self,
        handle: int,
        status: str,
        error: str | None = None,
        step: int | None = None,
        figure: bytes | None = None,
    ) -> str:
        """Flush, store profiles, config and ``figure`` (profile.png), close the run
        (finished|diverged|failed|killed)."""
        r = self._runs.pop(handle)
        ts = int(time.time() * 1000)
        if r.profiles:  # the decay curves, charted by the UI over the distance k
            curves = (
                (names.PROFILE_INIT, names.PROFILE_INIT_LOG10, r.profiles[0]),
                (names.PROFILE_FINAL, names.PROFILE_FINAL_LOG10, r.profiles[-1]),
            )
            for key, log_key, (_, n) in curves:
                back = np.asarray(n, dtype=np.float64)[::-1]  # n_{L−k} for k = 0, 1, …
                r.metrics += [Metric(key, float(v), ts, k) for k, v in enumerate(back)]
                # log10 n_{L−k}/n_L: straight lines on the UI's default linear axis; underflow
                # (n = 0) and inf are left out, so a curve ends where the profile left range
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.log10(back / back[0])
                r.metrics += [
                    Metric(log_key, float(v), ts, k) for k, v in enumerate(rel) if np.isfinite(v)
                ]
        self._flush(r)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            frame = profile_frame(r.profiles)
            frame.to_parquet(tmp / "profiles.parquet", index=False)
            for name, frames in r.tables.items():  # whatever tables the measurements carried
                pd.concat(frames, ignore_index=True).to_parquet(
                    tmp / f"{name}.parquet", index=False
                )
            if figure is not None:  # a small figure the UI shows inline
                (tmp / "profile.png").write_bytes(figure)
            (tmp / "config.yaml").write_text(
                yaml.safe_dump(r.run.model_dump(mode="json"), sort_keys=False)
            )
            if error:
                (tmp / "error.txt").write_text(error)
            uri = add_databricks_profile_info_to_artifact_uri(r.artifact_uri, self.uri)
            get_artifact_repository(uri, self.uri).log_artifacts(str(tmp))
        self.client.set_terminated(r.run_id, mlflow_status(status))  # closed first, then labelled:
        if status == "diverged" and step is not None:  # a run tagged done is always closed
            self.client.set_tag(r.run_id, names.TAG_DIVERGED_STEP, str(step))
        self.client.set_tag(r.run_id, names.TAG_STATUS, status)
        return r.run_id

    def abandon(self, handle: int, error: str) -> None:
        """Close a run as FAILED writing nothing else (its buffered metrics are dropped): for a
        store that refuses writes, where closing is the one update that may still pass."""
        r = self._runs.pop(handle)
        try:
            self.client.set_terminated(r.run_id, "FAILED")
            self.client.set_tag(r.run_id, names.TAG_STATUS, "failed")
        except Exception:
            pass  # left RUNNING: the next sweep closes it as KILLED (its process is gone)

    @_timed
    def end_sweep(self, status: str, summary: dict[str, Any]) -> None:
        if self.parent_id:
            self.client.log_batch(
                self.parent_id,
                metrics=[
                    Metric(names.sweep_metric(k), float(v), int(time.time() * 1000), 0)
                    for k, v in summary.items()
                ],
            )
            self.client.set_terminated(
                self.parent_id, "FINISHED" if status == "finished" else status.upper()
            )

    def attach_report(self, run_id: str, folder: Path, markdown: str) -> None:
        """A report's files as the run's ``report/`` artifacts, its report.md replaced by
        ``markdown`` (the same text with images the UI can serve)."""
        self.client.log_artifacts(run_id, str(folder), "report")
        self.client.log_text(run_id, markdown, "report/report.md")

    def runs_url(self) -> str:
        """The experiment's runs page opened on the decay curves (rnnlab.ui): on the tracking
        server, or under `make ui` for SQLite."""
        return decay_url(ui_base(self.uri), self.experiment_id)
