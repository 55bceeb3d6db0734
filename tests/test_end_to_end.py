"""End to end: the CLI trains a tiny sweep into a real (temporary) MLflow store, read back."""

import contextlib
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, cli, write
from mlflow.tracking import MlflowClient

from rnnlab.config import load_experiment

pytestmark = pytest.mark.slow


def child_runs(client, name):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("rnnlab.role") == "sweep"]
    return exp, parents, children


@pytest.mark.parametrize("workers", [1, 2])
def test_tiny_sweep_lands_in_mlflow(tmp_path, store, workers):
    path = write(tmp_path / "tiny.yaml", TINY)
    proc = cli("sweep", path, "--workers", workers, "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4 finished, 0 diverged, 0 failed of 4" in proc.stdout
    assert "/#/experiments/" in proc.stdout

    client = MlflowClient(store)
    exp, parents, children = child_runs(client, "tiny")
    assert exp.tags["mlflow.note.content"] == "A tiny sweep for the tests."
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    _, grid = load_experiment(path)
    assert {c.data.tags["rnnlab.run_key"] for c in children} == {r.run_key for r in grid}
    names = {c.info.run_name for c in children}
    assert names == {f"adding-T{T}-{a}-orthogonal1-s0" for T in (6, 9) for a in ("tanh", "relu")}

    for c in children:
        assert c.info.status == "FINISHED" and c.data.tags["rnnlab.status"] == "finished"
        params = c.data.params
        T = int(params["task.seq_len"])
        assert params["model.activation"] in ("tanh", "relu") and params["train.steps"] == "4"
        assert {"task.name", "model.init", "model.gain", "train.lr", "seed", "probe.every"} <= set(
            params
        )
        assert {
            "train/loss",
            "eval/loss",
            "eval/loss_ratio",
            "grad/norm",
            "grad/weight_hh",
            "weights/W_hh_radius",
            "weights/W_hh_sigma_max",
            "grad_h/slope",
            "grad_h/log10_ratio",
            "grad_h/init",
            "grad_h/final",
        } <= set(c.data.metrics)
        history = client.get_metric_history(c.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == [0, 1, 2, 3, 4]
        assert [m.step for m in client.get_metric_history(c.info.run_id, "grad_h/slope")] == [
            0,
            2,
            4,
        ]
        init = sorted(client.get_metric_history(c.info.run_id, "grad_h/init"), key=lambda m: m.step)
        assert [m.step for m in init] == list(range(T))  # one point per distance k

        artifacts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert artifacts == {
            "config.yaml",
            "profiles.parquet",
            "profile.png",
            "grad_x.parquet",  # the input-gradient profile at every probe
            "jacobian.parquet",  # the Jacobian spectrum at the first and last probe
        }
        local = Path(client.download_artifacts(c.info.run_id, "", str(tmp_path / c.info.run_id)))
        profiles = pd.read_parquet(local / "profiles.parquet")
        assert list(profiles.columns) == ["step", "t", "k", "n_t"] and len(profiles) == 3 * T
        assert sorted(profiles["step"].unique()) == [0, 2, 4]
        grad_x = pd.read_parquet(local / "grad_x.parquet")
        assert list(grad_x.columns) == ["step", "t", "k", "n_t"] and len(grad_x) == 3 * T
        jacobian = pd.read_parquet(local / "jacobian.parquet")
        assert list(jacobian.columns) == ["step", "k", "log_sv_max", "log_sv_min"]
        assert sorted(jacobian.step.unique()) == [0, 4] and jacobian.k.max() == T
        first = profiles[profiles.step == 0].sort_values("k")
        assert [m.value for m in init] == pytest.approx(first["n_t"].tolist(), rel=1e-12)
        assert (first["t"] + first["k"] == T).all()
        config = yaml.safe_load((local / "config.yaml").read_text())
        assert (
            config["task"]["seq_len"] == T
            and config["model"]["activation"] == params["model.activation"]
        )


def test_diverged_run_is_tagged_and_keeps_infinite_values(tmp_path, store):
    path = write(
        tmp_path / "boom.yaml",
        "name: boom\ntask: {seq_len: 300}\n"
        "model: {activation: linear, init: gaussian, gain: 2.0, hidden_size: 8}\n"
        "train: {steps: 3, batch_size: 4, eval_size: 4}\n",
    )
    proc = cli("run", path, "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "0 finished, 1 diverged" in proc.stdout
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("boom").experiment_id])
    assert run.data.tags["rnnlab.status"] == "diverged"
    local = Path(client.download_artifacts(run.info.run_id, "profiles.parquet", str(tmp_path)))
    n = pd.read_parquet(local)["n_t"]
    assert not all(math.isfinite(v) for v in n)  # overflow recorded, not dropped


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_experiment_validates_and_runs_two_steps(path, tmp_path, store):
    proc = cli("validate", path)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    text = path.read_text()
    assert (
        text.startswith("#") and "Command:" in text and "Runtime:" in text and "Expected:" in text
    )
    overrides = ["train.steps=2", "train.eval_size=8", "seed=0"]  # every axis but the seeds
    proc = cli("sweep", path, *overrides, "--tracking-uri", store, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    _, grid = load_experiment(path, overrides)
    client = MlflowClient(store)
    _, _, children = child_runs(client, yaml.safe_load(text)["name"])
    assert len(children) == len(grid)
    assert all(c.data.tags["rnnlab.status"] in ("finished", "diverged") for c in children)


def test_metrics_written_directly_read_back_as_mlflow_log_batch_writes_them(tmp_path):
    """The SQLite writer (rnnlab.track.mlflow._SqlMetrics) against MLflow's own log_batch:
    the same batches into two runs of one store read back the same through MLflow's API —
    every value, and per key the latest (greatest step, timestamp, value), with NaN, ±inf,
    a repeated metric, keys whose later batch holds older points, a flush sent twice and one
    that failed halfway and was sent again."""
    from mlflow.entities import Metric

    from rnnlab.track.mlflow import MlflowTracker, _Run

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = tracker.client
    writer = tracker._sql
    assert writer is not None  # an SQLite store takes the direct path
    exp = client.create_experiment("direct")
    direct, reference = (client.create_run(exp).info.run_id for _ in range(2))
    nan, inf = math.nan, math.inf
    batches = [
        [
            Metric("a", 1.0, 10, 0),
            Metric("a", 2.0, 10, 1),
            Metric("b", nan, 10, 0),
            Metric("c", inf, 10, 3),
            Metric("a", 2.0, 10, 1),  # repeated: stored once
            Metric("e", -0.5, 10, 0),
        ],
        [
            Metric("a", 5.0, 9, 0),  # an older step: "a"'s latest stays step 1
            Metric("b", -1.0, 10, 0),  # same step and time, below NaN-stored-as-0
            Metric("c", -inf, 11, 3),  # same step, later: the new latest
            Metric("d", 0.5, 10, 2),
            Metric("d", 0.25, 10, 2),  # same step and time, smaller: "d" stays 0.5
            Metric("e", nan, 10, 0),  # NaN (0) above -0.5 at the same step and time
        ],
    ]
    run = _Run(direct, None, "direct", client.get_run(direct).info.artifact_uri)
    for batch in batches:
        run.metrics = list(batch)
        writer.write(run)
        client.log_batch(reference, metrics=batch)
    run.metrics = list(batches[0])  # a flush sent again (after an interrupt): nothing changes
    writer.write(run)
    client.log_batch(reference, metrics=batches[0])

    # A write that fails after its first statement stores nothing and leaves the run's latest
    # values as they were; the same flush sent again is then stored in full.
    later = [Metric("a", 7.0, 12, 5), Metric("f", 1.0, 10, 0)]
    real = writer.store.ManagedSessionMaker

    @contextlib.contextmanager
    def failing(read_only=True):
        with real(read_only=read_only) as session:
            execute, calls = session.execute, []

            def second_fails(*args, **kwargs):
                calls.append(1)
                if len(calls) == 2:
                    raise OSError("disk full")
                return execute(*args, **kwargs)

            session.execute = second_fails
            yield session

    run.metrics = list(later)
    writer.store.ManagedSessionMaker = failing
    try:
        with pytest.raises(Exception, match="disk full"):
            writer.write(run)
    finally:
        writer.store.ManagedSessionMaker = real
    assert "f" not in run.latest and run.latest["a"][1] == 2.0
    writer.write(run)
    client.log_batch(reference, metrics=later)

    def same(x: float) -> object:
        return "nan" if math.isnan(x) else x

    def history(run_id: str, key: str) -> list:
        points = client.get_metric_history(run_id, key)
        return sorted(((m.step, m.timestamp, same(m.value)) for m in points), key=repr)

    def latest(run_id: str) -> dict:
        return {k: same(v) for k, v in client.get_run(run_id).data.metrics.items()}

    for key in "abcdef":
        assert history(direct, key) == history(reference, key), key
    assert latest(direct) == latest(reference)
    big = 1.7976931348623157e308  # MLflow stores ±inf as ±max float
    assert latest(direct) == {"a": 7.0, "b": "nan", "c": -big, "d": 0.5, "e": "nan", "f": 1.0}
    assert len(history(direct, "a")) == 4  # the repeated (a, 2.0, 10, 1) once


def test_a_training_run_s_metrics_reach_the_store_while_it_trains(tmp_path, monkeypatch):
    """Every FLUSH_SECONDS (and every MAX_BATCH values), not only at the end: the UI's
    charts follow a run as it trains."""
    import rnnlab.track.mlflow as tracked
    from rnnlab.config import RunConfig
    from rnnlab.train import Measurement

    clock = [1000.0]
    monkeypatch.setattr(tracked.time, "monotonic", lambda: clock[0])
    tracker = tracked.MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker.experiment_id = tracker.client.create_experiment("live")
    tracker.start_run(0, RunConfig(), "live-run")
    run_id = tracker._runs[0].run_id

    def stored() -> list[int]:
        return [m.step for m in tracker.client.get_metric_history(run_id, "train/loss")]

    tracker.log(0, Measurement(0, {"train/loss": 1.0}))
    clock[0] += tracked.FLUSH_SECONDS / 2
    tracker.log(0, Measurement(1, {"train/loss": 0.9}))
    assert stored() == []  # within FLUSH_SECONDS: still a batch
    clock[0] += tracked.FLUSH_SECONDS / 2
    tracker.log(0, Measurement(2, {"train/loss": 0.8}))
    assert stored() == [0, 1, 2]  # FLUSH_SECONDS after the run began: in the store
    tracker.log(0, Measurement(3, {"train/loss": 0.7}))
    assert stored() == [0, 1, 2]
    tracker.end_run(0, "finished")
    assert stored() == [0, 1, 2, 3]
