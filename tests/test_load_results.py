"""The public results API (``rnnlab.load_results``) against a real sweep in a temporary store,
read back independently with MlflowClient; its errors; the Tracker protocol; and what the CLI
and ``import rnnlab`` leave unimported."""

import inspect
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, TINY, write

import rnnlab
from rnnlab.config import ConfigError, load_experiment
from rnnlab.track import MemoryTracker, MlflowTracker, Tracker

RUN_COLUMNS = [
    "run_id",
    "name",
    "status",
    "diverged_step",
    "sweep",
    "parent_id",
    "final_loss_ratio",
    "slope_init",
    "slope_final",
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 4-run sweep (2 lengths × 2 activations) logged by the MLflow tracker."""
    from rnnlab.run.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("results")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    experiment, grid = load_experiment(write(tmp / "tiny.yaml", TINY))
    tracker = MlflowTracker(store)
    tracker.check()
    assert run_sweep(experiment, grid, tracker).finished == 4
    return tmp, store


@pytest.mark.slow
def test_frames_hold_the_values_logged_in_mlflow(swept):
    from mlflow.tracking import MlflowClient

    _, store = swept
    r = rnnlab.load_results("tiny", store)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("tiny")
    logged = client.search_runs([exp.experiment_id], "tags.`rnnlab.run_key` LIKE '%'")
    assert len(logged) == 4 and set(r.runs.run_id) == {x.info.run_id for x in logged}
    # the documented columns
    assert [c for c in r.runs.columns if c in RUN_COLUMNS] == RUN_COLUMNS
    assert list(r.history.columns) == ["run_id", "key", "step", "value"]
    assert list(r.profiles.columns) == ["run_id", "step", "t", "k", "n_t"]
    assert r.experiment_id == exp.experiment_id and r.swept == ["task.seq_len", "model.activation"]
    runs = r.runs.set_index("run_id")
    for x in logged:
        rid, row = x.info.run_id, runs.loc[x.info.run_id]
        assert row["name"] == x.info.run_name and row.status == x.data.tags["rnnlab.status"]
        assert {k: str(row[k]) for k in x.data.params} == x.data.params  # typed, same values
        assert row.final_loss_ratio == x.data.metrics["eval/loss_ratio"]
        for key in ("train/loss", "eval/loss_ratio", "grad/norm", "grad_h/slope"):
            mine = r.history[(r.history.run_id == rid) & (r.history.key == key)]
            expected = sorted((m.step, m.value) for m in client.get_metric_history(rid, key))
            assert sorted(zip(mine.step, mine.value, strict=True)) == expected and expected
        slopes = sorted(client.get_metric_history(rid, "grad_h/slope"), key=lambda m: m.step)
        assert (row.slope_init, row.slope_final) == (slopes[0].value, slopes[-1].value)
        # the first and last profiles, against the metric series the UI charts (step = k)
        p = r.profiles[r.profiles.run_id == rid]
        T = int(x.data.params["task.seq_len"])
        assert sorted(set(p.step)) == [0, 2, 4] and len(p) == 3 * T
        for step, key in ((0, "grad_h/init"), (4, "grad_h/final")):
            curve = p[p.step == step].sort_values("k")
            series = sorted(client.get_metric_history(rid, key), key=lambda m: m.step)
            assert [m.step for m in series] == list(curve.k) == list(range(T))
            assert [m.value for m in series] == list(curve.n_t)
            assert list(curve.t) == [T - k for k in curve.k]


@pytest.mark.slow
def test_errors_say_what_is_wrong_in_one_line(swept, tmp_path):
    from mlflow.tracking import MlflowClient

    _, store = swept

    def error(experiment: str, uri: str) -> str:
        with pytest.raises(ConfigError) as e:
            rnnlab.load_results(experiment, uri)
        assert "\n" not in str(e.value)
        return str(e.value)

    message = error("nope", store)
    assert "no experiment 'nope'" in message and "(experiments: tiny" in message
    client = MlflowClient(store)
    client.delete_experiment(client.create_experiment("gone"))
    assert "experiment 'gone' was deleted" in error("gone", store)
    assert "gone" not in error("nope", store)  # a deleted experiment is not offered
    missing = tmp_path / "missing.db"
    assert "no store there yet" in error("tiny", f"sqlite:///{missing}")
    assert not missing.exists()  # loading never creates a store
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    MlflowClient(empty).search_experiments()  # a store with MLflow's Default experiment only
    assert "no experiments in" in error("tiny", empty)


def test_both_trackers_are_trackers_with_the_protocols_signatures():
    members = [m for m in dir(Tracker) if not m.startswith("_") and callable(getattr(Tracker, m))]
    assert {"start_run", "log", "end_run", "acquire", "prior_runs"} <= set(members)
    for tracker in (MemoryTracker(), MlflowTracker("sqlite:////nonexistent/mlflow.db")):
        assert isinstance(tracker, Tracker)
        for m in members:
            want = list(inspect.signature(getattr(Tracker, m)).parameters)
            assert list(inspect.signature(getattr(tracker, m)).parameters) == want[1:], m


def test_the_cli_start_and_import_rnnlab_stay_light(tmp_path):
    """`rnnlab --help`, `rnnlab validate` and importing rnnlab, its tracking boundary and its
    names load no MLflow, torch, seaborn or pandas: those come with the commands and
    functions that use them (``rnnlab.load_results`` on first use)."""
    path = write(tmp_path / "tiny.yaml", TINY)
    code = textwrap.dedent(
        f"""
        import sys
        import rnnlab, rnnlab.track, rnnlab.measure.names
        from rnnlab.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        assert main(["validate", {str(path)!r}]) == 0
        heavy = ("mlflow", "torch", "seaborn", "pandas", "matplotlib")
        print("loaded:", sorted(m for m in heavy if m in sys.modules))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "loaded: []" in proc.stdout


def test_load_results_is_rnnlabs_and_reports():
    from rnnlab import report
    from rnnlab.report.load import Frames, load_results

    assert rnnlab.load_results is load_results is report.load_results
    assert all(f"``{frame}``" in Frames.__doc__ for frame in ("runs", "history", "profiles"))
    assert all(column in Frames.__doc__ for column in RUN_COLUMNS)  # documented
