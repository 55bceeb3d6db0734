"""Run a grid of configs: train each point, stream its measurements into a tracker.

The unit of work is an ensemble (``rnnlab.ensemble.groups``): grid points that differ only in
seed, init, gain, lr or clipping train as one stacked model; each is still its own run.

Executors: inline (``workers=1``: train in this process) and local processes (``workers=N``:
N spawned processes train, this process is the single writer to the tracker, so an embedded
SQLite store never sees concurrent writers). Progress is shown over the total work
(Σ steps × sequence length) with an ETA; the returned :class:`Summary` counts outcomes.

Resume: a grid point whose ``run_key`` already has a finished or diverged run in the
experiment is skipped. A run left RUNNING by a process that is gone is marked KILLED, and its
point is trained again, as are points whose run failed or was killed. ``rerun=True`` trains
everything and soft-deletes the finished runs it replaces, so a run_key never has two. The
points still to train regroup into ensembles of their own: a stack cut short resumes smaller.

Interrupts: SIGINT and SIGTERM only set a flag, checked between measurements (never inside a
tracker call): runs in progress end as KILLED with their metrics so far, runs not started are
not created, and ``KeyboardInterrupt`` is raised once everything is closed. A second signal
aborts at once.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from tqdm import tqdm

from rnnlab.config import Experiment, RunConfig, run_name
from rnnlab.ensemble import groups
from rnnlab.train import Measurement, train_ensemble

DONE = ("finished", "diverged")
FINAL_METRICS = ("eval/loss_ratio", "grad_h/slope")
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


def plan(grid: list[RunConfig], tracker, rerun: bool, summary: Summary) -> list[int]:
    """Indices of the grid points to train, after reconciling with the runs already stored."""
    prior: dict[str, list] = {}
    for r in tracker.prior_runs():
        prior.setdefault(r.run_key, []).append(r)
    todo = []
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
            for r in done:
                tracker.supersede(r.run_id)
            todo.append(i)
        elif done:
            summary.skipped += 1
        elif any(r.mlflow_status == "RUNNING" and r.alive() for r in runs):
            summary.busy += 1
        else:
            todo.append(i)
    return todo


def run_sweep(
    experiment: Experiment,
    grid: list[RunConfig],
    tracker,
    workers: int = 1,
    parent: bool = True,
    rerun: bool = False,
    ray_address: str | None = None,
    use_ray: bool = False,
) -> Summary:
    """Train the grid points not yet done into ``tracker`` (see the module docstring)."""
    t0 = time.perf_counter()
    summary = Summary(total=len(grid))
    tracker.open_experiment(experiment)
    summary.dead_sweeps = tracker.acquire(experiment)  # StoreBusy if another process trains it
    try:
        return _sweep(
            experiment, grid, tracker, workers, parent, rerun, ray_address, use_ray, summary, t0
        )
    finally:
        tracker.release()


def _sweep(experiment, grid, tracker, workers, parent, rerun, ray_address, use_ray, summary, t0):
    names = [run_name(r, experiment.swept_keys()) for r in grid]
    todo = plan(grid, tracker, rerun, summary)
    if not todo:
        summary.seconds = time.perf_counter() - t0
        summary.tracking_seconds = tracker.seconds
        return summary
    if parent:
        tracker.start_sweep(experiment, len(todo))
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

    start_run, log, end_run = (
        _writing(f) for f in (tracker.start_run, tracker.log, tracker.end_run)
    )

    def start(i: int) -> None:
        tags = {"rnnlab.ensemble_size": str(stack_size.get(i, 1))}
        start_run(i, grid[i], names[i], tags)

    def on_measurement(i: int, m: Measurement) -> None:
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

    def on_end(i: int, status: str, error: str | None = None) -> None:
        if i not in started:
            start(i)
        step = started.pop(i, None)
        end_run(i, status, error, step=step)
        setattr(summary, status, getattr(summary, status) + 1)
        if error:
            summary.failures.append(f"{names[i]}: {error.strip().splitlines()[-1]}")
        done = summary.finished + summary.diverged + summary.failed
        problems = ", ".join(
            f"{n} {what}" for what in ("diverged", "failed") if (n := getattr(summary, what))
        )
        bar.set_description_str(f"runs {done}/{len(todo)}{f' ({problems})' if problems else ''}: ")
        if bar.disable:  # no terminal: one line per run instead of a bar
            outcome = _outcome(summary.finals.get(i, {})) if status in DONE else ""
            print(
                f"[{done}/{len(todo)}] {names[i]}: {status}{outcome}", file=sys.stderr, flush=True
            )

    status = "finished"
    try:
        with _interruptible() as interrupted:
            if use_ray:
                _ray(grid, partition, experiment, ray_address, on_measurement, on_end, interrupted)
            elif workers <= 1:
                _inline(grid, partition(1), on_measurement, on_end, interrupted)
            else:
                units = partition(workers)
                workers = min(workers, len(units))
                _processes(grid, units, workers, on_measurement, on_end, interrupted)
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
    if "eval/loss_ratio" in final:
        parts.append(f"loss ratio {final['eval/loss_ratio']:.3g}")
    if "grad_h/slope" in final:
        parts.append(f"slope {final['grad_h/slope']:+.3g}/step")
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


def _run_group(runs: list[RunConfig], emit, end, stop=None) -> None:
    """Train runs as one ensemble: ``emit(k, m)`` per measurement of member k, then
    ``end(k, status, traceback)`` once per member (diverged as it happens; finished, killed
    or failed at the end). Members of one stack share a failure."""
    open_ = list(range(len(runs)))

    def close(status: str, error: str | None = None) -> None:
        for k in open_:
            end(k, status, error)
        open_.clear()

    try:
        for k, m in train_ensemble(runs):
            emit(k, m)
            if m.diverged:
                open_.remove(k)
                end(k, "diverged", None)
            if stop is not None and stop.is_set():
                return close("killed")
    except Exception:
        return close("failed", traceback.format_exc())
    close("finished")


def _inline(grid, units, on_measurement, on_end, interrupted) -> None:
    for unit in units:
        if interrupted.is_set():
            return
        _run_group(
            [grid[i] for i in unit],
            lambda k, m, u=unit: on_measurement(u[k], m),
            lambda k, status, error, u=unit: on_end(u[k], status, error),
            interrupted,
        )


_STOP = None  # the stop event, in worker processes


_QUEUE = None  # the queue to the writer, in worker processes


def _init_worker(stop, q, threads: int) -> None:
    import torch

    global _STOP, _QUEUE
    _STOP, _QUEUE = stop, q
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; workers stop via _STOP
    torch.set_num_threads(threads)
    watch_parent()


def watch_parent(interval: float = 1.0) -> None:
    """Exit this worker when the process that started it is gone (SIGKILL leaves no one to
    stop us: an orphan would train on into a queue nobody reads)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="rnnlab-watch-parent").start()


