"""Each job is a Ray task with the experiment's ``resources`` (``--executor ray``, optionally
``--ray-address HEAD:PORT`` of a running cluster; without one a local Ray starts). Messages
come back through a Ray queue; the driver stays the single writer to the store, so it needs
a store the cluster's driver can reach (an MLflow tracking server for a cluster)."""

from __future__ import annotations

import importlib.util
import os
import socket
from typing import ClassVar

from rnnlab.config import ConfigError
from rnnlab.run.executors.base import work


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
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, configure_logging=False, **kwargs)
    return ray


def _task(q, job, threads: int) -> None:
    """A Ray task: ``ray.cancel`` raises KeyboardInterrupt here, which ``work`` turns into
    runs ended as killed with their measurements so far. ``threads``: its cpus beyond the one
    that trains, for the host measurements."""
    work(job, q.put, threads=threads)


def _check(args, uri: str) -> None:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            ["--executor ray needs Ray: pip install 'rnnlab[ray]' (make install includes it)"]
        )
    if args.ray_address and not uri.startswith(("http://", "https://")):
        raise ConfigError(
            [
                f"--ray-address: a cluster needs a shared tracking server, not {uri}; start one "
                "(make server) and pass --tracking-uri http://HOST:PORT"
            ]
        )
    if args.ray_address:  # a head that is not there: seconds, not Ray's minutes of retries
        host, _, port = args.ray_address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError([f"--ray-address: expected HOST:PORT, got {args.ray_address!r}"])
        if not _speaks_grpc(host, int(port)):
            raise ConfigError(
                [
                    f"--ray-address {args.ray_address}: no Ray head answers there (nothing "
                    "listens, or it is not Ray's gRPC port)"
                ]
            )


def _speaks_grpc(host: str, port: int, timeout: float = 5.0) -> bool:
    """Does ``host:port`` answer the HTTP/2 connection preface with a SETTINGS frame, as a
    Ray head's gRPC server does? Seconds, where ray.init waits minutes on a wrong port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")  # an empty SETTINGS
            head = conn.recv(9)
    except OSError:
        return False
    return len(head) == 9 and head[3] == 0x04  # frame type 4: SETTINGS


class Ray:
    name: ClassVar[str] = "ray"
    choice: ClassVar[str] = "ray"
    help: ClassVar[str] = "one Ray task per ensemble (--ray-address HOST:PORT joins a cluster)"
    check = staticmethod(_check)

    @classmethod
    def from_cli(cls, args, resources, workers: int):
        return cls(address=args.ray_address, cpus=resources.cpus, gpus=resources.gpus), "Ray tasks"

    def __init__(self, address: str | None, cpus: float = 1.0, gpus: float = 0.0):
        self.address, self.cpus, self.gpus = address, cpus, gpus

    def slots(self) -> int:
        ray = ray_init(self.address)
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus))

    def run(self, jobs, deliver, job_over, interrupted) -> None:
        ray = ray_init(self.address)
        from ray.util.queue import Empty, Queue

        try:
            task = ray.remote(_task).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)
            q = Queue(actor_options={"num_cpus": 0})
            threads = max(0, int(self.cpus) - 1)
            refs = {task.remote(q, job, threads): job[0] for job in jobs}
            cancelled = False
            while refs:
                try:
                    batches = [q.get(timeout=0.2), *q.get_nowait_batch(q.qsize())]
                except Empty:
                    batches = []
                for batch in batches:
                    deliver(batch)
                if interrupted.is_set() and not cancelled:
                    cancelled = True
                    for ref in refs:
                        ray.cancel(ref)  # KeyboardInterrupt in running tasks
                if batches or q.qsize():
                    continue  # a finished task's messages are all queued: drain them first
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
                for ref in done:
                    error = None
                    try:
                        ray.get(ref)
                    except Exception as e:  # cancelled before it started, or its worker died
                        error = f"{type(e).__name__}: {e}"
                    job_over(refs.pop(ref), error)
        finally:
            ray.shutdown()
