"""The training loop: determinism, the measurements it yields, clipping, divergence."""

import math

import pytest
import torch

from rnnlab.config import Experiment, RunConfig
from rnnlab.run.sweep import run_sweep
from rnnlab.tasks import make_task
from rnnlab.track import MemoryTracker
from rnnlab.train import build, stream, train


def cfg(**sections) -> RunConfig:
    base = {
        "task": {"seq_len": 12},
        "model": {"hidden_size": 16},
        "train": {"steps": 6, "batch_size": 8, "eval_size": 16},
        "probe": {"every": 3},
    }
    for k, v in sections.items():
        base[k] = base.get(k, {}) | v if isinstance(v, dict) else v
    return RunConfig.model_validate(base)


def test_same_config_and_seed_give_identical_metrics():
    run = cfg(train={"optimizer": "rmsprop", "momentum": 0.5})
    a, b = list(train(run)), list(train(run))
    assert [m.metrics for m in a] == [m.metrics for m in b]
    assert all((x.profile is None) == (y.profile is None) for x, y in zip(a, b, strict=True))
    other = list(train(cfg(seed=1, train={"optimizer": "rmsprop", "momentum": 0.5})))
    assert other[0].metrics["train/loss"] != a[0].metrics["train/loss"]


@pytest.mark.parametrize(
    "task",
    [
        {"name": "copy", "seq_len": 5},
        {"name": "temporal_order", "seq_len": 10},
        {"name": "permutation", "seq_len": 6},
        {"name": "adding", "seq_len": 4},
    ],
)
def test_measurement_schedule_and_names(task):
    ms = list(train(cfg(task=task)))
    assert [m.step for m in ms] == list(range(7))
    probed = [m.step for m in ms if m.profile is not None]
    assert probed == [0, 3, 6]  # every 3 steps, first and last
    every = {"train/loss", "grad/norm"}  # grad/clipped only when clip_norm is set
    probe = {
        "eval/loss",
        "eval/loss_ratio",
        "grad/weight_hh",
        "grad/weight_ih",
        "grad/bias",
        "grad/readout.weight",
        "grad/readout.bias",
        "weights/W_hh_radius",
        "weights/W_hh_sigma_max",
        "grad_h/slope",
        "grad_h/log10_ratio",
        "grad_h/fit_points",
        "grad_h/underflow",
        "units/q_hat",
        "units/saturated",
        "units/dead",
        "grad_x/slope",
        "grad_x/log10_ratio",
    }
    theory = {
        "theory/slope",
        "theory/chi1",
        "theory/depth_scale",
        "theory/q_star",
        "theory/q_in",
        "theory/bias_var",
    }
    classification = task["name"] != "adding"
    for m in ms:
        expected = every | (probe if m.profile is not None else set())
        expected |= (theory if m.step == 0 else set()) | (
            {"dyn/lyapunov_max", "jac/log_sv_max"} if m.step in (0, 6) else set()
        )
        if classification:
            expected |= {"train/accuracy"} | ({"eval/accuracy"} if m.profile is not None else set())
        # ln σ_min of ∂h_L/∂h_0 where float64 resolves it (rnnlab.measure.dynamics)
        assert set(m.metrics) - {"jac/log_sv_min"} == expected
    length = task["seq_len"] + (20 if task["name"] == "copy" else 0)  # copy: L = T + 2N, N = 10
    assert ms[0].profile.shape == (length,)
    baseline = make_task(**cfg(task=task).task.model_dump()).baseline
    assert ms[0].metrics["eval/loss_ratio"] == pytest.approx(ms[0].metrics["eval/loss"] / baseline)


def test_training_learns_short_adding_problem():
    run = cfg(
        task={"seq_len": 5},
        train={"steps": 400, "batch_size": 32, "lr": 0.01, "eval_size": 256},
        probe={"every": 100},
    )
    ms = list(train(run))
    assert ms[0].metrics["eval/loss_ratio"] > 1 and ms[-1].metrics["eval/loss_ratio"] < 0.2


