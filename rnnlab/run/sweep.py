"""Run a grid of configs: train each point, stream its measurements into a tracker.

The unit of work is an ensemble (``rnnlab.run.schedule.groups``): grid points that differ only in
seed, init, gain, lr or clipping train as one stacked model; each is still its own run.

Where the ensembles train is an executor's business (``rnnlab.run.executors``: inline, local
processes, Ray, SLURM): this process is the driver, the single writer to the tracker, so an
embedded SQLite store never sees concurrent writers, and it holds the experiment's lock in
the store while it trains (one trainer per experiment). Progress is shown over the total
work (Σ steps × sequence length); the returned :class:`Summary` counts outcomes.

Resume: a grid point whose ``run_key`` already has a finished or diverged run in the
experiment is skipped. A run left RUNNING by a process that is gone is marked KILLED, and its
point is trained again, as are points whose run failed or was killed. ``rerun=True`` trains
everything and soft-deletes a point's finished runs once its new run has finished (or
diverged), so a run_key never has two and an interrupted rerun loses no result: the points it
did not reach keep their runs. The
points still to train regroup into ensembles of their own: a stack cut short resumes smaller.

Interrupts: SIGINT and SIGTERM only set a flag, checked between measurements (never inside a
tracker call): runs in progress end as KILLED with their metrics so far, runs not started are
not created, and ``KeyboardInterrupt`` is raised once everything is closed. A second signal
aborts at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

from rnnlab.config import Experiment, RunConfig, run_name
from rnnlab.measure import names
from rnnlab.measure.measurement import Measurement
from rnnlab.run.executors import make
from rnnlab.run.executors.base import Executor
from rnnlab.run.schedule import groups
from rnnlab.track import Tracker

DONE = ("finished", "diverged")
FINAL_METRICS = (names.EVAL_LOSS_RATIO, names.SLOPE)
"""What a run's one-line outcome and the sweep's closing table show."""
ETA_AFTER = (0.05, 10.0)
"""The ETA is shown once this fraction of the work is done and this many seconds passed:
before, the first (slowest, compiling) steps make it meaningless."""


class StoreError(RuntimeError):
    """The tracking store stopped accepting writes mid-sweep (a full disk, a lost server)."""


class _WriteFailed(Exception):
    """A tracker call raised (wraps the cause; only these end a sweep as a StoreError)."""


def _writing(fn):
    """Mark a tracker call's failure as the store's, not as a bug of the sweep."""

    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise _WriteFailed() from e

    return call


@dataclass
class Summary:
    total: int
    finished: int = 0
    diverged: int = 0
    failed: int = 0
    killed: int = 0
    skipped: int = 0  # already done by an earlier invocation
    busy: int = 0  # RUNNING in another live process
    stale: int = 0  # left RUNNING by a dead process, marked KILLED
    dead_sweeps: int = 0  # sweep parent runs of dead invocations, closed as KILLED
    seconds: float = 0.0
    tracking_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    stacks: list[int] = field(default_factory=list)  # size of each ensemble trained (> 1)
    finals: dict[int, dict[str, float]] = field(default_factory=dict)
    """Grid index → the last probe's FINAL_METRICS of each run trained now."""

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.killed == 0

    def counts(self) -> dict[str, float]:
        return {
            "finished": self.finished,
            "diverged": self.diverged,
            "failed": self.failed,
            "killed": self.killed,
            "skipped": self.skipped,
            "wall_seconds": self.seconds,
        }


