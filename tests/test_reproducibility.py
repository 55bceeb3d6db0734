"""A run_key's numbers never depend on how it was scheduled.

Same config, device and dtype → the same bits, whether the grid point trains alone or in a
stack of any size, with any number of workers, with ``train.ensemble`` off, auto or K, or
after an interrupted sweep resumes (tests/test_ensemble.py covers resume). Checked in float32
on a chaotic case over hundreds of steps, where one rounding difference grows into a
visibly different run, and on every task, activation and optimizer at odd shapes.
"""

import math

import numpy as np
import pytest
import torch

from rnnlab.config import Experiment, RunConfig
from rnnlab.optim import OPTIMIZERS
from rnnlab.run.sweep import run_sweep
from rnnlab.track import MemoryTracker
from rnnlab.train import train, train_ensemble


def cfg(seed=0, **sections) -> RunConfig:
    spec = {
        "task": {"name": "adding", "seq_len": 100},
        "model": {"hidden_size": 32, "gain": 1.1},
        "train": {"steps": 300, "batch_size": 32, "eval_size": 64},
        "probe": {"every": 25},
        "seed": seed,
    }
    for key, value in sections.items():
        spec[key] = spec.get(key, {}) | value
    return RunConfig.model_validate(spec)


def identical(a: list, b: list) -> bool:
    """Every measurement the same bits (nan equals nan)."""
    if [(m.step, m.diverged) for m in a] != [(m.step, m.diverged) for m in b]:
        return False
    for ma, mb in zip(a, b, strict=True):
        if ma.metrics.keys() != mb.metrics.keys():
            return False
        for k, v in mb.metrics.items():
            if not (ma.metrics[k] == v or (math.isnan(v) and math.isnan(ma.metrics[k]))):
                return False
        if (ma.profile is None) != (mb.profile is None):
            return False
        if ma.profile is not None and not np.array_equal(ma.profile, mb.profile, equal_nan=True):
            return False
    return True


def by_member(runs: list[RunConfig]) -> list[list]:
    out: list[list] = [[] for _ in runs]
    for k, m in train_ensemble(runs):
        out[k].append(m)
    return out


def test_float32_chaotic_training_is_the_same_bits_alone_and_in_any_stack():
    """300 float32 steps of T = 100 adding problems with W_hh = 1.1·Q: the case where a
    singleton once ended 21× away from its stacked self. Alone, in a stack of four and in two
    stacks of two, with members that differ in seed, learning rate, clipping and gain."""
    runs = [
        cfg(0),
        cfg(1, train={"lr": 3e-3}),
        cfg(2, train={"clip_norm": 0.5}),
        cfg(3, model={"gain": 1.3, "init": "gaussian"}),
    ]
    alone = [list(train(r)) for r in runs]
    assert len(alone[0]) == 301
    # the case is chaotic: the members do end far apart, so equality is not an accident
    finals = [a[-1].metrics["grad/norm"] for a in alone]
    assert len(set(finals)) == 4
    stacked = by_member(runs)
    pairs = by_member(runs[:2]) + by_member(runs[2:])
    for k in range(4):
        assert identical(stacked[k], alone[k]), f"member {k}: stack of 4 differs from alone"
        assert identical(pairs[k], alone[k]), f"member {k}: stack of 2 differs from alone"


SMALL = {"train": {"steps": 24, "batch_size": 3, "eval_size": 5}, "probe": {"every": 6}}


