"""Each job is a SLURM job, submitted with submitit (``--executor slurm``).

The experiment's ``resources`` section sets what a job asks for (``cpus``, ``gpus``,
``partition``, ``time_min``, ``mem_gb``); ``--workers N`` caps the jobs in the queue at once
(default: all). Workers cannot reach the driver's memory from a cluster node, so each job
appends its message batches to a spool file in the submitit folder (a shared filesystem on
a cluster, as submitit itself requires) and the driver reads them as they grow: the driver
stays the single writer to the store. A job watches the driver's heartbeat file and stops
when the driver is gone. Without ``sbatch`` on this machine, submitit's local executor runs
the jobs as local processes (that is how the tests run it).

    rnnlab sweep experiments/vanishing.yaml --executor slurm --slurm-folder /shared/rnnlab/slurm
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import struct
import time
import uuid
from pathlib import Path
from typing import ClassVar

from rnnlab.config import ConfigError
from rnnlab.run.executors.base import watch_parent, work

HEARTBEAT_SECONDS = 5.0
"""The driver touches its heartbeat file this often…"""
DRIVER_GONE_SECONDS = 120.0
"""…and a job whose driver stayed silent this long stops (its runs are retrained on resume)."""
_FRAME = struct.Struct("<Q")  # each spool record: its length, then a pickled message list


def _job(job, spool: str, heartbeat: str) -> None:
    """The SLURM job: train one ensemble, appending message batches to ``spool``."""
    beat = Path(heartbeat)
    watch_parent(lambda: time.time() - beat.stat().st_mtime < DRIVER_GONE_SECONDS, 10.0)
    with open(spool, "ab", buffering=0) as f:

        def send(batch) -> None:
            data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
            f.write(_FRAME.pack(len(data)) + data)  # one write: a reader sees whole frames

        work(job, send)


class _Spool:
    """Reads the complete frames appended to a job's spool file since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def read(self) -> list:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        batches, at = [], 0
        while at + _FRAME.size <= len(data):
            (n,) = _FRAME.unpack_from(data, at)
            if at + _FRAME.size + n > len(data):
                break  # a frame still being written
            batches.append(pickle.loads(data[at + _FRAME.size : at + _FRAME.size + n]))
            at += _FRAME.size + n
        self.offset += at
        return batches


class Slurm:
    name: ClassVar[str] = "slurm"
    choice: ClassVar[str] = "slurm"
    help: ClassVar[str] = (
        "one SLURM job per ensemble, via submitit (local processes without sbatch)"
    )

    @staticmethod
    def check(args, tracking_uri: str) -> None:
        if importlib.util.find_spec("submitit") is None:
            raise ConfigError(
                [
                    "--executor slurm needs submitit: pip install 'rnnlab[slurm]' (make install has it)"
                ]
            )

    @classmethod
    def from_cli(cls, args, resources, workers: int):
        executor = cls(
            folder=args.slurm_folder,
            max_jobs=args.workers,
            cpus=resources.cpus,
            gpus=resources.gpus,
            partition=resources.partition,
            time_min=resources.time_min,
            mem_gb=resources.mem_gb,
        )
        return executor, f"{executor.cluster} jobs via submitit, folder {args.slurm_folder}"

    def __init__(
        self,
        folder: Path,
        max_jobs: int | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
        partition: str | None = None,
        time_min: int = 60,
        mem_gb: float | None = None,
    ):
        import submitit

        self.folder = Path(folder).absolute()
        self.max_jobs = max_jobs
        params = {"timeout_min": time_min, "cpus_per_task": max(1, int(cpus)), "name": "rnnlab"}
        if gpus:
            params["gpus_per_node"] = max(1, int(gpus))
        if mem_gb:
            params["mem_gb"] = mem_gb
        if partition:
            params["slurm_partition"] = partition
        self.params = params
        self.cluster = submitit.AutoExecutor.which()  # "slurm", or "local" without sbatch

    def _submitter(self):
        """submitit's executor, made when there are jobs: it creates its folder."""
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        executor.update_parameters(**self.params)
        return executor

    def slots(self) -> int:
        return self.max_jobs or 1_000_000

    def run(self, jobs, deliver, job_over, interrupted) -> None:
        submitter = self._submitter()
        run_dir = self.folder / f"sweep-{uuid.uuid4().hex[:8]}"
        run_dir.mkdir(parents=True)
        heartbeat = run_dir / "driver.alive"
        heartbeat.touch()
        waiting = list(enumerate(jobs))
        running: dict[int, tuple] = {}  # job number → (submitit job, spool reader, unit)
        beat = 0.0
        try:
            while waiting or running:
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    os.utime(heartbeat)
                    beat = time.monotonic()
                while waiting and len(running) < self.slots() and not interrupted.is_set():
                    n, job = waiting.pop(0)
                    spool = run_dir / f"job-{n}.spool"
                    handle = submitter.submit(_job, job, str(spool), str(heartbeat))
                    running[n] = (handle, _Spool(spool), job[0])
                if interrupted.is_set():
                    for _, job in waiting:  # never submitted: nothing to close
                        job_over(job[0], None)
                    waiting = []
                    for handle, _, _ in running.values():
                        handle.cancel(check=False)  # SIGINT / scancel: runs end as killed
                delivered = False
                for n, (handle, spool, unit) in list(running.items()):
                    for batch in spool.read():
                        deliver(batch)
                        delivered = True
                    if handle.done():
                        for batch in spool.read():  # whatever it wrote last
                            deliver(batch)
                        try:
                            exc = handle.exception()
                        except Exception as e:  # submitit could not read the job's result
                            exc = e
                        error = None if exc is None else f"SLURM job {handle.job_id}: {exc}"
                        job_over(unit, error)
                        del running[n]
                if not delivered:
                    time.sleep(0.2)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