def plan(
    grid: list[RunConfig], tracker: Tracker, rerun: bool, summary: Summary
) -> tuple[list[int], dict[int, list[str]]]:
    """Indices of the grid points to train, after reconciling with the runs already stored,
    and for ``rerun`` the finished runs each one's new run replaces (grid index → run ids)."""
    prior: dict[str, list] = {}
    for r in tracker.prior_runs():
        prior.setdefault(r.run_key, []).append(r)
    todo, replaces = [], {}
    for i, run in enumerate(grid):
        runs = prior.get(run.run_key, [])
        for r in runs:
            if r.mlflow_status == "RUNNING" and not r.alive():
                tracker.mark_killed(r.run_id)
                summary.stale += 1
        # Done means tagged finished/diverged *and* closed: a writer killed between the two
        # calls leaves a run that is neither, and its point is trained again.
        done = [r for r in runs if r.status in DONE and r.mlflow_status != "RUNNING"]
        if rerun:
            replaces[i] = [r.run_id for r in done]  # retired when the new run is done
            todo.append(i)
        elif done:
            summary.skipped += 1
        elif any(r.mlflow_status == "RUNNING" and r.alive() for r in runs):
            summary.busy += 1
        else:
            todo.append(i)
    return todo, replaces


def run_sweep(
    experiment: Experiment,
    grid: list[RunConfig],
    tracker: Tracker,
    workers: int = 1,
    parent: bool = True,
    rerun: bool = False,
    executor: Executor | None = None,
) -> Summary:
    """Train the grid points not yet done into ``tracker`` (see the module docstring).
    ``executor`` defaults to inline for ``workers=1``, else ``workers`` local processes."""
    if executor is None:
        executor = make("inline") if workers <= 1 else make("processes", workers=workers)
    t0 = time.perf_counter()
    summary = Summary(total=len(grid))
    tracker.open_experiment(experiment)
    summary.dead_sweeps = tracker.acquire(experiment)  # StoreBusy if another process trains it
    try:
        return _sweep(experiment, grid, tracker, executor, parent, rerun, summary, t0)
    finally:
        tracker.release()


