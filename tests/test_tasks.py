"""Tasks: shapes, markers, targets, determinism, and each baseline against Monte Carlo."""

import math

import pytest
import torch

from rnnlab.config import TASK_CONFIGS
from rnnlab.tasks import TASKS, make_task


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registry_matches_config_names():
    assert set(TASKS) == set(TASK_CONFIGS)
    for name, cls in TASK_CONFIGS.items():  # config defaults build the task they describe
        cfg = cls(seq_len=30)
        task = make_task(**cfg.model_dump())
        assert task.name == name and task.seq_len == 30


@pytest.mark.parametrize("variant", ["uniform", "halves"])
def test_adding_markers_and_targets(variant):
    task = make_task("adding", 50, variant=variant)
    x, y = task.sample(256, gen())
    assert x.shape == (50, 256, 2) and y.shape == (1, 256, 1)
    markers = x[..., 1]
    assert torch.all(markers.sum(0) == 2)  # exactly two distinct marked positions
    assert torch.allclose(y[0, :, 0], (x[..., 0] * markers).sum(0))
    assert torch.all((x[..., 0] >= 0) & (x[..., 0] < 1))
    if variant == "halves":
        assert torch.all(markers[:25].sum(0) == 1) and torch.all(markers[25:].sum(0) == 1)


def test_adding_baseline_monte_carlo():
    task = make_task("adding", 10)
    _, y = task.sample(400_000, gen(1))
    const = torch.ones_like(y)  # the best input-ignoring predictor: E[sum] = 1
    mse = float(task.loss(const, y).mean())
    assert abs(mse - task.baseline) / task.baseline < 0.01
    assert task.baseline == pytest.approx(1 / 6)


def test_copy_layout_and_baseline():
    task = make_task("copy", 7)  # N = 10, K = 8: L = T + 20
    x, y = task.sample(64, gen())
    assert x.shape == (27, 64, 10) and y.shape == (27, 64)
    ids = x.argmax(-1)
    assert torch.all((ids[:10] >= 1) & (ids[:10] <= 8))
    assert torch.all(ids[10:16] == 0) and torch.all(ids[16] == 9) and torch.all(ids[17:] == 0)
    assert torch.equal(y[17:], ids[:10]) and torch.all(y[:17] == 0)
    # The memoryless predictor: blank for sure for T + N steps, then uniform over the K symbols.
    logits = torch.full((27, 64, 9), -1e9)
    logits[:17, :, 0] = 0
    logits[17:, :, 1:] = 0
    loss = task.loss(logits, y)
    assert torch.allclose(loss, torch.full_like(loss, 10 * math.log(8) / 27), rtol=1e-5)
    assert task.baseline == pytest.approx(10 * math.log(8) / 27)


def test_temporal_order_classes_balanced_and_correct():
    task = make_task("temporal_order", 40)
    x, y = task.sample(40_000, gen(2))
    ids = x.argmax(-1)  # (T, B)
    relevant = ids >= 4
    assert torch.all(relevant.sum(0) == 2)
    pos = relevant.int().argsort(dim=0, descending=True, stable=True)[:2].sort(0).values
    assert torch.all((pos[0] >= 4) & (pos[0] <= 8) & (pos[1] >= 20) & (pos[1] <= 24))
    first, second = ids.gather(0, pos) - 4
    assert torch.equal(y[0], 2 * first + second)
    freq = torch.bincount(y[0], minlength=4).double() / y.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
    # Cross-entropy of the best constant predictor (the class frequencies) ≈ ln 4.
    ce = -(freq * freq.log()).sum()
    assert float(ce) == pytest.approx(task.baseline, rel=1e-3)


@pytest.mark.parametrize("T", [2, 3, 5])
def test_temporal_order_tiny_lengths(T):
    ids = make_task("temporal_order", T).sample(512, gen())[0].argmax(-1)
    assert torch.all((ids >= 4).sum(0) == 2)


def test_permutation_first_symbol_recall():
    task = make_task("permutation", 30, n_symbols=20)
    x, y = task.sample(20_000, gen(3))
    ids = x.argmax(-1)
    assert x.shape == (30, 20_000, 20)
    assert torch.equal(y[0], ids[0]) and torch.all(ids[0] < 2) and torch.all(ids[1:] >= 2)
    p1 = y.double().mean()
    ce = -(p1 * p1.log() + (1 - p1) * (1 - p1).log())
    assert float(ce) == pytest.approx(math.log(2), rel=1e-3) and task.baseline == pytest.approx(
        math.log(2)
    )


@pytest.mark.parametrize("name", sorted(TASKS))
def test_determinism(name):
    task = make_task(name, 20)
    a, b, c = (task.sample(8, gen(s)) for s in (5, 5, 6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_unknown_task():
    with pytest.raises(ValueError, match="expected one of: adding"):
        make_task("addding", 10)