FLUSH_SECONDS = 0.2
"""Workers send their measurements to the writer in batches, at least this often."""


def _train_into(unit: list[int], runs_json: list[str]) -> None:
    """Worker process: train one ensemble, sending its measurements to the single writer in
    batches (one message per FLUSH_SECONDS: the queue's cost is per message)."""
    q = _QUEUE
    if _STOP.is_set():
        q.put([("skip", i, None) for i in unit])
        return
    batch: list = []
    sent = time.monotonic()

    def emit(k: int, m: Measurement) -> None:
        nonlocal sent
        batch.append(("m", unit[k], m))
        if time.monotonic() - sent >= FLUSH_SECONDS:
            q.put(batch.copy())
            batch.clear()
            sent = time.monotonic()

    def end(k: int, status: str, error: str | None) -> None:
        batch.append(("end", unit[k], (status, error)))

    runs = [RunConfig.model_validate_json(r) for r in runs_json]
    _run_group(runs, emit, end, _STOP)
    q.put(batch)


def _processes(grid, units, workers, on_measurement, on_end, interrupted) -> None:
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    stop, q = ctx.Event(), ctx.Queue()

    def halt() -> None:
        stop.set()  # running workers end their runs as killed at their next step
        for fut in futures:
            fut.cancel()

    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(stop, q, threads)
    ) as pool:
        futures = {
            pool.submit(_train_into, unit, [grid[i].model_dump_json() for i in unit]): unit
            for unit in units
        }
        pending = {i for unit in units for i in unit}
        try:
            for kind, i, payload in _drain(q, futures, pending, interrupted):
                if interrupted.is_set() and not stop.is_set():
                    halt()
                if kind == "m":
                    on_measurement(i, payload)
                elif kind in ("end", "skip"):
                    pending.discard(i)
                    if kind == "end":
                        on_end(i, *payload)
        except BaseException:  # the writer failed: stop the workers before waiting for them
            halt()
            raise


