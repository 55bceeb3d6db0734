"""The task interface, the registry of tasks, and ``make_task``.

A task is one class in one file of this package: its pydantic fields are the experiment
file's ``task:`` options (typed defaults, a docstring under each), its methods draw seeded
batches. Subclassing :class:`Task` with a ``name`` registers the task in ``TASKS``; from
there the experiment schema, ``task.name``'s allowed values and the sweepable keys pick it up.

Importing a task costs no torch: its methods import torch when they first draw or score a
batch, so ``rnnlab validate`` stays instant.
"""

from __future__ import annotations

import math
import typing
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from rnnlab.options import Int, Options

if TYPE_CHECKING:
    import torch

TASKS: dict[str, type[Task]] = {}
"""Every task class by name, in listing order (``Task.order``, then name)."""


class Task(Options):
    """Interface shared by all tasks; a subclass is one task.

    A subclass declares ``name: Literal["x"] = "x"`` (which registers it), its options as
    fields, and:

    - ``input_size`` (D), ``output_size`` (O) and ``baseline``, the loss of the best
      input-ignoring predictor: class attributes, or properties where options set them;
    - ``sample(batch_size, generator)``;
    - ``length`` (L) if it is not ``seq_len``, ``readout`` if not the last step, and
      ``classification = True`` for a cross-entropy loss.
    """

    seq_len: Int = Field(100, ge=2)
    """T: the span of the long-range dependency, in time steps (each task documents its length)."""

    input_size: ClassVar[int]
    output_size: ClassVar[int]
    baseline: ClassVar[float]
    classification: ClassVar[bool] = False
    """Cross-entropy on class ids if true, else mean squared error."""
    readout: ClassVar[slice] = slice(-1, None)
    """The time steps whose outputs enter the loss (the last one unless a task says)."""
    order: ClassVar[float] = math.inf
    """Where the task stands among the task names in messages; tasks without one come after
    the others, by name."""

    @property
    def length(self) -> int:
        """L: the total number of time steps fed to the network."""
        return self.seq_len

    def sample(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch on ``generator.device``. Returns x (L, B, D) float32 and the target y."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sequence loss (B,) of readout outputs ``out`` (S, B, O)."""
        import torch.nn.functional as F

        if self.classification:  # mean cross-entropy over the S read-out steps
            ce = F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none")
            return ce.view(y.shape).mean(0)
        return (out - y).pow(2).mean(dim=(0, 2))  # mean squared error

    def accuracy(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Per-sequence fraction of correct predictions (B,), or None for regression."""
        if not self.classification:
            return None
        return (out.argmax(-1) == y).to(out.dtype).mean(0)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Register a subclass that names itself; one without a ``name`` is abstract."""
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("name")
        if field is None:
            return
        name = field.default
        if typing.get_args(field.annotation) != (name,):
            raise TypeError(f"{cls.__qualname__}: declare name: Literal[{name!r}] = {name!r}")
        where = (cls.__module__, cls.__qualname__)
        if name in TASKS and (TASKS[name].__module__, TASKS[name].__qualname__) != where:
            raise TypeError(f"task {name!r} is defined twice: {TASKS[name]} and {cls}")
        entries = {**TASKS, name: cls}
        TASKS.clear()
        TASKS.update(sorted(entries.items(), key=lambda item: (item[1].order, item[0])))


def make_task(name: str, seq_len: int, **options: Any) -> Task:
    """Build a registered task, e.g. ``make_task("adding", 100, variant="halves")``."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}") from None
    return cls(seq_len=seq_len, **options)


def one_hot(ids: torch.Tensor, n: int) -> torch.Tensor:
    """Symbol ids (L, B) as float32 one-hot vectors (L, B, n)."""
    import torch
    import torch.nn.functional as F

    return F.one_hot(ids, n).to(torch.float32)
