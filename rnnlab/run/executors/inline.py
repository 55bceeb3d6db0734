"""Train the jobs one after another in this process (``--workers 1``)."""

from __future__ import annotations

from typing import ClassVar

from rnnlab.run.executors.base import work


class Inline:
    name: ClassVar[str] = "inline"

    def slots(self) -> int:
        return 1

    def run(self, jobs, deliver, job_over, interrupted) -> None:
        for job in jobs:
            if not interrupted.is_set():
                work(job, deliver, interrupted)
            job_over(job[0], None)