@pytest.mark.parametrize(
    "task",
    [
        {"name": "adding", "seq_len": 7},
        {"name": "copy", "seq_len": 5, "n_symbols": 3, "n_categories": 4},
        {"name": "temporal_order", "seq_len": 9},
        {"name": "permutation", "seq_len": 6, "n_symbols": 5},
    ],
)
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear", "leaky_relu"])
def test_every_task_and_activation_at_odd_shapes(task, activation):
    """B = 3, H = 5: shapes where vectorised loops have tails and ATen picks its small-matrix
    kernels. Three members with their own optimizer settings, alone vs stacked."""
    model = {"hidden_size": 5, "activation": activation}
    runs = [
        cfg(0, task=task, model=model, **SMALL),
        cfg(1, task=task, model=model | {"gain": 0.9}, **SMALL),
        cfg(2, task=task, model=model, **SMALL | {"train": SMALL["train"] | {"lr": 0.01}}),
    ]
    stacked = by_member(runs)
    for k, run in enumerate(runs):
        assert identical(stacked[k], list(train(run))), f"member {k}"


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam"])
def test_every_optimizer_with_momentum_and_divergence(optimizer):
    """Momentum state, a member that diverges mid-run (dropped from the stack, the others'
    state re-indexed) and per-member learning rates: still the same bits."""
    base = {"optimizer": optimizer, "momentum": 0.0 if optimizer == "adam" else 0.9}
    relu = {"activation": "relu"}
    runs = [
        cfg(0, train=base | {"steps": 60, "lr": 0.01}, model=relu),
        cfg(1, train=base | {"steps": 60, "lr": 0.3}, model=relu | {"gain": 1.5}),
        cfg(2, train=base | {"steps": 60, "lr": 0.002, "divergence_threshold": 2.0}, model=relu),
    ]
    stacked = by_member(runs)
    assert any(m.diverged for member in stacked for m in member)  # the case is exercised
    for k, run in enumerate(runs):
        assert identical(stacked[k], list(train(run))), f"member {k}"


def test_sweep_results_do_not_depend_on_workers_or_ensemble_setting():
    """The same grid through the inline executor one run at a time, through two worker
    processes with auto stacking, and inline in stacks of two: the same bits per run_key."""
    experiment = Experiment(name="sched")
    grid = [cfg(s, model={"gain": g}, train={"steps": 40}) for s in range(2) for g in (1.0, 1.2)]

    def results(workers: int, ensemble) -> dict[str, dict]:
        runs = [
            r.model_copy(update={"train": r.train.model_copy(update={"ensemble": ensemble})})
            for r in grid
        ]
        tracker = MemoryTracker()
        summary = run_sweep(experiment, runs, tracker, workers=workers)
        assert summary.finished == len(grid)
        return {r["run_key"]: r for r in tracker.history}

    off = results(1, "off")
    for workers, ensemble in ((2, "auto"), (1, 2)):
        other = results(workers, ensemble)
        assert other.keys() == off.keys()
        for key, run in off.items():
            assert other[key]["metrics"] == run["metrics"], (workers, ensemble, key)
            for (sa, pa), (sb, pb) in zip(run["profiles"], other[key]["profiles"], strict=True):
                assert sa == sb and np.array_equal(pa, pb)


# ------------------------------------------------------------------------ optimizers
TORCH = {
    "sgd": lambda p, lr, mom: torch.optim.SGD(p, lr=lr, momentum=mom),
    "adam": lambda p, lr, mom: torch.optim.Adam(p, lr=lr),
    "rmsprop": lambda p, lr, mom: torch.optim.RMSprop(p, lr=lr, momentum=mom),
}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_stack_optimizers_equal_torch_optim_per_member(name, momentum):
    """Each member of a stack moves as torch.optim moves it alone with its own lr (float64:
    1e-12 relative over 20 steps of changing gradients)."""
    g = torch.Generator().manual_seed(0)
    K, lrs = 3, [0.1, 0.01, 0.003]
    start = torch.randn(K, 4, 5, generator=g, dtype=torch.float64)
    grads = [torch.randn(K, 4, 5, generator=g, dtype=torch.float64) for _ in range(20)]
    stacked = torch.nn.Parameter(start.clone())
    ours = OPTIMIZERS[name]([stacked], momentum=momentum)
    alone = [torch.nn.Parameter(start[k].clone()) for k in range(K)]
    theirs = [TORCH[name]([alone[k]], lrs[k], momentum) for k in range(K)]
    for grad in grads:
        stacked.grad = grad * (1 + stacked.detach() ** 2)  # depends on the trajectory
        ours.step(torch.tensor(lrs, dtype=torch.float64))
        for k in range(K):
            alone[k].grad = grad[k] * (1 + alone[k].detach() ** 2)
            theirs[k].step()
    for k in range(K):
        torch.testing.assert_close(stacked.detach()[k], alone[k].detach(), rtol=1e-12, atol=0)
        assert not torch.equal(stacked.detach()[k], start[k])


