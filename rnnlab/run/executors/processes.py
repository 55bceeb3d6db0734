"""Train the jobs in N local worker processes (``--workers N``): spawned, so torch's threads
never meet a fork; one queue carries every worker's messages to the driver."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import traceback
from concurrent.futures import ProcessPoolExecutor
from typing import ClassVar

from rnnlab.run.executors.base import watch_parent, work

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

    def slots(self) -> int:
        return self.workers

    def run(self, jobs, deliver, job_over, interrupted) -> None:
        ctx = mp.get_context("spawn")  # fork is unsafe once torch has started threads
        stop, q = ctx.Event(), ctx.Queue()
        workers = min(self.workers, len(jobs))
        # Each worker trains on one core; what the machine has beyond that, shared out, takes
        # the workers' host measurements.
        from rnnlab.measure.measurement import usable_cores  # torch-free: the driver

        threads = max(0, usable_cores() // workers - 1)
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(stop, q, os.getpid(), threads),
        ) as pool:
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
