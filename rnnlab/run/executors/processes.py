"""Train the jobs in N local worker processes (``--workers N``): spawned, so torch's threads
never meet a fork; one queue carries every worker's messages to the driver.

``start`` spawns them before the jobs are known: each imports what training needs
(``base.TRAINING_IMPORTS``: torch, 3.3 s on a GPU host) and drawing (``FIGURE_IMPORTS``)
while the driver imports MLflow and opens the store (``base.started``).
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import queue
import signal
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ClassVar

from rnnlab import exit_quickly
from rnnlab.run.executors.base import FIGURE_IMPORTS, TRAINING_IMPORTS, watch_parent, work

_STOP = None  # in a worker: the driver's stop event
_QUEUE = None  # in a worker: the queue to the driver
_IMPORT_ERROR = None  # in a worker: the traceback of a failed TRAINING_IMPORTS


def _init_worker(stop, q, driver: int) -> None:
    global _STOP, _QUEUE, _IMPORT_ERROR
    _STOP, _QUEUE = stop, q
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; workers stop via _STOP
    # The driver's pid comes from the driver: a worker still starting when its driver died
    # would otherwise take its new parent (init) for the driver and never notice.
    watch_parent(lambda: os.getppid() == driver)
    exit_quickly()
    for module in TRAINING_IMPORTS + FIGURE_IMPORTS:  # now, while the driver opens the store
        try:
            importlib.import_module(module)
        except Exception:  # each job fails with it (importing again would raise another);
            if module in TRAINING_IMPORTS:  # a figure is a view: _draw warns instead
                _IMPORT_ERROR = traceback.format_exc()
                return


def _ready() -> None:
    """A no-op task: submitting one per worker makes the pool spawn them all at once."""


def _work(job, threads: int) -> bool:
    """Train one job; False if the sweep was stopped before it began."""
    if _IMPORT_ERROR is not None:
        raise ImportError(f"this worker could not import what training needs:\n{_IMPORT_ERROR}")
    if _STOP.is_set():
        return False
    work(job, _QUEUE.put, _STOP, threads)
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
        self._size = 0  # the pool's workers
        self._stop = self._queue = None

    def slots(self) -> int:
        return self.workers

    def start(self, jobs: int) -> None:
        """Spawn min(workers, jobs) workers now; ``run`` gives them the jobs."""
        ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
        self._stop, self._queue = ctx.Event(), ctx.Queue()
        self._size = max(1, min(self.workers, jobs))
        self._pool = ProcessPoolExecutor(
            self._size,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(self._stop, self._queue, os.getpid()),
        )
        for _ in range(self._size):  # the pool spawns a worker per task while none is idle
            self._pool.submit(_ready)

    def close(self) -> None:
        """End the workers ``start`` spawned, for jobs that never came (the store refused,
        nothing was left to train, an interrupt): each once its imports are done, so that
        none is killed holding a lock file (torch's extension build, matplotlib's font cache)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)

    def run(self, jobs, deliver, job_over, interrupted) -> None:
        if self._pool is None:
            self.start(len(jobs))
        pool, stop, q = self._pool, self._stop, self._queue
        self._pool = None  # from here, run shuts it down
        # Each worker trains on one core; what the machine has beyond that, shared out among
        # the workers that have a job, takes their host measurements.
        from rnnlab.measure.measurement import usable_cores  # torch-free: the driver

        threads = max(0, usable_cores() // min(self._size, len(jobs)) - 1)
        with pool:
            futures = {}
            for job in jobs:
                try:
                    futures[pool.submit(_work, job, threads)] = job[0]
                except BrokenProcessPool as e:  # a worker died starting (killed, out of memory)
                    job_over(job[0], f"{type(e).__name__}: {e}")
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