def _drain(q, futures, pending, interrupted) -> Iterator[tuple]:
    """Messages from the workers until every pending point has ended (or its worker died)."""
    while pending:
        try:
            yield from q.get(timeout=0.2)
            continue
        except queue.Empty:
            if interrupted.is_set():
                yield ("tick", None, None)  # lets the caller stop the workers
        for fut, unit in futures.items():
            if not fut.done() or not pending.intersection(unit):
                continue
            if fut.cancelled():  # never started
                yield from (("skip", i, None) for i in unit)
            elif fut.exception() is not None:  # the worker died without saying "end"
                try:
                    while True:
                        yield from q.get_nowait()
                except queue.Empty:
                    pass
                error = "".join(traceback.format_exception(fut.exception()))
                yield from (("end", i, ("failed", error)) for i in unit if i in pending)


# ------------------------------------------------------------------------------ Ray
def _ray_task(q, unit: list[int], runs_json: list[str], threads: int) -> None:
    """A Ray task: train one ensemble, sending measurements to the driver in small batches."""
    import torch

    torch.set_num_threads(threads)
    batch: list = []

    def emit(k: int, m: Measurement) -> None:
        batch.append(("m", unit[k], m))
        if len(batch) >= 25:
            q.put_nowait_batch(batch)
            batch.clear()

    ended: set[int] = set()

    def end(k: int, status: str, error: str | None) -> None:
        ended.add(k)
        batch.append(("end", unit[k], (status, error)))

    try:
        _run_group([RunConfig.model_validate_json(r) for r in runs_json], emit, end)
    except KeyboardInterrupt:  # ray.cancel: end as killed, keeping the measurements so far
        for k in range(len(unit)):
            if k not in ended:
                end(k, "killed", None)
    q.put_nowait_batch(batch)


def ray_init(address: str | None):
    """Connect to a Ray cluster, or start a local instance. Loopback stays on loopback: Ray
    otherwise advertises the machine's interface address."""
    local = address is None or address.split(":")[0] in ("127.0.0.1", "localhost")
    if local:  # Ray rewrites 127.0.0.1 to the interface address unless this is off (read on import)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    kwargs = {"_node_ip_address": "127.0.0.1"} if local else {}
    if address is None:
        kwargs |= {"include_dashboard": False, "num_cpus": os.cpu_count() or 1}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address=address, log_to_driver=False, configure_logging=False, **kwargs)
    return ray


def _ray(grid, partition, experiment, address, on_measurement, on_end, interrupted) -> None:
    """Each ensemble is a Ray task with the experiment's resources; this process stays the
    single writer to the store, so resume, divergence and failure work exactly as locally."""
    ray = ray_init(address)
    from ray.util.queue import Empty, Queue

    try:
        res = experiment.resources
        task = ray.remote(_ray_task).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)
        q = Queue(actor_options={"num_cpus": 0})
        threads = max(1, int(res.cpus))
        slots = max(1, int(ray.cluster_resources().get("CPU", 1) // res.cpus))
        refs = {
            task.remote(q, unit, [grid[i].model_dump_json() for i in unit], threads): unit
            for unit in partition(slots)
        }
        pending, cancelled = {i for unit in refs.values() for i in unit}, False
        while pending:
            try:
                messages = [q.get(timeout=0.2), *q.get_nowait_batch(q.qsize())]
            except Empty:
                messages = []
            for kind, i, payload in messages:
                if kind == "m":
                    on_measurement(i, payload)
                elif i in pending:
                    pending.discard(i)
                    on_end(i, *payload)
            if interrupted.is_set() and not cancelled:
                cancelled = True
                for ref in refs:
                    ray.cancel(ref)  # KeyboardInterrupt in running tasks: they end as killed
            if messages:
                continue
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in done:
                unit = [i for i in refs[ref] if i in pending]
                if not unit or q.qsize():
                    continue
                try:
                    ray.get(ref)
                except Exception as e:  # cancelled before it started, or its worker died
                    for i in unit:
                        pending.discard(i)
                        if not cancelled:
                            on_end(i, "failed", f"{type(e).__name__}: {e}")
    finally:
        ray.shutdown()