def test_grad_norm_is_before_clipping_and_clipping_fires():
    run = cfg(train={"clip_norm": 1e-3, "optimizer": "sgd", "lr": 0.1})
    ms = list(train(run))
    assert all(m.metrics["grad/clipped"] == 1.0 for m in ms)
    # grad/norm at step 0 is the unclipped norm of the first batch's gradient, recomputed here
    task, model = build([run])
    x, y = task.sample(8, stream(run.seed, "train"))
    task.loss(model(x[None])[0], y).mean().backward()
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert norm > 1e-3 and ms[0].metrics["grad/norm"] == pytest.approx(norm, rel=1e-5)
    unclipped = list(train(cfg(train={"clip_norm": 1e6})))
    assert all(m.metrics["grad/clipped"] == 0.0 for m in unclipped)


def test_exploding_network_diverges_as_data_not_a_crash():
    run = cfg(
        task={"seq_len": 300},
        model={"activation": "linear", "init": "gaussian", "gain": 2.0},
        train={"steps": 5},
    )
    ms = list(train(run))
    assert ms[-1].diverged and len(ms) == 1  # 2^300 overflows float32 at step 0
    assert not math.isfinite(ms[-1].metrics["train/loss"])
    tracker = MemoryTracker()
    exp = Experiment.model_validate(run.model_dump() | {"name": "boom"})
    summary = run_sweep(exp, [run], tracker)
    assert summary.diverged == 1 and summary.ok and tracker.runs[0]["status"] == "diverged"


def test_failure_in_one_run_is_recorded_and_the_sweep_goes_on(monkeypatch):
    import rnnlab.run.executors.base as worker

    real = worker.train_ensemble

    def flaky(runs, threads=None):
        if any(r.seed == 1 for r in runs):
            raise RuntimeError("injected failure")
        return real(runs, threads)

    monkeypatch.setattr(worker, "train_ensemble", flaky)
    runs = [cfg(seed=s, train={"ensemble": "off"}) for s in range(3)]
    tracker = MemoryTracker()
    summary = run_sweep(Experiment(name="f"), runs, tracker)
    assert (summary.finished, summary.failed) == (2, 1) and not summary.ok
    assert "injected failure" in tracker.runs[1]["error"]
    assert [tracker.runs[i]["status"] for i in range(3)] == ["finished", "failed", "finished"]
    assert len(tracker.runs[2]["metrics"]["train/loss"]) == 7

    # In an ensemble the members share the failure; another ensemble goes on.
    runs = [cfg(seed=s) for s in range(3)] + [cfg(seed=5, task={"seq_len": 7})]
    tracker = MemoryTracker()
    summary = run_sweep(Experiment(name="g"), runs, tracker)
    assert (summary.finished, summary.failed) == (1, 3)
    assert [tracker.runs[i]["status"] for i in range(4)] == ["failed"] * 3 + ["finished"]
    assert all("injected failure" in tracker.runs[i]["error"] for i in range(3))
    assert tracker.runs[0]["tags"] == {"rnnlab.ensemble_size": "3"}


def test_a_run_labelled_finished_but_never_closed_is_trained_again():
    """A writer killed between labelling a run and closing it: the point is not counted done."""
    tracker, runs, exp = MemoryTracker(), [cfg(seed=0), cfg(seed=1)], Experiment(name="r")
    assert run_sweep(exp, runs, tracker).finished == 2
    tracker.history[0]["mlflow_status"] = "RUNNING"  # labelled finished, still open, writer gone
    summary = run_sweep(exp, runs, tracker)
    assert (summary.stale, summary.skipped, summary.finished) == (1, 1, 1)
    assert tracker.history[0]["status"] == "killed" and tracker.history[-1]["status"] == "finished"
    assert run_sweep(exp, runs, tracker).skipped == 2  # and now the grid is complete


