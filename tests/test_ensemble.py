"""Ensembles: a stack of K networks computes exactly what K separate ones do."""

import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnlab.bench import autograd_reference
from rnnlab.config import Experiment, RunConfig
from rnnlab.model.activations import ACTIVATIONS
from rnnlab.model.backends import cpp as _ext
from rnnlab.run.schedule import AUTO_MEMORY, CPU_SMALL_OP, group_limit, groups
from rnnlab.run.sweep import run_sweep
from rnnlab.track import MemoryTracker
from rnnlab.train import build, train, train_ensemble


def cfg(seed=0, dtype="float64", **sections) -> RunConfig:
    spec = {
        "task": {"name": "adding", "seq_len": 12},
        "model": {"hidden_size": 16},
        "train": {"steps": 8, "batch_size": 8, "eval_size": 12, "dtype": dtype},
        "probe": {"every": 4},
        "seed": seed,
    }
    for key, value in sections.items():
        spec[key] = spec.get(key, {}) | value
    return RunConfig.model_validate(spec)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def assert_same(a, b, tol: float) -> None:
    """Two measurement lists agree step by step: metrics, profiles, divergence."""
    assert [m.step for m in a] == [m.step for m in b]
    assert [m.diverged for m in a] == [m.diverged for m in b]
    for ma, mb in zip(a, b, strict=True):
        assert ma.metrics.keys() == mb.metrics.keys()
        for k, v in mb.metrics.items():
            if math.isfinite(v):
                assert rel(ma.metrics[k], v) <= tol, (ma.step, k, ma.metrics[k], v)
            else:
                assert not math.isfinite(ma.metrics[k]), (ma.step, k)
        if mb.profile is not None:
            assert ma.profile is not None
            torch.testing.assert_close(
                torch.from_numpy(ma.profile), torch.from_numpy(mb.profile), rtol=tol, atol=0
            )


def assert_identical(a, b) -> None:
    """Two measurement lists are the same bits: every metric, profile and divergence flag."""
    assert [m.step for m in a] == [m.step for m in b]
    assert [m.diverged for m in a] == [m.diverged for m in b]
    for ma, mb in zip(a, b, strict=True):
        assert ma.metrics.keys() == mb.metrics.keys()
        for k, v in mb.metrics.items():
            assert ma.metrics[k] == v or (math.isnan(v) and math.isnan(ma.metrics[k])), (
                ma.step,
                k,
                ma.metrics[k],
                v,
            )
        assert (ma.profile is None) == (mb.profile is None)
        if mb.profile is not None:
            assert np.array_equal(ma.profile, mb.profile, equal_nan=True), ma.step


def by_member(runs):
    out: dict[int, list] = {k: [] for k in range(len(runs))}
    for k, m in train_ensemble(runs):
        out[k].append(m)
    return out


@pytest.fixture(params=["cpp", "python"])
def loops(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(_ext, "loops", lambda: None)
    else:
        assert _ext.loops() is not None, (
            "C++ loops unavailable: run `python -m rnnlab.model.backends.cpp`"
        )
    return request.param


# ------------------------------------------------------------------ the stacked BPTT
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_stacked_gradients_and_profiles_equal_autograd_per_member(activation, loops):
    """Each member of a stack against its own plain autograd loop (float64)."""
    runs = [
        cfg(seed=s, model={"activation": activation, "init": init, "gain": gain})
        for s, (init, gain) in enumerate([("orthogonal", 1.1), ("gaussian", 1.4), ("default", 0.7)])
    ]
    ens = build(runs)[1]
    alone = [build([r])[1] for r in runs]  # each member built by itself: the same draws
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 12, 5, 2, dtype=torch.float64, generator=g)
    w = torch.randn(3, 1, 5, 1, dtype=torch.float64, generator=g)
    (ens(x) * w).pow(2).sum().backward()
    for k, model in enumerate(alone):
        m = model.member(0)
        params = [p.clone().requires_grad_() for p in (m.weight_ih, m.weight_hh, m.bias)]
        hs = autograd_reference(x[k], *params, activation)
        readout = F.linear(hs[-1], model.readout["weight"][0], model.readout["bias"][0])
        (readout.unsqueeze(0) * w[k]).pow(2).sum().backward()
        got = [ens.get_parameter(n).grad[k] for n in ("weight_ih", "weight_hh", "bias")]
        for a, b in zip(got, [p.grad for p in params], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        norms = torch.stack([h.grad for h in hs]).norm(dim=-1)
        torch.testing.assert_close(ens.hidden_grad_norms[k], norms, rtol=1e-10, atol=1e-14)


def test_keep_shrinks_the_stack_and_member_reads_one():
    runs = [cfg(seed=s, model={"gain": 1.0 + 0.1 * s}) for s in range(3)]
    model = build(runs)[1]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(3, 12, 2, 2, dtype=torch.float64)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.keep([0, 2])
    assert model.num_members == 2 and model(x[[0, 2]]).shape == (2, 1, 2, 1)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n][[0, 2]]) and torch.equal(p.grad, grads[n][[0, 2]])
    w = model.member(1)  # was member 2
    assert torch.equal(w.weight_hh, before["weight_hh"][2]) and w.activation == "tanh"
    assert [n for n, _ in model.named_parameters()] == list(before)  # the order is kept


