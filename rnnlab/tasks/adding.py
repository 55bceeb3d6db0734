"""The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015; Arjovsky et al. 2016)."""

from __future__ import annotations

from typing import ClassVar, Literal

from rnnlab.tasks.base import Task


class AddingTask(Task):
    """Adding problem: sum the two marked numbers.

    Input channel 0 holds U(0, 1) numbers, channel 1 marks two of them; the target, read at
    the last step, is the sum of the two marked numbers. L = T, D = 2, O = 1.

    Example (T = 4, halves)::

        x[:, b] = [[0.31, 0], [0.75, 1], [0.12, 0], [0.58, 1]]   ->   y[0, b] = [1.33]

    Baseline: the best constant is E[sum] = 1, with MSE Var(u1 + u2) = 2 · 1/12 = 1/6.
    """

    name: Literal["adding"] = "adding"
    variant: Literal["uniform", "halves"] = "uniform"
    """uniform: markers anywhere (Le et al. 2015); halves: one per half (Arjovsky et al. 2016)."""

    order: ClassVar[float] = 0
    input_size: ClassVar[int] = 2  # (value, marker)
    output_size: ClassVar[int] = 1
    baseline: ClassVar[float] = 1 / 6

    def sample(self, batch_size, generator):
        import torch

        T, B, dev = self.seq_len, batch_size, generator.device
        values = torch.rand(T, B, generator=generator, device=dev)
        if self.variant == "uniform":  # two distinct positions, uniformly
            pos = torch.rand(B, T, generator=generator, device=dev).topk(2, dim=1).indices.T
        else:
            half = T // 2
            first = torch.randint(0, half, (B,), generator=generator, device=dev)
            second = torch.randint(half, T, (B,), generator=generator, device=dev)
            pos = torch.stack([first, second])  # (2, B)
        markers = torch.zeros(T, B, device=dev)
        markers.scatter_(0, pos, 1.0)
        x = torch.stack([values, markers], dim=-1)  # (T, B, 2)
        y = (values * markers).sum(0).view(1, B, 1)  # (1, B, 1)
        return x, y