def test_fixed_training_set_is_drawn_once_and_each_epoch_visits_it_once():
    """train.train_size: the pool is one draw from the run's training stream; each epoch is a
    fresh permutation of it from the same stream, served in batches of B and a last one of
    N mod B (Keras' fit)."""
    from rnnlab.train import FixedSet

    run = cfg(
        task={"name": "random_labels", "seq_len": 3}, train={"train_size": 10, "batch_size": 4}
    )
    task = make_task(**run.task.model_dump())
    fixed = FixedSet.draw(task, [stream(0, "train"), stream(1, "train")], run.train)
    px, py = task.sample(10, stream(0, "train"))  # one draw of N from the member's own stream
    assert torch.equal(fixed.pools[0][0], px) and torch.equal(fixed.pools[0][1], py)
    key = {tuple(px[:, i].flatten().tolist()): i for i in range(10)}
    orders = []
    for _ in range(3):  # three epochs
        seen = []
        for size in (4, 4, 2):
            (x0, y0), (x1, _) = fixed.next_batch([0, 1], 4)
            assert x0.shape == (3, size, 8) and y0.shape == (1, size, 1) and x1.shape[1] == size
            seen += [key[tuple(x0[:, i].flatten().tolist())] for i in range(size)]
        assert sorted(seen) == list(range(10))  # every example exactly once
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # reshuffled every epoch
    assert fixed.position == 0


def test_epochs_over_a_fixed_set_log_training_set_metrics():
    run = cfg(
        task={"name": "random_labels", "seq_len": 4, "n_features": 3},
        train={"train_size": 10, "batch_size": 4, "epochs": 2, "eval_size": 16},
        probe={"every": 3},
    )
    assert run.train.steps == 6
    ms = list(train(run))
    assert [m.step for m in ms] == list(range(7))
    for m in ms:
        probed = m.profile is not None
        assert probed == ({"train_set/loss", "train_set/accuracy"} <= set(m.metrics))
        if probed:
            assert m.metrics["train_set/loss_ratio"] == pytest.approx(
                m.metrics["train_set/loss"] / math.log(2)
            )
            assert round(m.metrics["train_set/accuracy"] * 10, 4) % 1 == 0  # k of 10 right
    assert "train_set/loss" not in next(iter(train(cfg()))).metrics  # only with train_size


def test_random_labels_are_memorised_not_learned():
    """The seed example in small: the training set is fitted, held-out stays at chance."""
    run = cfg(
        task={"name": "random_labels", "seq_len": 5, "n_features": 4},
        model={"hidden_size": 32, "input_init": "glorot_uniform"},
        train={
            "train_size": 16,
            "batch_size": 8,
            "epochs": 150,
            "steps": 300,
            "lr": 1e-2,
            "eval_size": 512,
        },
        probe={"every": 100},
    )
    last = list(train(run))[-1].metrics
    assert last["train_set/accuracy"] == 1.0 and last["train_set/loss"] < 0.1
    assert last["eval/loss"] > 0.9 * math.log(2)


def _small(**train_opts) -> RunConfig:
    return RunConfig.model_validate(
        {
            "task": {"name": "adding", "seq_len": 20},
            "model": {"hidden_size": 8},
            "train": {"steps": 12, "batch_size": 4, "eval_size": 16} | train_opts,
            "probe": {"every": 6},
        }
    )


def test_training_goes_on_while_a_probe_is_measured(monkeypatch):
    """With a measurement thread, the Jacobian spectrum of step 0 is still being taken when
    later steps train: here it waits for step 2's update, which would never come if the loop
    waited for it (the wait would time out and the check fail)."""
    import threading

    import rnnlab.train as T

    run = _small()
    updates, step2, overlapped, wait = [0], threading.Event(), [], [30.0]
    real_jacobian, base = T.dynamics.jacobian_spectrum, T.OPTIMIZERS[run.train.optimizer]

    class Counting(base):
        def apply(self, lr):
            super().apply(lr)
            updates[0] += 1
            if updates[0] == 3:  # steps 0, 1 and 2 made their updates
                step2.set()

    def slow_jacobian(member, x):
        if not overlapped:  # the first probe's: did training reach step 2 meanwhile?
            overlapped.append((step2.wait(timeout=wait[0]), updates[0]))
        return real_jacobian(member, x)

    monkeypatch.setitem(T.OPTIMIZERS, run.train.optimizer, Counting)
    monkeypatch.setattr(T.dynamics, "jacobian_spectrum", slow_jacobian)
    monkeypatch.setenv(T.MEASURE_THREADS, "1")
    out = list(T.train_ensemble([run]))
    assert overlapped[0][0] and overlapped[0][1] >= 3
    assert [m.step for _, m in out] == list(range(13))  # in order, none lost
    assert "jac/log_sv_max" in out[0][1].metrics and "jacobian" in out[0][1].tables
    # The control: measured in the loop, no update happens while it waits (here 0.2 s).
    monkeypatch.setenv(T.MEASURE_THREADS, "0")
    updates[0], wait[0], step2 = 0, 0.2, threading.Event()
    overlapped.clear()
    list(T.train_ensemble([run]))
    assert overlapped == [(False, 0)]


