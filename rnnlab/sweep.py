"""Run a grid of configs: train each point, stream its measurements into a tracker.

Executors: inline (``workers=1``: train in this process) and local processes (``workers=N``:
N spawned processes train, this process is the single writer to the tracker, so an embedded
SQLite store never sees concurrent writers). Progress is shown over the total work
(Σ steps × sequence length) with an ETA; the returned :class:`Summary` counts outcomes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from rnnlab.config import Experiment, RunConfig, run_name
from rnnlab.train import Measurement, train


@dataclass
class Summary:
    total: int
    finished: int = 0
    diverged: int = 0
    failed: int = 0
    killed: int = 0
    seconds: float = 0.0
    tracking_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.killed == 0

    def counts(self) -> dict[str, float]:
        return {
            "finished": self.finished,
            "diverged": self.diverged,
            "failed": self.failed,
            "killed": self.killed,
            "wall_seconds": self.seconds,
        }


def _work(run: RunConfig) -> int:
    return (run.train.steps + 1) * run.task.seq_len


def run_sweep(
    experiment: Experiment, grid: list[RunConfig], tracker, workers: int = 1, parent: bool = True
) -> Summary:
    """Train every grid point into ``tracker``. Ctrl-C marks running runs killed and re-raises."""
    t0 = time.perf_counter()
    summary = Summary(total=len(grid))
    names = [run_name(r, experiment.swept_keys()) for r in grid]
    tracker.start_sweep(experiment, len(grid), parent=parent)
    bar = tqdm(
        total=sum(_work(r) for r in grid),
        unit="step·T",
        unit_scale=True,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {postfix} [{elapsed}<{remaining}]",
        file=sys.stderr,
        disable=None,
    )
    started: set[int] = set()

    def on_measurement(i: int, m: Measurement) -> None:
        if i not in started:
            tracker.start_run(i, grid[i], names[i])
            started.add(i)
        tracker.log(i, m)
        bar.update(grid[i].task.seq_len)

    def on_end(i: int, status: str, error: str | None = None) -> None:
        if i not in started:
            tracker.start_run(i, grid[i], names[i])
        started.discard(i)
        tracker.end_run(i, status, error)
        setattr(summary, status, getattr(summary, status) + 1)
        if error:
            summary.failures.append(f"{names[i]}: {error.strip().splitlines()[-1]}")
        done = summary.finished + summary.diverged + summary.failed
        bar.set_postfix_str(
            f"runs {done}/{len(grid)}, {summary.diverged} diverged, {summary.failed} failed"
        )
        if bar.disable:  # no terminal: one line per run instead of a bar
            print(f"[{done}/{len(grid)}] {names[i]}: {status}", file=sys.stderr, flush=True)

    status = "finished"
    try:
        if workers <= 1:
            _inline(grid, on_measurement, on_end)
        else:
            _processes(grid, workers, on_measurement, on_end)
    except KeyboardInterrupt:
        status = "killed"
        for i in sorted(started):
            on_end(i, "killed")
        raise
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - t0
        summary.tracking_seconds = tracker.seconds
        if status == "finished" and not summary.ok:
            status = "failed"
        tracker.end_sweep(status, summary.counts())
    return summary


def _inline(grid, on_measurement, on_end) -> None:
    for i, run in enumerate(grid):
        status, error = "finished", None
        try:
            for m in train(run):
                on_measurement(i, m)
                if m.diverged:
                    status = "diverged"
        except Exception:
            status, error = "failed", traceback.format_exc()
        on_end(i, status, error)


def _train_into(q, i: int, run_json: str, threads: int) -> None:
    """Worker process: train one grid point, sending every measurement to the writer."""
    import torch

    torch.set_num_threads(threads)
    status, error = "finished", None
    try:
        for m in train(RunConfig.model_validate_json(run_json)):
            q.put(("m", i, m))
            if m.diverged:
                status = "diverged"
    except Exception:
        status, error = "failed", traceback.format_exc()
    q.put(("end", i, (status, error)))


def _processes(grid, workers, on_measurement, on_end) -> None:
    ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ctx.Manager() as manager, ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        q = manager.Queue()
        futures = {
            pool.submit(_train_into, q, i, run.model_dump_json(), threads): i
            for i, run in enumerate(grid)
        }
        pending = set(range(len(grid)))
        for kind, i, payload in _drain(q, futures, pending):
            if kind == "m":
                on_measurement(i, payload)
            else:
                pending.discard(i)
                on_end(i, *payload)


def _drain(q, futures, pending) -> Iterator[tuple]:
    """Messages from the workers until every grid point has ended (or its worker died)."""
    while pending:
        try:
            yield q.get(timeout=0.5)
            continue
        except queue.Empty:
            pass
        for fut, i in futures.items():  # a worker that died without saying "end"
            if i in pending and fut.done() and fut.exception() is not None:
                try:  # drain what it sent before dying
                    while True:
                        yield q.get_nowait()
                except queue.Empty:
                    pass
                if i in pending:
                    exc = fut.exception()
                    yield ("end", i, ("failed", "".join(traceback.format_exception(exc))))
