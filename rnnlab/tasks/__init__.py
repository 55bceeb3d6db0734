"""Synthetic long-dependency tasks: pure, seeded generators.

Every task is time-major like ``torch.nn.RNN``: ``x`` is (L, B, D) where L is the task's
total sequence length. A batch is drawn on its generator's device, by ops that take the
generator (``rand``, ``randint``), so a CUDA generator samples on the GPU with no host work
and a CPU generator gives the same bits as ever. The network reads out at ``task.readout`` (a slice of time steps),
giving ``out`` of shape (S, B, O); ``task.loss(out, y)`` returns one loss per sequence (B,).

``baseline`` is the analytic loss of the best predictor that ignores the input: a run whose
``eval/loss_ratio`` (loss / baseline) stays at 1 has learned nothing.

To add a task: subclass :class:`Task`, register it in ``TASKS``, and add its options class
to ``rnnlab.config`` (``TaskName`` and ``TASK_CONFIGS``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Task:
    """Interface shared by all tasks."""

    name: str
    seq_len: int  # T, the dependency span
    length: int  # L, total time steps fed to the network
    input_size: int  # D
    output_size: int  # O
    readout: slice  # time steps whose outputs enter the loss
    baseline: float  # loss of the best input-ignoring predictor
    classification: bool

    def sample(
        self, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a batch on ``generator.device``. Returns x (L, B, D) float32 and the target y."""
        raise NotImplementedError

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sequence loss (B,) of readout outputs ``out`` (S, B, O)."""
        if self.classification:  # mean cross-entropy over the S read-out steps
            ce = F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none")
            return ce.view(y.shape).mean(0)
        return (out - y).pow(2).mean(dim=(0, 2))  # mean squared error

    def accuracy(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Per-sequence fraction of correct predictions (B,), or None for regression."""
        if not self.classification:
            return None
        return (out.argmax(-1) == y).to(out.dtype).mean(0)


