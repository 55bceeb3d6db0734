"""Random labels: Gaussian sequences with coin-flip labels (Zhang et al. 2017; the Keras
SimpleRNN tutorial's random-data example)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from rnnlab.options import Int
from rnnlab.tasks.base import Task


class RandomLabelsTask(Task):
    """Binary labels independent of the inputs: only memorising a fixed training set beats
    chance.

    x_t ~ N(0, I_D) i.i.d.; the label, read at the last step, is a fair coin flip. The output is
    one logit z with a sigmoid readout: the loss is binary cross-entropy on the logit, and a
    prediction is right when (z > 0) equals the label. L = T, D = n_features, O = 1.

    Example (T = 2, n_features = 3)::

        x[:, b] = [[0.2, −1.1, 0.7], [1.4, 0.3, −0.5]]   ->   y[0, b] = [1.]

    Baseline: labels carry no information about inputs, so the best predictor of a fresh
    sequence outputs p = ½: ln 2. With a fixed training set (``train.train_size``) the network
    can fall below ln 2 on that set, never on held-out data.
    """

    name: Literal["random_labels"] = "random_labels"
    n_features: Int = Field(8, ge=1)
    """D: Gaussian input features per step."""

    order: ClassVar[float] = 6
    classification: ClassVar[bool] = True  # logs accuracy; the loss is the BCE below
    output_size: ClassVar[int] = 1
    baseline: ClassVar[float] = math.log(2)

    @property
    def input_size(self) -> int:
        return self.n_features

    def sample(self, batch_size, generator):
        import torch

        T, B, dev = self.seq_len, batch_size, generator.device
        x = torch.randn(T, B, self.n_features, generator=generator, device=dev)
        labels = torch.randint(0, 2, (1, B, 1), generator=generator, device=dev)
        return x, labels.float()  # x (T, B, D), y (1, B, 1) in {0., 1.}

    def loss(self, out, y):
        """Binary cross-entropy with logits, per sequence (B,): out and y (1, B, 1)."""
        import torch.nn.functional as F

        bce = F.binary_cross_entropy_with_logits(out, y, reduction="none")
        return bce.mean(dim=(0, 2))

    def accuracy(self, out, y):
        """(logit > 0) == label, per sequence (B,)."""
        return ((out > 0).to(out.dtype) == y).to(out.dtype).mean(dim=(0, 2))