def test_a_failing_host_measurement_fails_the_run_with_its_error(monkeypatch):
    import rnnlab.train as T

    def broken(member, x):
        raise FloatingPointError("jacobian broke")

    monkeypatch.setattr(T.dynamics, "jacobian_spectrum", broken)
    for threads in ("0", "1"):
        monkeypatch.setenv(T.MEASURE_THREADS, threads)
        with pytest.raises(FloatingPointError, match="jacobian broke"):
            list(T.train_ensemble([_small()]))


def test_measure_threads_setting(monkeypatch):
    import rnnlab.train as T
    from rnnlab.measure import measurement

    monkeypatch.delenv(T.MEASURE_THREADS, raising=False)
    cap = measurement.DEFAULT_MAX_THREADS
    assert T.measure_threads(device="cuda") == min(cap, T.usable_cores() - 1)
    assert T.measure_threads(3, "cuda") == 3  # an executor's share
    assert T.measure_threads(cap + 5, "cuda") == cap  # capped: the GPU's thread needs the GIL
    assert T.measure_threads(3, "cpu") == T.measure_threads(None, "cpu") == 0
    monkeypatch.setenv(T.MEASURE_THREADS, " 2 ")
    assert T.measure_threads(5, "cuda") == T.measure_threads(None, "cpu") == 2  # the user's
    for bad in ("x", "-1", "1.5", "²", "9" * 5000):
        monkeypatch.setenv(T.MEASURE_THREADS, bad)
        with pytest.raises(ValueError, match=f"RNNLAB_MEASURE_THREADS='{bad[:30]}.*': expected"):
            T.measure_threads()


def test_the_jacobian_spectrum_follows_probe_jacobian_trajectories():
    """Along the first n held-out sequences at the first probe (the initial weights), at most
    the held-out set's first chunk (train.batch_size), none at n = 0; at the default 16 the
    sequences the theory uses, as before the option; the other measurements do not change."""
    import numpy as np

    import rnnlab.train as T
    from rnnlab.measure import dynamics, names

    def first(n):
        run = RunConfig.model_validate(
            {
                "task": {"name": "adding", "seq_len": 20},
                "model": {"hidden_size": 8},
                "train": {"steps": 2, "batch_size": 6, "eval_size": 20},
                "probe": {"jacobian_trajectories": n},
            }
        )
        return run, next(iter(T.train(run)))

    run, default = first(16)
    task, model = T.build([run])
    held_out = T.HeldOut.draw(task, [T.stream(run.seed, "eval")], run.train, "cpu", torch.float32)

    def along(n):
        x = held_out.all_inputs(n)[0]
        return x.shape[1], dynamics.jacobian_spectrum(model.member(0), x)

    cases = {16: (default, along(T.THEORY_INPUTS))}  # 16 → the theory's 6 (B = 6)
    for n in (3, 50):
        cases[n] = (first(n)[1], along(n))
    assert [cases[n][1][0] for n in (3, 16, 50)] == [3, 6, 6]
    for n, (m, (_, expected)) in cases.items():
        for col, values in expected.items():
            assert np.array_equal(m.tables[names.TABLE_JACOBIAN][col], values, equal_nan=True), n
    assert not np.array_equal(cases[3][1][1]["log_sv_max"], cases[16][1][1]["log_sv_max"])
    _, none = first(0)
    assert names.TABLE_JACOBIAN not in none.tables and names.JAC_LOG_SV_MAX not in none.metrics
    for m in (cases[3][0], none):
        assert {k: v for k, v in m.metrics.items() if not k.startswith("jac/")} == {
            k: v for k, v in default.metrics.items() if not k.startswith("jac/")
        }
