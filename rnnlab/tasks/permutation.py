"""The random permutation problem (Hochreiter & Schmidhuber 1997; Pascanu et al. 2013)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from rnnlab.options import Int
from rnnlab.tasks.base import Task, one_hot


class PermutationTask(Task):
    """Random permutation: recall the first symbol at the end.

    The first symbol is 0 or 1 (the class); the other T − 1 are distractors drawn uniformly
    from 2..n_symbols−1. The class is read at the last step. L = T, D = n_symbols, O = 2.

    Example (T = 5, n_symbols = 100): ids = [1, 57, 3, 88, 12] → y = 1.

    Baseline: two equally likely classes, so ln 2.
    """

    name: Literal["permutation"] = "permutation"
    n_symbols: Int = Field(100, ge=3)
    """Alphabet size; the first symbol is one of two classes, the rest are distractors."""

    order: ClassVar[float] = 3
    classification: ClassVar[bool] = True
    output_size: ClassVar[int] = 2
    baseline: ClassVar[float] = math.log(2)

    @property
    def input_size(self) -> int:
        return self.n_symbols

    def sample(self, batch_size, generator):
        import torch

        T, B, dev = self.seq_len, batch_size, generator.device
        ids = torch.randint(2, self.n_symbols, (T, B), generator=generator, device=dev)
        ids[0] = torch.randint(0, 2, (B,), generator=generator, device=dev)
        return one_hot(ids, self.input_size), ids[0].view(1, B).clone()
