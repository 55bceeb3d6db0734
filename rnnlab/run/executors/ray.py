"""Each job is a Ray task with the experiment's ``resources`` (``--executor ray``, optionally
``--ray-address HEAD:PORT`` of a running cluster; without one a local Ray starts). Messages
come back through a Ray queue; the driver stays the single writer to the store, so it needs
a store the cluster's driver can reach (an MLflow tracking server for a cluster)."""

from __future__ import annotations

import os
from typing import ClassVar

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


def _task(q, job) -> None:
    """A Ray task: ``ray.cancel`` raises KeyboardInterrupt here, which ``work`` turns into
    runs ended as killed with their measurements so far."""
    work(job, q.put)


class Ray:
    name: ClassVar[str] = "ray"

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
            refs = {task.remote(q, job): job[0] for job in jobs}
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
