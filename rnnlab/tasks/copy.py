"""The copy / memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from rnnlab.options import Int
from rnnlab.tasks.base import Task, one_hot


class CopyTask(Task):
    """Copy/memory task: recall symbols after seq_len blanks.

    Symbols: 0 blank, 1..K data, K+1 delimiter. The input is N data symbols, T − 1 blanks, the
    delimiter, then N blanks; the target is blank for T + N steps, then the N data symbols.
    L = T + 2N, D = K + 2, O = K + 1; the loss is the cross-entropy averaged over all L steps.

    Example (N = 2, K = 8, T = 3): x = [5, 2, 0, 0, 9, 0, 0] one-hot,
    y = [0, 0, 0, 0, 0, 5, 2].

    Baseline (memoryless: blanks with certainty, then uniform guesses): N·ln K / (T + 2N),
    i.e. 10·ln 8 / (T + 20) for the standard N = 10, K = 8.
    """

    name: Literal["copy"] = "copy"
    n_symbols: Int = Field(10, ge=1)
    """How many symbols to memorise and recall."""
    n_categories: Int = Field(8, ge=2)
    """Alphabet size of the memorised symbols."""

    order: ClassVar[float] = 1
    classification: ClassVar[bool] = True
    readout: ClassVar[slice] = slice(None)

    @property
    def length(self) -> int:
        return self.seq_len + 2 * self.n_symbols

    @property
    def input_size(self) -> int:
        return self.n_categories + 2

    @property
    def output_size(self) -> int:
        return self.n_categories + 1

    @property
    def baseline(self) -> float:
        return self.n_symbols * math.log(self.n_categories) / self.length

    def sample(self, batch_size, generator):
        import torch

        N, K, T, B = self.n_symbols, self.n_categories, self.seq_len, batch_size
        dev = generator.device
        data = torch.randint(1, K + 1, (N, B), generator=generator, device=dev)
        ids = torch.zeros(self.length, B, dtype=torch.long, device=dev)
        ids[:N] = data
        ids[N + T - 1] = K + 1  # delimiter: "recall now"
        y = torch.zeros(self.length, B, dtype=torch.long, device=dev)
        y[T + N :] = data
        return one_hot(ids, self.input_size), y

    def accuracy(self, out, y):
        """Fraction of the N recalled symbols that are right (blanks are not counted)."""
        return (out[-self.n_symbols :].argmax(-1) == y[-self.n_symbols :]).to(out.dtype).mean(0)
