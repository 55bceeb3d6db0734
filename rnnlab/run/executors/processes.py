"""Train the jobs in N local worker processes (``--workers N``): spawned, so torch's threads
never meet a fork; one queue carries every worker's messages to the driver.

``start`` spawns them before the jobs are known: each imports what training needs
(``base.WORKER_IMPORTS``: torch, 3.3 s on a GPU host) while the driver imports MLflow and
opens the store (``base.started``).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import queue
import signal
import traceback
from concurrent.futures import ProcessPoolExecutor
from typing import ClassVar

from rnnlab import exit_quickly
from rnnlab.run.executors.base import WORKER_IMPORTS, watch_parent, work

_STOP = None  # in a worker: the driver's stop event
_QUEUE = None  # in a worker: the queue to the driver
_THREADS = None  # in a worker: its share of the spare cores


def _init_worker(stop, q, driver: int, threads: int) -> None:
    global _STOP, _QUEUE, _THREADS
    _STOP, _QUEUE, _THREADS = stop, q, threads
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; workers stop via _STOP
    # The driver's pid comes from the driver: a worker still starting when its driver died
    # would otherwise take its new parent (init) for the driver and never notice.
    watch_parent(lambda: os.getppid() == driver)
    exit_quickly()
    for module in WORKER_IMPORTS:  # now, while the driver opens the store; a failure is
        with contextlib.suppress(Exception):  # raised again by the job's own import, with
            importlib.import_module(module)  # its traceback, where the driver sees it


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool spawn them all at once."""


def _work(job) -> bool:
    """Train one job; False if the sweep was stopped before it began."""
    if _STOP.is_set():
        return False
    work(job, _QUEUE.put, _STOP, _THREADS)
    return True


class Processes:
    name: ClassVar[str] = "processes"
    choice: ClassVar[str] = "local"
    help: ClassVar[str] = "this machine's processes, --workers of them (default)"

    @staticmethod
    def check(args, tracking_uri: str) -> None:
        """Nothing to check: local processes need no package or cluster."""

    @classmethod
    def from_cli(cls, args, resources, workers: int):
        if workers <= 1:  # one worker trains in this process
            from rnnlab.run.executors.inline import Inline

            return Inline(), "1 worker"
        return cls(workers), f"{workers} workers"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._stop = self._queue = None

    def slots(self) -> int:
        return self.workers

    def start(self, jobs: int) -> None:
        """Spawn min(workers, jobs) workers now; ``run`` gives them the jobs."""
        ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
        self._stop, self._queue = ctx.Event(), ctx.Queue()
        workers = max(1, min(self.workers, jobs))
        # Each worker trains on one core; what the machine has beyond that, shared out, takes
        # the workers' host measurements.
        from rnnlab.measure.measurement import usable_cores  # torch-free: the driver

        threads = max(0, usable_cores() // workers - 1)
        self._pool = ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self._stop, self._queue, os.getpid(), threads),
        )
        for _ in range(workers):  # the pool spawns a worker per task while none is idle
            self._pool.submit(_ready)

    def close(self) -> None:
        """End workers that ``start`` spawned for jobs that never came (the store refused,
        nothing was left to train, an interrupt): at once, mid-import as they may be."""
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        for process in list(pool._processes.values()):  # no public way before Python 3.14
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)

    def run(self, jobs, deliver, job_over, interrupted) -> None:
        if self._pool is None:
            self.start(len(jobs))
        pool, stop, q = self._pool, self._stop, self._queue
        self._pool = None  # from here, run shuts it down
        with pool:
            futures = {pool.submit(_work, job): job[0] for job in jobs}
            ended: set[int] = set()

            def receive(batch) -> None:
                ended.update(i for kind, i, _ in batch if kind == "end")
                deliver(batch)

            def halt() -> None:
                stop.set()  # running workers end their runs as killed at their next step
                for fut in futures:
                    fut.cancel()

            try:
                while futures:
                    try:
                        receive(q.get(timeout=0.2))
                        continue
                    except queue.Empty:
                        pass
                    if interrupted.is_set() and not stop.is_set():
                        halt()
                    for fut in [f for f in futures if f.done()]:
                        while True:  # what the worker sent before it ended comes first
                            try:
                                receive(q.get_nowait())
                            except queue.Empty:
                                break
                        died = not fut.cancelled() and fut.exception() is not None
                        trained = not fut.cancelled() and not died and fut.result()
                        if trained and not ended.issuperset(futures[fut]):
                            # it sent an "end" for every member, but the queue's feeder
                            # thread may still be carrying them: wait for them
                            continue
                        error = (
                            "".join(traceback.format_exception(fut.exception())) if died else None
                        )
                        job_over(futures.pop(fut), error)
            except BaseException:  # the driver failed: stop the workers before waiting for them
                halt()
                raise