def _sweep(experiment, grid, tracker, executor, parent, rerun, summary, t0):
    run_names = [run_name(r, experiment.swept_keys()) for r in grid]
    todo, replaces = plan(grid, tracker, rerun, summary)
    if not todo:
        summary.seconds = time.perf_counter() - t0
        summary.tracking_seconds = tracker.seconds
        return summary
    if parent:
        points = {run.run_key: name for run, name in zip(grid, run_names, strict=True)}
        tracker.start_sweep(experiment, points, len(todo))
    bar = tqdm(
        total=sum((grid[i].train.steps + 1) * grid[i].task.seq_len for i in todo),
        unit="step·T",
        unit_scale=True,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=None,
        bar_format="{desc}{percentage:3.0f}%|{bar}| [{elapsed}]",
    )
    bar.set_description_str(f"runs 0/{len(todo)}: ")
    started: dict[int, int] = {}  # grid index → last step logged
    stack_size: dict[int, int] = {}  # grid index → members in the ensemble it trains in

    def partition(workers: int) -> list[list[int]]:
        units = groups(grid, todo, workers)
        stack_size.update((i, len(u)) for u in units for i in u)
        summary.stacks = [len(u) for u in units if len(u) > 1]
        return units

    start_run, log, end_run, supersede = (
        _writing(f) for f in (tracker.start_run, tracker.log, tracker.end_run, tracker.supersede)
    )

    def start(i: int) -> None:
        tags = {names.TAG_ENSEMBLE_SIZE: str(stack_size.get(i, 1))}
        start_run(i, grid[i], run_names[i], tags)

    def on_measurement(i: int, m: Measurement) -> None:
        if i not in pending:  # its run is closed: a late or repeated message changes nothing
            return
        if i not in started:
            start(i)
        started[i] = m.step
        log(i, m)
        if m.profile is not None:
            summary.finals[i] = {k: m.metrics[k] for k in FINAL_METRICS if k in m.metrics}
        bar.update(grid[i].task.seq_len)
        late = not bar.disable and time.perf_counter() - t0 >= ETA_AFTER[1]
        if late and "remaining" not in bar.bar_format and bar.n >= ETA_AFTER[0] * bar.total:
            bar.bar_format = "{desc}{percentage:3.0f}%|{bar}| [{elapsed}, {remaining} left]"

    def on_end(i: int, status: str, error: str | None = None, png: bytes | None = None) -> None:
        if i not in started:
            start(i)
        step = started.pop(i, None)
        end_run(i, status, error, step=step, figure=png)
        if status in DONE:  # --rerun: the runs it replaces, now that it has replaced them
            for run_id in replaces.pop(i, []):
                supersede(run_id)
        setattr(summary, status, getattr(summary, status) + 1)
        if error:
            summary.failures.append(f"{run_names[i]}: {error.strip().splitlines()[-1]}")
        done = summary.finished + summary.diverged + summary.failed
        problems = ", ".join(
            f"{n} {what}" for what in ("diverged", "failed") if (n := getattr(summary, what))
        )
        bar.set_description_str(f"runs {done}/{len(todo)}{f' ({problems})' if problems else ''}: ")
        if bar.disable:  # no terminal: one line per run instead of a bar
            outcome = _outcome(summary.finals.get(i, {})) if status in DONE else ""
            print(
                f"[{done}/{len(todo)}] {run_names[i]}: {status}{outcome}",
                file=sys.stderr,
                flush=True,
            )

    pending: set[int] = set()

    def deliver(messages: list) -> None:
        for kind, i, payload in messages:
            if kind == "m":
                on_measurement(i, payload)
            elif i in pending:
                pending.discard(i)
                on_end(i, *payload)

    def job_over(unit: list[int], error: str | None) -> None:
        """The one dead-worker rule: a member whose job ended without ending it is closed,
        killed if the sweep was interrupted (or it never started: then no run is created),
        failed with the job's error otherwise."""
        for i in unit:
            if i not in pending:
                continue
            pending.discard(i)
            if interrupted.is_set():
                if i in started:
                    on_end(i, "killed")
            else:
                on_end(i, "failed", error or "its worker ended without closing this run")

    status = "finished"
    try:
        with _interruptible() as interrupted:
            units = partition(executor.slots())
            pending.update(i for unit in units for i in unit)
            jobs = [
                (
                    unit,
                    [grid[i].model_dump_json() for i in unit],
                    [run_names[i] for i in unit] if tracker.figures else None,
                )
                for unit in units
            ]
            executor.run(jobs, deliver, job_over, interrupted)
        if interrupted.is_set():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        status = "killed"
        for i in list(started):  # only after a second signal can a run still be open here
            on_end(i, "killed")
        raise
    except _WriteFailed as e:  # the writer failed: the store is full, gone or read-only
        status = "failed"
        detail = _root_cause(e)
        for i in list(started):
            tracker.abandon(i, detail)
        raise StoreError(
            f"the tracking store stopped accepting writes ({detail[:300]}); the runs "
            "finished so far are kept: free the space or fix the store, then run the same "
            "command again to resume"
        ) from e
    except Exception:  # a bug: the next sweep closes the runs left open (their process is gone)
        status = "failed"
        raise
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
        summary.tracking_seconds = tracker.seconds
        if status == "finished" and not summary.ok:
            status = "failed"
        if parent:
            with contextlib.suppress(Exception) if status == "failed" else contextlib.nullcontext():
                tracker.end_sweep(status, summary.counts())
    return summary


def _outcome(final: dict[str, float]) -> str:
    """' (loss ratio 0.48, slope −0.012/step)' from a run's last probe."""
    parts = []
    if names.EVAL_LOSS_RATIO in final:
        parts.append(f"loss ratio {final[names.EVAL_LOSS_RATIO]:.3g}")
    if names.SLOPE in final:
        parts.append(f"slope {final[names.SLOPE]:+.3g}/step")
    return f" ({', '.join(parts)})" if parts else ""


def _root_cause(e: BaseException) -> str:
    """The innermost exception of a chain, in one line (MLflow wraps SQL errors twice)."""
    while (inner := e.__cause__ or e.__context__) is not None and inner is not e:
        e = inner
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"


@contextmanager
def _interruptible():
    """SIGINT/SIGTERM set the yielded event; a second one raises KeyboardInterrupt at once."""
    event = threading.Event()

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