def _one_hot(ids: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(ids, n).to(torch.float32)


class Adding(Task):
    """Adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015; Arjovsky et al. 2016).

    Input channel 0 holds U(0, 1) numbers, channel 1 marks two of them; the target, read at
    the last step, is the sum of the two marked numbers. L = T.

    variant ``uniform``: the two markers at distinct positions anywhere (Le et al. 2015);
    ``halves``: one marker in each half of the sequence (Arjovsky et al. 2016).

    Example (T = 4, halves)::

        x[:, b] = [[0.31, 0], [0.75, 1], [0.12, 0], [0.58, 1]]   ->   y[0, b] = [1.33]

    Baseline: the best constant is E[sum] = 1, with MSE Var(u1 + u2) = 2 · 1/12 = 1/6.
    """

    name = "adding"
    classification = False

    def __init__(self, seq_len: int, variant: str = "uniform"):
        if variant not in ("uniform", "halves"):
            raise ValueError(f"unknown adding variant {variant!r}")
        self.seq_len = self.length = seq_len
        self.variant = variant
        self.input_size, self.output_size = 2, 1
        self.readout = slice(-1, None)
        self.baseline = 1 / 6

    def sample(self, batch_size, generator):
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


class Copy(Task):
    """Copy / memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    Symbols: 0 blank, 1..K data, K+1 delimiter. The input is N data symbols, T − 1 blanks, the
    delimiter, then N blanks; the target is blank for T + N steps, then the N data symbols.
    L = T + 2N; the loss is the cross-entropy averaged over all L steps.

    Example (N = 2, K = 8, T = 3): x = [5, 2, 0, 0, 9, 0, 0] one-hot (D = K + 2),
    y = [0, 0, 0, 0, 0, 5, 2] (O = K + 1).

    Baseline (memoryless: blanks with certainty, then uniform guesses): N·ln K / (T + 2N),
    i.e. 10·ln 8 / (T + 20) for the standard N = 10, K = 8.
    """

    name = "copy"
    classification = True

    def __init__(self, seq_len: int, n_symbols: int = 10, n_categories: int = 8):
        self.seq_len, self.n_symbols, self.n_categories = seq_len, n_symbols, n_categories
        self.length = seq_len + 2 * n_symbols
        self.input_size, self.output_size = n_categories + 2, n_categories + 1
        self.readout = slice(None)
        self.baseline = n_symbols * math.log(n_categories) / self.length

    def sample(self, batch_size, generator):
        N, K, T, B = self.n_symbols, self.n_categories, self.seq_len, batch_size
        dev = generator.device
        data = torch.randint(1, K + 1, (N, B), generator=generator, device=dev)
        ids = torch.zeros(self.length, B, dtype=torch.long, device=dev)
        ids[:N] = data
        ids[N + T - 1] = K + 1  # delimiter: "recall now"
        y = torch.zeros(self.length, B, dtype=torch.long, device=dev)
        y[T + N :] = data
        return _one_hot(ids, self.input_size), y

    def accuracy(self, out, y):
        """Fraction of the N recalled symbols that are right (blanks are not counted)."""
        return (out[-self.n_symbols :].argmax(-1) == y[-self.n_symbols :]).to(out.dtype).mean(0)


class TemporalOrder(Task):
    """Temporal order problem (Hochreiter & Schmidhuber 1997, exp. 6a; Pascanu et al. 2013).

    Distractors a, b, c, d (ids 0–3) fill the sequence; at t1 ∈ [0.1T, 0.2T] and
    t2 ∈ [0.5T, 0.6T] stands X or Y (ids 4, 5). The class, read at the last step, is the
    ordered pair: XX → 0, XY → 1, YX → 2, YY → 3. L = T, D = 6, O = 4.

    Example (T = 10): ids = [2, X, 0, 3, 1, Y, 0, 2, 1, 3] → y = 1 (XY).

    Baseline: the four classes are equally likely, so ln 4.
    """

    name = "temporal_order"
    classification = True

    def __init__(self, seq_len: int):
        self.seq_len = self.length = seq_len
        self.input_size, self.output_size = 6, 4
        self.readout = slice(-1, None)
        self.baseline = math.log(4)

    def sample(self, batch_size, generator):
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
        return _one_hot(ids, self.input_size), y


class Permutation(Task):
    """Random permutation: first-symbol recall (Hochreiter & Schmidhuber 1997; Pascanu et al. 2013).

    The first symbol is 0 or 1 (the class); the other T − 1 are distractors drawn uniformly
    from 2..n_symbols−1. The class is read at the last step. L = T, D = n_symbols, O = 2.

    Example (T = 5, n_symbols = 100): ids = [1, 57, 3, 88, 12] → y = 1.

    Baseline: two equally likely classes, so ln 2.
    """

    name = "permutation"
    classification = True

    def __init__(self, seq_len: int, n_symbols: int = 100):
        self.seq_len = self.length = seq_len
        self.n_symbols = n_symbols
        self.input_size, self.output_size = n_symbols, 2
        self.readout = slice(-1, None)
        self.baseline = math.log(2)

    def sample(self, batch_size, generator):
        T, B, dev = self.seq_len, batch_size, generator.device
        ids = torch.randint(2, self.n_symbols, (T, B), generator=generator, device=dev)
        ids[0] = torch.randint(0, 2, (B,), generator=generator, device=dev)
        return _one_hot(ids, self.input_size), ids[0].view(1, B).clone()


TASKS: dict[str, type[Task]] = {
    "adding": Adding,
    "copy": Copy,
    "temporal_order": TemporalOrder,
    "permutation": Permutation,
}


def make_task(name: str, seq_len: int, **options) -> Task:
    """Build a registered task, e.g. ``make_task("adding", 100, variant="halves")``."""
    try:
        cls = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASKS)}") from None
    return cls(seq_len, **options)
