"""What every executor shares: the worker's body, the one message format, the protocol.

An executor runs *jobs* — one ensemble each (``rnnlab.run.schedule.groups``): the grid indices
of its members and their configs as JSON — somewhere (this process, local processes, Ray
tasks, SLURM jobs) and carries the workers' messages back to the driver, which stays the
single writer to the store (``rnnlab.run.sweep``). Every worker runs :func:`work`, which sends
lists of messages, flushed at least every ``FLUSH_SECONDS``:

    ("m", i, Measurement)             a measurement of grid point i
    ("end", i, (status, error, png))  grid point i ended: finished | diverged | failed | killed;
                                      png: its profile.png, drawn by the worker (or None)

When a job is over the executor calls ``job_over(unit, error)``; the driver ends every member
that sent no "end" by *one* rule (``rnnlab.run.sweep``): killed if the sweep was interrupted or
the member had started, otherwise failed with the job's error — a worker that died never
leaves a run open.

An executor whose workers are this machine's may also have ``start(jobs)``, which starts
them before the jobs are known, and ``close()``, which ends them if ``run`` never comes: the
driver calls both through :func:`started` (``rnnlab.run.executors.processes``).

To add an executor: one file here with a class following :class:`Executor`. The package finds
it (``rnnlab/run/executors/__init__.py``); a class with a ``choice`` is offered as
``rnnlab sweep --executor <choice>`` and built by its ``from_cli``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar, Protocol

from rnnlab.config import RunConfig

if TYPE_CHECKING:
    from rnnlab.measure.measurement import Measurement

Message = tuple[str, int, object]
Job = tuple[list[int], list[str], list[str] | None]
"""(grid indices of the ensemble's members, their RunConfigs as JSON, the titles of their
profile.png figures, or None where the tracker stores none)."""

FLUSH_SECONDS = 0.2
"""Workers send their messages at least this often (a transport's cost is per message)."""
TRAINING_IMPORTS = ("rnnlab.train",)
"""What a worker imports for its first job (torch: 3.3 s of a process's start on a GPU host):
a local worker started early imports it while it waits…"""
FIGURE_IMPORTS = ("matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.ticker")
"""…and what ``rnnlab.run.profile_png`` draws with (where failing to import is a warning)."""


class Executor(Protocol):
    """Runs jobs and delivers their messages; see the module docstring.

    A class offered on the command line also has ``choice: ClassVar[str]`` (the value of
    ``rnnlab sweep --executor``) and a classmethod ``from_cli(args, resources, workers,
    tracking_uri) -> (executor, where)`` that checks its options (``ConfigError``: bad input,
    exit 2, before anything runs) and builds it; ``where`` says where the jobs run."""

    name: ClassVar[str]

    def slots(self) -> int:
        """How many jobs run at once (the grid is cut into at least this many ensembles)."""
        ...

    def run(
        self,
        jobs: list[Job],
        deliver: Callable[[list[Message]], None],
        job_over: Callable[[list[int], str | None], None],
        interrupted: threading.Event,
    ) -> None:
        """Run every job; ``deliver`` each batch of messages as it arrives (in order per job)
        and call ``job_over(unit, error)`` once per job when it is over (error: why it died,
        or None). On ``interrupted``, stop the jobs (their runs end as killed) and return."""
        ...


@contextmanager
def started(executor, grid: list[RunConfig]) -> Iterator[None]:
    """Start the executor's workers now if it can (``start``), as many as ``grid`` could keep
    busy, so that they import torch while the driver imports MLflow and opens the store; end
    them when the block ends without ``run`` having used them (``close``). A SIGTERM meanwhile
    is an interrupt (KeyboardInterrupt): the workers are ended, nothing is left behind."""
    start = getattr(executor, "start", None)
    if start is None:  # Ray and SLURM start their workers per job
        yield
        return
    from rnnlab.run.schedule import groups

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        start(len(groups(grid, list(range(len(grid))), executor.slots())))
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        executor.close()


def work(
    job: Job, send: Callable[[list[Message]], None], stop=None, threads: int | None = None
) -> None:
    """The worker's body, the same in every executor: train one ensemble, sending its
    messages in batches. ``stop`` (an Event) ends its runs as killed at the next step; so
    does a KeyboardInterrupt (Ctrl-C, ``ray.cancel``, a SLURM job's cancel). ``threads``: the
    worker's share of spare cores for the host measurements (``rnnlab.measure.measurement.measure_threads``)."""
    unit, runs_json, titles = job
    runs = [RunConfig.model_validate_json(r) for r in runs_json]
    batch: list[Message] = []
    sent = time.monotonic()
    profiles: list[list[tuple[int, object]]] = [[] for _ in unit]  # first and last, for the PNG

    def emit(k: int, m: Measurement) -> None:
        nonlocal sent
        if titles is not None and m.profile is not None:
            profiles[k][1:] = [(m.step, m.profile)]
        batch.append(("m", unit[k], m))
        if time.monotonic() - sent >= FLUSH_SECONDS:
            out = batch.copy()
            batch.clear()  # before sending: a send cut short by Ctrl-C must not be sent twice
            sent = time.monotonic()
            send(out)

    ended: set[int] = set()

    def end(k: int, status: str, error: str | None) -> None:
        png = None
        if titles is not None and status != "killed":  # no drawing while the sweep stops
            from rnnlab.run.profile_png import profile_png  # here: only workers that draw pay

            png = profile_png(profiles[k], titles[k])
        profiles[k] = []
        ended.add(k)  # after drawing: an interrupt while drawing still ends the member below
        batch.append(("end", unit[k], (status, error, png)))

    try:
        run_group(runs, emit, end, stop, threads)
    except KeyboardInterrupt:
        for k in range(len(unit)):
            if k not in ended:
                end(k, "killed", None)
    send(batch)


def train_ensemble(runs: list[RunConfig], threads: int | None = None):
    """``rnnlab.train.train_ensemble``, imported on first use: the CLI lists the executors
    without loading torch."""
    from rnnlab.train import train_ensemble as train

    return train(runs, threads)


def run_group(runs: list[RunConfig], emit, end, stop=None, threads: int | None = None) -> None:
    """Train runs as one ensemble: ``emit(k, m)`` per measurement of member k, then
    ``end(k, status, traceback)`` once per member (diverged as it happens; finished, killed
    or failed at the end). Members of one stack share a failure of training; a failure of
    ``emit`` or ``end`` (the transport, the store) is not theirs and propagates."""
    open_ = list(range(len(runs)))

    def close(status: str, error: str | None = None) -> None:
        for k in open_:
            end(k, status, error)
        open_.clear()

    steps = None
    while True:
        try:
            steps = steps or train_ensemble(runs, threads)
            k, m = next(steps)
        except StopIteration:
            break
        except Exception:
            return close("failed", traceback.format_exc())
        emit(k, m)
        if m.diverged:
            open_.remove(k)
            end(k, "diverged", None)
        if stop is not None and stop.is_set():
            steps.close()
            return close("killed")
    close("finished")


def watch_parent(alive: Callable[[], bool], interval: float = 1.0) -> None:
    """Exit this worker as soon as ``alive()`` says its driver is gone: a driver killed with
    SIGKILL leaves no one to stop its workers, and an orphan would train on for nobody."""

    def watch() -> None:
        while alive():
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="rnnlab-watch-driver").start()
