"""The temporal order problem (Hochreiter & Schmidhuber 1997, exp. 6a; Pascanu et al. 2013)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from rnnlab.tasks.base import Task, one_hot


class TemporalOrderTask(Task):
    """Temporal order: classify the order of two marked symbols.

    Distractors a, b, c, d (ids 0–3) fill the sequence; at t1 ∈ [0.1T, 0.2T] and
    t2 ∈ [0.5T, 0.6T] stands X or Y (ids 4, 5). The class, read at the last step, is the
    ordered pair: XX → 0, XY → 1, YX → 2, YY → 3. L = T, D = 6, O = 4.

    Example (T = 10): ids = [2, X, 0, 3, 1, Y, 0, 2, 1, 3] → y = 1 (XY).

    Baseline: the four classes are equally likely, so ln 4.
    """

    name: Literal["temporal_order"] = "temporal_order"

    order: ClassVar[float] = 2
    classification: ClassVar[bool] = True
    input_size: ClassVar[int] = 6
    output_size: ClassVar[int] = 4
    baseline: ClassVar[float] = math.log(4)

    def sample(self, batch_size, generator):
        import torch

        T, B, dev = self.seq_len, batch_size, generator.device
        ids = torch.randint(0, 4, (T, B), generator=generator, device=dev)
        # t1 ∈ [0.1T, 0.2T], t2 ∈ [0.5T, 0.6T], kept distinct and inside the sequence for tiny T
        lo1, hi1 = int(0.1 * T), int(0.2 * T)
        lo2 = max(int(0.5 * T), hi1 + 1)
        hi2 = min(max(lo2, int(0.6 * T)), T - 1)
        t1 = torch.randint(lo1, hi1 + 1, (B,), generator=generator, device=dev)
        t2 = torch.randint(lo2, hi2 + 1, (B,), generator=generator, device=dev)
        first, second = torch.randint(0, 2, (2, B), generator=generator, device=dev)
        ids.scatter_(0, t1.view(1, B), (4 + first).view(1, B))
        ids.scatter_(0, t2.view(1, B), (4 + second).view(1, B))
        y = (2 * first + second).view(1, B)
        return one_hot(ids, self.input_size), y