# ------------------------------------------------------------- training, end to end
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear"])
def test_ensemble_trains_each_member_exactly_as_alone(activation):
    """Members differing in seed, init, gain, learning rate and clipping: every step of every
    member is the same bits as training it alone, in float64 and float32."""
    for dtype in ("float64", "float32"):
        model = {"activation": activation}
        runs = [
            cfg(0, dtype, model=model),
            cfg(1, dtype, model=model | {"init": "gaussian", "gain": 1.3}, train={"lr": 3e-3}),
            cfg(2, dtype, model=model | {"gain": 0.8}, train={"clip_norm": 0.05, "lr": 2e-4}),
            cfg(3, dtype, model=model, train={"optimizer": "adam"}),
        ]
        stacked = by_member(runs)
        for k, run in enumerate(runs):
            alone = list(train(run))
            assert len(alone) == 9
            assert_identical(stacked[k], alone)
        assert any(m.metrics.get("grad/clipped") == 1.0 for m in stacked[2])  # clipping fired
        assert "grad/clipped" not in stacked[0][0].metrics  # only where clip_norm is set


def test_every_optimizer_gives_members_their_own_learning_rate():
    for opt in ("sgd", "rmsprop", "adam"):
        train_cfg = {"optimizer": opt, "momentum": 0.0 if opt == "adam" else 0.5}
        runs = [cfg(s, train=train_cfg | {"lr": lr}) for s, lr in enumerate((0.1, 0.01, 0.001))]
        stacked = by_member(runs)
        for k, run in enumerate(runs):
            assert_identical(stacked[k], list(train(run)))
        finals = {stacked[k][-1].metrics["train/loss"] for k in range(3)}
        assert len(finals) == 3


def test_a_diverging_member_stops_alone_and_the_others_go_on():
    fine = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.5}  # state to carry over
    runs = [
        cfg(0, model={"activation": "relu"}, train=fine),
        cfg(1, model={"activation": "relu"}, train=fine | {"lr": 5.0}),  # overflows mid-run
        cfg(2, model={"activation": "relu"}, train=fine | {"divergence_threshold": 1e-9}),
        cfg(3, model={"activation": "relu"}, train=fine | {"lr": 0.02}),
    ]
    stacked = by_member(runs)
    assert [len(stacked[k]) for k in (0, 2, 3)] == [9, 1, 9] and 1 < len(stacked[1]) < 9
    assert stacked[1][-1].diverged and stacked[2][-1].diverged
    assert not math.isfinite(stacked[1][-1].metrics["grad/norm"])  # inf is data
    for k, run in enumerate(runs):
        assert_identical(stacked[k], list(train(run)))


# -------------------------------------------------------------------------- grouping
def test_grouping_by_everything_but_member_keys():
    grid = [
        cfg(s, dtype="float32", model={"gain": g}, train={"lr": lr})
        for s in range(3)
        for g in (1.0, 1.5)
        for lr in (1e-3, 1e-2)
    ]  # 12 points, one family
    grid += [cfg(s, dtype="float32", model={"activation": "relu"}) for s in range(2)]
    grid += [cfg(0, dtype="float32", task={"seq_len": 13})]
    units = groups(grid, list(range(len(grid))))
    assert sorted(map(len, units)) == [1, 2, 12]
    assert sorted(i for u in units for i in u) == list(range(len(grid)))
    assert groups(grid, list(range(12, 15))) == [[12, 13], [14]]  # a resumed remainder

    def with_setting(setting, n=10):
        return [cfg(s, dtype="float32", train={"ensemble": setting}) for s in range(n)]

    assert sorted(map(len, groups(with_setting(4), list(range(10))))) == [3, 3, 4]  # not 4+4+2
    assert sorted(map(len, groups(with_setting("off"), list(range(10))))) == [1] * 10
    # auto leaves no worker idle; a fixed K is taken as given
    assert sorted(map(len, groups(with_setting("auto", 6), list(range(6)), workers=4))) == [
        1,
        1,
        2,
        2,
    ]
    assert [len(u) for u in groups(with_setting(6, 6), list(range(6)), workers=4)] == [6]


