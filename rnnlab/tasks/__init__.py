"""Synthetic long-dependency tasks: pure, seeded generators, one file each.

Every task is time-major like ``torch.nn.RNN``: ``x`` is (L, B, D) where L is the task's
total sequence length. A batch is drawn on its generator's device, by ops that take the
generator (``rand``, ``randint``), so a CUDA generator samples on the GPU with no host work
and a CPU generator gives the same bits as ever. The network reads out at ``task.readout``
(a slice of time steps), giving ``out`` of shape (S, B, O); ``task.loss(out, y)`` returns one
loss per sequence (B,).

``baseline`` is the analytic loss of the best predictor that ignores the input: a run whose
``eval/loss_ratio`` (loss / baseline) stays at 1 has learned nothing.

To add a task: add one file to this folder with a subclass of :class:`Task` (see
``rnnlab/tasks/base.py`` and, for the pattern, ``temporal_order.py``). Every module here is
imported below, which registers its task; nothing else needs an edit.
"""

import importlib
import pkgutil

from rnnlab.tasks.base import TASKS, Task, make_task

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TASKS", "Task", "make_task"]