def test_a_member_diverging_between_syncs_ends_there_and_the_others_are_unchanged():
    """Metrics reach the host every SYNC_EVERY steps (and at probes): a member that overflows
    in between still ends at its own step, with no update from it, and the others' bits are
    those of training alone."""
    from rnnlab.train import SYNC_EVERY

    base = {"optimizer": "sgd", "momentum": 0.5, "steps": 80}
    model = {"activation": "relu", "hidden_size": 16}
    runs = [
        cfg(0, train=base | {"lr": 0.05}, model=model, probe={"every": 1000}),
        cfg(1, train=base | {"lr": 5.0}, model=model, probe={"every": 1000}),
        cfg(2, train=base | {"lr": 0.02}, model=model, probe={"every": 1000}),
    ]
    stacked = by_member(runs)
    end = stacked[1][-1]
    assert end.diverged and 0 < end.step < 80 and end.step % SYNC_EVERY != 0
    assert len(stacked[0]) == len(stacked[2]) == 81
    for k, run in enumerate(runs):
        assert identical(stacked[k], list(train(run))), f"member {k}"


@pytest.mark.parametrize(
    "task",
    [
        {"name": "random_labels", "seq_len": 5, "n_features": 3},
        {"name": "white_noise", "seq_len": 6, "n_inputs": 2, "input_std": 1.5},
    ],
)
def test_a_fixed_training_set_in_epochs_is_the_same_bits_alone_and_stacked(task):
    """train.train_size: each member's pool and its order each epoch come from its own stream,
    the last batch of an epoch is smaller (N = 7, B = 3) and probes land on it."""
    fixed = {"train_size": 7, "batch_size": 3, "epochs": 4, "steps": 12, "eval_size": 5}
    model = {"hidden_size": 5, "input_init": "glorot_uniform"}
    probe = {"every": 3}
    runs = [
        cfg(0, task=task, model=model, train=fixed, probe=probe),
        cfg(1, task=task, model=model | {"gain": 0.8}, train=fixed, probe=probe),
        cfg(2, task=task, model=model, train=fixed | {"lr": 0.01}, probe=probe),
    ]
    stacked = by_member(runs)
    assert len(stacked[0]) == 4 * 3 + 1
    for k, run in enumerate(runs):
        assert identical(stacked[k], list(train(run))), f"member {k}"


@pytest.mark.parametrize(
    "dtype", ["float32", "float64"]
)  # float64: weights the copy must not share
def test_host_measurement_threads_change_no_bit_and_no_order(monkeypatch, dtype):
    """The probes' float64 host measurements run on threads while training goes on
    (``RNNLAB_MEASURE_THREADS``): a stack of three, one diverging early, yields the same
    measurements in the same order, with the same tables, on 0, 1 and 3 threads."""
    runs = [
        cfg(
            s,
            task={"seq_len": 30},
            model={"hidden_size": 16, "gain": g},
            probe={"every": 5},
            train={
                "steps": 25,
                "batch_size": 8,
                "eval_size": 16,
                "lr": lr,
                "divergence_threshold": limit,
                "dtype": dtype,
            },
        )
        for s, g, lr, limit in [(0, 1.0, 0.01, None), (1, 3.0, 0.5, 5.0), (2, 0.5, 0.01, None)]
    ]

    def measured(threads):
        monkeypatch.setenv("RNNLAB_MEASURE_THREADS", str(threads))
        return list(train_ensemble(runs))

    inline = measured(0)
    assert [k for k, m in inline if m.diverged] == [1]  # it stops early, the others finish
    assert max(m.step for k, m in inline if k == 1) < 25
    assert any("jacobian" in m.tables for _, m in inline)
    for threads in (1, 3):
        other = measured(threads)
        assert [k for k, _ in other] == [k for k, _ in inline]
        assert identical([m for _, m in other], [m for _, m in inline])
        for (_, a), (_, b) in zip(other, inline, strict=True):
            assert a.tables.keys() == b.tables.keys()
            for name, table in a.tables.items():
                for col, values in table.items():
                    assert np.array_equal(values, b.tables[name][col], equal_nan=True), (name, col)