def test_auto_stacks_on_a_cpu_only_where_kernels_are_overhead_bound():
    def limit(L, B, H):
        run = cfg(
            task={"seq_len": L}, train={"batch_size": B, "device": "cpu"}, model={"hidden_size": H}
        )
        return group_limit(run)

    assert CPU_SMALL_OP >= 8 * 64 * 64 and limit(1000, 8, 64) == 16  # small multiplies
    assert limit(25, 64, 64) == 16  # short sequences: the per-step work dominates
    assert limit(200, 64, 64) == 1  # compute-bound: a stack would cost what K runs do
    # memory caps K: h_t and δ_t of every step, float64
    assert limit(5000, 128, 16) == AUTO_MEMORY // (2 * 5000 * 128 * 16 * 8) == 6
    assert limit(10**6, 128, 16) == 1
    off = cfg(train={"ensemble": "off"})
    assert group_limit(off) == 1 and group_limit(cfg(train={"ensemble": 5})) == 5


# -------------------------------------------------------------------- sweeps, resume
def test_sweep_logs_each_member_as_its_own_run_with_its_alone_numbers():
    grid = [cfg(s, dtype="float32", model={"gain": 1.0 + 0.1 * s}) for s in range(3)]
    tracker = MemoryTracker()
    summary = run_sweep(Experiment(name="e"), grid, tracker)
    assert summary.finished == 3 and len(tracker.history) == 3
    for i, run in enumerate(grid):
        r = tracker.runs[i]
        assert r["tags"]["rnnlab.ensemble_size"] == "3" and r["run_key"] == run.run_key
        alone = list(train(run))
        loss = r["metrics"]["train/loss"]
        assert [s for s, _ in loss] == list(range(9))
        assert [v for _, v in loss] == [m.metrics["train/loss"] for m in alone]


@pytest.mark.parametrize("flush", [None, 0.001, 0.005])
def test_resume_trains_only_the_unfinished_members_of_an_ensemble(monkeypatch, flush):
    """A stack of three: one member diverges at once, the sweep is interrupted mid-way; the
    rerun skips the diverged member, trains the two killed ones (a stack of two) and gets
    the numbers each gets alone. Short flush intervals cut the messages into many batches, as
    a loaded machine does: a batch cut short by the second Ctrl-C was once sent again, and
    its replay reopened the diverged member's run, which then ended as killed."""
    if flush is not None:
        from rnnlab.run.executors import base

        monkeypatch.setattr(base, "FLUSH_SECONDS", flush)
    grid = [
        cfg(0, train={"steps": 30}),
        cfg(1, train={"steps": 30, "divergence_threshold": 1e-9}),
        cfg(2, train={"steps": 30}, model={"gain": 1.2}),
    ]
    tracker, exp = MemoryTracker(), Experiment(name="resume")
    log = tracker.log

    def interrupting(handle, m):
        log(handle, m)
        if m.step == 10:  # members 0 and 2: Ctrl-C twice, the second stops the driver at once
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(tracker, "log", interrupting)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(exp, grid, tracker)
    assert [tracker.runs[i]["status"] for i in range(3)] == ["killed", "diverged", "killed"]
    assert len(tracker.runs[0]["metrics"]["train/loss"]) == 11  # its metrics so far are kept

    monkeypatch.setattr(tracker, "log", log)
    summary = run_sweep(exp, grid, tracker)
    assert (summary.skipped, summary.finished) == (1, 2)
    redone = {r["run_key"]: r for r in tracker.history[3:]}
    assert set(redone) == {grid[0].run_key, grid[2].run_key}
    for run in (grid[0], grid[2]):
        r = redone[run.run_key]
        assert r["status"] == "finished" and r["tags"]["rnnlab.ensemble_size"] == "2"
        alone = list(train(run))
        for key in ("train/loss", "grad/norm"):
            series = [v for _, v in r["metrics"][key]]
            assert len(series) == 31
            assert series == [m.metrics[key] for m in alone]
    assert run_sweep(exp, grid, tracker).skipped == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_stack_on_cuda_matches_each_member_alone_on_the_cpu():
    runs = [
        cfg(s, dtype="float64", model={"gain": 1.0 + 0.2 * s}, train={"device": "cuda"})
        for s in range(3)
    ]
    stacked = by_member(runs)
    for k, run in enumerate(runs):
        alone = list(
            train(run.model_copy(update={"train": run.train.model_copy(update={"device": "cpu"})}))
        )
        assert_same(stacked[k], alone, 1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_stack_on_cuda_is_the_same_bits_as_each_member_alone_on_cuda():
    for dtype in ("float32", "float64"):
        runs = [
            cfg(s, dtype=dtype, model={"gain": 1.0 + 0.2 * s}, train={"device": "cuda"})
            for s in range(3)
        ]
        stacked = by_member(runs)
        for k, run in enumerate(runs):
            assert_identical(stacked[k], list(train(run)))
