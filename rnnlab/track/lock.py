"""One live rnnlab process trains an experiment at a time, so a run_key is never trained twice.

The lock is a registered model named after the experiment in the store's model registry: its
creation is atomic in every MLflow store (a unique name), it works the same for SQLite and
for a tracking server shared by several machines, and it is deleted on release. A holder
killed without releasing (SIGKILL, power loss) is found dead by the next process, by its pid
on the same host or by its silent heartbeat.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rnnlab.track import StoreBusy, pid_alive

LOCK_HEARTBEAT = 20.0
"""Seconds between a lock holder's heartbeats…"""
LOCK_STALE = 120.0
"""…and the silence after which a holder on another host is taken for dead."""


def process_start(pid: int) -> str:
    """The kernel's start time of a process (tells a reused pid from the original), or ''."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def holder_alive(tags: dict[str, str]) -> bool:
    """Is the process that wrote these lock tags alive: by pid here, by heartbeat elsewhere?"""
    if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
        pid = int(tags["pid"])
        start = tags.get("pid_start", "")
        return pid_alive(pid) and (not start or process_start(pid) == start)
    try:
        return time.time() - float(tags.get("heartbeat", "0")) < LOCK_STALE
    except ValueError:
        return False


class ExperimentLock:
    """The lock of one experiment in one store; ``acquire`` it, then ``release`` it."""

    def __init__(self, client: MlflowClient, uri: str, experiment_id: str, experiment: str):
        self.client, self.uri, self.experiment = client, uri, experiment
        self.name = f"rnnlab-lock-experiment-{experiment_id}"
        self._mine: dict[str, str] | None = None
        self._beat = threading.Event()

    def acquire(self) -> None:
        """Hold the lock; raises StoreBusy if a live process holds it."""
        pid = os.getpid()
        mine = {
            "token": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": str(pid),
            "pid_start": process_start(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "heartbeat": f"{time.time():.0f}",
            "experiment": self.experiment,
        }
        for _ in range(5):
            try:
                self.client.create_registered_model(
                    self.name,
                    tags=mine,
                    description=f"rnnlab: {self.experiment!r} is being trained",
                )
                break
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            held = self._tags(self.name)
            if held is None:
                continue  # released meanwhile: try again
            if holder_alive(held):
                raise StoreBusy(
                    f"experiment {self.experiment!r} is being trained into {self.uri} by "
                    f"another rnnlab (pid {held.get('pid')} on {held.get('host')}, since "
                    f"{held.get('since')}); wait for it to finish, then run this again to "
                    "resume"
                )
            self._break_stale(held)
        else:
            raise StoreBusy(f"could not take the lock of experiment {self.experiment!r}")
        self._mine = mine
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        if self._mine is None:
            return
        self._beat.set()
        token, self._mine = self._mine["token"], None
        with contextlib.suppress(MlflowException):
            if (self._tags(self.name) or {}).get("token") == token:
                self.client.delete_registered_model(self.name)

    def _tags(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self.client.get_registered_model(name).tags)
        except MlflowException:
            return None

    def _break_stale(self, held: dict[str, str]) -> None:
        """Take a dead holder's lock away. Renaming is atomic, so of several processes that
        find the same stale lock exactly one moves it; one that moved a fresh lock (taken
        between its look and its rename) puts it back."""
        aside = f"{self.name}-stale-{uuid.uuid4().hex[:8]}"
        try:
            self.client.rename_registered_model(self.name, aside)
        except MlflowException:
            return
        if (self._tags(aside) or {}).get("token") != held.get("token"):
            with contextlib.suppress(MlflowException):
                self.client.rename_registered_model(aside, self.name)
            return
        self.client.delete_registered_model(aside)

    def _heartbeat(self) -> None:
        client = MlflowClient(self.uri)  # its own client: this runs beside the writer
        while not self._beat.wait(LOCK_HEARTBEAT):
            with contextlib.suppress(Exception):  # a missed beat is not an error
                client.set_registered_model_tag(self.name, "heartbeat", f"{time.time():.0f}")
