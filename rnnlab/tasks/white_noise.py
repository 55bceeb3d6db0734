"""White-noise drive: i.i.d. Gaussian inputs (Molgedey, Schuster & Ritter 1992; Rajan, Abbott &
Sompolinsky 2010: input suppresses chaos)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from rnnlab.options import Int, Real
from rnnlab.tasks.base import Task


class WhiteNoiseTask(Task):
    """White-noise drive: x_t ~ N(0, input_std² I) i.i.d. over steps, features and sequences.

    A drive for studying the dynamics, not a memory benchmark: the pre-activation input
    W_xh x_t is then i.i.d. over time with variance q_in = input_std² · Σ_j (W_xh)ᵢⱼ² per unit
    (``theory/q_in``, measured at step 0 from the actual inputs), which shifts the mean-field
    χ₁ and the largest Lyapunov exponent. The target, read at the last step, is the first
    step's first feature (recall it across T steps). L = T, D = n_inputs, O = 1.

    Example (T = 3, n_inputs = 2, input_std = 1)::

        x[:, b] = [[0.54, −1.20], [0.03, 0.88], [−0.41, 1.62]]   ->   y[0, b] = [0.54]

    Baseline: the best constant is 0, with MSE Var(x_1) = input_std².
    """

    name: Literal["white_noise"] = "white_noise"
    n_inputs: Int = Field(1, ge=1)
    """D: Gaussian features per step (n_inputs = model.hidden_size with input_init
    glorot_uniform makes q_in ≈ input_std²)."""
    input_std: Real = Field(1.0, ge=1e-6, le=1e6)
    """Standard deviation of every input, in [1e-6, 1e6] (at 0 the zero state is a fixed
    point; its square is the baseline loss, which must stay a finite, non-zero float)."""

    order: ClassVar[float] = 5
    output_size: ClassVar[int] = 1

    @property
    def input_size(self) -> int:
        return self.n_inputs

    @property
    def baseline(self) -> float:
        return self.input_std**2

    def sample(self, batch_size, generator):
        import torch

        T, B, dev = self.seq_len, batch_size, generator.device
        x = torch.randn(T, B, self.n_inputs, generator=generator, device=dev) * self.input_std
        return x, x[:1, :, :1].clone()  # x (T, B, D), y (1, B, 1)
