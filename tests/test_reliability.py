"""Sweeps survive kills, crashes, divergence, contention and bad input, and lose nothing."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli, write
from mlflow.tracking import MlflowClient

from rnnlab.config import load_experiment
from rnnlab.measure import names
from rnnlab.track import MlflowTracker

pytestmark = pytest.mark.slow

SMALL = """\
name: rel
task: {name: adding, seq_len: 6}
model: {hidden_size: 8}
train: {steps: 3, batch_size: 4, eval_size: 4}
probe: {every: 2}
sweep:
  model.activation: [tanh, relu]
  seed: [0, 1]
"""

# Runs long enough (several seconds each) that a signal lands in the middle of one.
STEPS = 600
SLOW = f"""\
name: slow
task: {{name: adding, seq_len: 100}}
model: {{hidden_size: 64}}
train: {{steps: {STEPS}, batch_size: 32, eval_size: 32}}
probe: {{every: 250}}
sweep:
  seed: [0, 1, 2, 3, 4, 5]
"""


def grid_runs(store, name):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client, []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if "rnnlab.run_key" in r.data.tags]


def finished_keys(runs):
    keys = [
        r.data.tags["rnnlab.run_key"]
        for r in runs
        if r.data.tags["rnnlab.status"] in ("finished", "diverged")
    ]
    assert len(keys) == len(set(keys)), "two finished runs for one run_key"
    return set(keys)


def test_rerun_of_a_complete_sweep_trains_nothing_and_rerun_flag_replaces(tmp_path, store):
    path = write(tmp_path / "e.yaml", SMALL)
    keys = {r.run_key for r in load_experiment(path)[1]}
    one = ("--workers", "1")  # what is kept or retrained, not how: one process
    assert cli("sweep", path, *one, "--tracking-uri", store, cwd=tmp_path).returncode == 0
    _, first = grid_runs(store, "rel")
    proc = cli("sweep", path, *one, "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 0 and "nothing to do" in proc.stdout and "--rerun" in proc.stdout
    _, second = grid_runs(store, "rel")
    assert {r.info.run_id for r in second} == {r.info.run_id for r in first}
    proc = cli("sweep", path, *one, "--rerun", "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 0 and "4 finished" in proc.stdout
    _, third = grid_runs(store, "rel")  # the replaced runs are soft-deleted
    assert finished_keys(third) == keys and len(third) == 4
    assert not {r.info.run_id for r in third} & {r.info.run_id for r in first}


def test_failed_and_stale_runs_are_redone(tmp_path, store, monkeypatch):
    path = write(tmp_path / "e.yaml", SMALL)
    # Every run fails at run time (validation leaves nothing that would: a broken step).
    from rnnlab.run import sweep
    from rnnlab.run.executors import base as worker

    def broken(runs, threads=None):
        yield from ()
        raise RuntimeError("a broken training step")

    monkeypatch.setattr(worker, "train_ensemble", broken)
    experiment, grid = load_experiment(path)
    tracker = MlflowTracker(store)
    summary = sweep.run_sweep(experiment, grid, tracker)
    assert (summary.finished, summary.failed) == (0, 4)
    monkeypatch.undo()
    client, failed = grid_runs(store, "rel")
    assert all(
        r.data.tags["rnnlab.status"] == "failed" and r.info.status == "FAILED" for r in failed
    )
    error = client.download_artifacts(failed[0].info.run_id, "error.txt", str(tmp_path))
    with open(error) as f:
        assert "a broken training step" in f.read()

    # A run left RUNNING by a process that no longer exists: marked KILLED, its point redone.
    _, grid = load_experiment(path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    exp_id = client.get_experiment_by_name("rel").experiment_id
    stale = client.create_run(
        exp_id,
        tags={
            "rnnlab.run_key": grid[0].run_key,
            "rnnlab.status": "running",
            "rnnlab.host": socket.gethostname(),
            "rnnlab.pid": str(dead.pid),
        },
    )
    proc = cli("sweep", path, "--workers", "1", "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 0 and "marked KILLED" in proc.stdout, proc.stdout
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert client.get_run(stale.info.run_id).data.tags["rnnlab.status"] == "killed"
    _, runs = grid_runs(store, "rel")
    assert finished_keys(runs) == {r.run_key for r in grid}


def start(path, store, *extra):
    # Create the store first (as rnnlab does: from its kept empty copy, if there is one): the
    # test polls the store while the sweep writes it, and two processes must not create it.
    MlflowTracker(store).check()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "sweep", str(path), "--tracking-uri", store, *extra],
        cwd=path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("timed out waiting for the sweep")


def test_sigkill_of_the_process_tree_then_resume_gives_the_complete_grid(tmp_path, store):
    path = write(tmp_path / "slow.yaml", SLOW)
    keys = {r.run_key for r in load_experiment(path)[1]}
    # Runs alone, one after another in each worker, so they finish one by one: two stacks of 3
    # end together, six runs within a moment, and the kill could come after the last.
    proc = start(path, store, "--workers", "2", "train.ensemble=off")

    def two_done_and_more_running():  # both workers may be between runs at a moment
        runs = grid_runs(store, "slow")[1]
        running = any(r.info.status == "RUNNING" for r in runs)
        return len(finished_keys(runs)) >= 2 and running

    try:
        wait_for(two_done_and_more_running)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _, runs = grid_runs(store, "slow")
    done_before = finished_keys(runs)
    assert 2 <= len(done_before) < len(keys)
    assert any(r.info.status == "RUNNING" for r in runs)  # the kill left half-runs behind

    resumed = cli("sweep", path, "--workers", "2", "--tracking-uri", store, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(done_before)} already done" in resumed.stdout
    _, runs = grid_runs(store, "slow")
    assert finished_keys(runs) == keys
    assert not any(r.info.status == "RUNNING" for r in runs)  # the half-runs were closed as KILLED
    client = MlflowClient(store)
    for r in runs:
        if r.data.tags["rnnlab.status"] == "finished":
            assert len(client.get_metric_history(r.info.run_id, "train/loss")) == STEPS + 1


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_closes_running_runs_as_killed_with_their_metrics(tmp_path, store, workers, sig):
    path = write(tmp_path / "slow.yaml", SLOW)
    proc = start(path, store, "--workers", str(workers))
    client = MlflowClient(store)

    def some_run_started():
        _, runs = grid_runs(store, "slow")
        return any(r.info.status == "RUNNING" for r in runs)

    def every_running_run_logged():  # so that each killed run has metrics to keep
        _, runs = grid_runs(store, "slow")
        running = [r for r in runs if r.info.status == "RUNNING"]
        return running and all(names.TRAIN_LOSS in r.data.metrics for r in running)

    wait_for(some_run_started)
    wait_for(every_running_run_logged)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C in a terminal signals the whole process group
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "resume: run the same command again" in err
    _, runs = grid_runs(store, "slow")
    killed = [r for r in runs if r.data.tags["rnnlab.status"] == "killed"]
    assert killed and all(r.info.status == "KILLED" for r in killed)
    assert not any(r.info.status == "RUNNING" for r in runs)
    for r in killed:  # the metrics so far were flushed, not lost
        history = client.get_metric_history(r.info.run_id, "train/loss")
        assert 0 < len(history) < STEPS + 1
    parents = [
        r for r in client.search_runs([runs[0].info.experiment_id]) if "rnnlab.role" in r.data.tags
    ]
    assert parents and parents[0].info.status == "KILLED"


INTERRUPTED_IN_AN_IMPORT = """\
import sys
from rnnlab import cli

def main():  # a Ctrl-C that lands in code made from a string, as during an import, handled
    try:
        exec("raise KeyboardInterrupt", {})  # what namedtuple and dataclasses run
    except KeyboardInterrupt:
        return cli.EXIT_INTERRUPTED

cli.main = main
if sys.argv[1] == "bare":  # CPython alone: the handled interrupt still ends it by SIGINT
    cli._forget_interrupts = lambda: None
cli.entry()
"""


@pytest.mark.parametrize("how", ["entry", "bare"])
def test_an_interrupt_handled_inside_an_import_still_exits_130_under_python_m(tmp_path, how):
    """``python -m rnnlab``'s status after an interrupt that landed in string-made code (which
    the sweep then handled) is 130, not a death by SIGINT (``cli._forget_interrupts``); the
    bare case shows what CPython does without it, so this test can fail."""
    write(tmp_path / "interrupted_import.py", INTERRUPTED_IN_AN_IMPORT)
    env = os.environ | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "interrupted_import", how], env=env, capture_output=True, text=True
    )
    assert proc.returncode == (130 if how == "entry" else -signal.SIGINT), proc.stderr


@pytest.mark.parametrize("where", ["import", "arguments"])
def test_a_ctrl_c_before_the_command_runs_is_one_line_and_130(tmp_path, where):
    """Ctrl-C in the first half second: while the command's modules import (here: a pydantic
    that is interrupted as it imports) or while its arguments are parsed (argparse
    interrupted). One line and 130, as later; it was a traceback and a death by SIGINT."""
    shim = tmp_path / "shim"
    shim.mkdir()
    if where == "import":
        (shim / "pydantic").mkdir()
        write(shim / "pydantic" / "__init__.py", "raise KeyboardInterrupt\n")
    else:  # after every import: argparse's parse is where it lands
        write(
            shim / "sitecustomize.py",
            "import argparse\n"
            "def parse(*a, **k):\n    raise KeyboardInterrupt\n"
            "argparse.ArgumentParser.parse_known_args = parse\n",
        )
    env = os.environ | {"PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab", "validate", "x.yaml"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted."


def test_an_interrupted_rerun_keeps_the_results_of_the_points_it_did_not_reach(tmp_path, store):
    """--rerun retires a point's finished run only once its new run is done: interrupted
    after its first new run, every grid point still has exactly one finished run (the new
    one, or the earlier one it did not reach). It used to delete them all before training."""
    path = write(
        tmp_path / "r.yaml",
        SMALL.replace("steps: 3", "steps: 150").replace("seq_len: 6", "seq_len: 40"),
    )
    proc = cli("sweep", path, "--tracking-uri", store, "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _, before = grid_runs(store, "rel")
    keys = {r.data.tags["rnnlab.run_key"] for r in before}
    assert len(before) == len(keys) == 4
    proc = start(path, store, "--workers", "1", "--rerun")
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("rel").experiment_id

    def a_new_run_finished():
        runs = client.search_runs([exp], "attributes.status = 'FINISHED'", run_view_type=3)
        return len([r for r in runs if "rnnlab.run_key" in r.data.tags]) > 4

    wait_for(a_new_run_finished)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--rerun: the points it finished" in err, err
    _, after = grid_runs(store, "rel")  # the runs not deleted
    finished = [r for r in after if r.data.tags["rnnlab.status"] == "finished"]
    assert sorted(r.data.tags["rnnlab.run_key"] for r in finished) == sorted(keys)
    old = {r.info.run_id for r in before}
    assert 0 < len(old - {r.info.run_id for r in finished}) < 4  # some replaced, some kept


def test_divergence_threshold_ends_the_run_as_diverged_and_the_sweep_goes_on(tmp_path, store):
    path = write(tmp_path / "e.yaml", SMALL)
    proc = cli(
        "sweep",
        path,
        "train.divergence_threshold=1e-9",
        "--workers",
        "1",
        "--tracking-uri",
        store,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "0 finished, 4 diverged" in proc.stdout
    client, runs = grid_runs(store, "rel")
    for r in runs:
        assert (
            r.data.tags["rnnlab.status"] == "diverged"
            and r.data.tags["rnnlab.diverged_step"] == "0"
        )
        assert [m.step for m in client.get_metric_history(r.info.run_id, "grad/norm")] == [0]


def test_three_workers_lose_no_runs_and_no_metric_rows(tmp_path, store):
    text = SMALL.replace("seed: [0, 1]", "seed: [0, 1, 2, 3, 4, 5]").replace(
        "[tanh, relu]", "[tanh, relu]\n  task.seq_len: [5, 7]"
    )
    path = write(tmp_path / "e.yaml", text)
    _, grid = load_experiment(path)
    assert len(grid) == 24
    proc = cli("sweep", path, "--workers", "3", "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 0 and "24 finished" in proc.stdout, proc.stderr
    client, runs = grid_runs(store, "rel")
    assert finished_keys(runs) == {r.run_key for r in grid} and len(runs) == 24
    for r in runs:
        T = int(r.data.params["task.seq_len"])
        rows = {
            key: len(client.get_metric_history(r.info.run_id, key))
            for key in (
                "train/loss",
                "grad/norm",
                "eval/loss",
                "grad_h/slope",
                "grad_h/init",
                "grad_h/final",
            )
        }
        assert rows == {
            "train/loss": 4,
            "grad/norm": 4,
            "eval/loss": 3,
            "grad_h/slope": 3,
            "grad_h/init": T,
            "grad_h/final": T,
        }


def test_unreachable_or_unwritable_store_is_bad_input(tmp_path):
    path = write(tmp_path / "e.yaml", SMALL)
    with socket.socket() as s:  # a free loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for uri in (f"http://127.0.0.1:{port}", "sqlite:////proc/rnnlab/none.db"):
        proc = cli("sweep", path, "--tracking-uri", uri, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and "cannot use the MLflow tracking store" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml"]


def test_a_store_interrupted_while_it_is_created_is_not_left_half_made(tmp_path, monkeypatch):
    """Ctrl-C during MLflow's schema migrations (seconds, on a new store) leaves no store and
    no temporary file, and the next command creates a whole one (removing what a creator
    killed outright left). Before, the half-migrated file stayed and MLflow refused it ever
    after ("table _alembic_tmp_experiments already exists"). The interrupt lands here once
    the migrations have written to the file."""
    import rnnlab.track.mlflow as tracking

    real = tracking.MlflowClient

    class Interrupted(real):
        def search_experiments(self, *args, **kwargs):
            super().search_experiments(*args, **kwargs)  # the schema is written…
            raise KeyboardInterrupt  # …and Ctrl-C lands before the store is whole

    db = tmp_path / "store" / "mlflow.db"
    monkeypatch.setattr(tracking, "MlflowClient", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        MlflowTracker(f"sqlite:///{db}").check()
    assert list(db.parent.iterdir()) == []  # neither the store nor its temporary file
    monkeypatch.setattr(tracking, "MlflowClient", real)
    for stale in (".mlflow.db.0123abcd.creating", ".mlflow.db.0123abcd.creating-journal"):
        (db.parent / stale).write_text("left by a creator killed with SIGKILL")
    (db.parent / ".other.db.0123abcd.creating").write_text("another store's: kept")
    tracker = MlflowTracker(f"sqlite:///{db}")
    tracker.check()
    assert [e.name for e in tracker.client.search_experiments()] == ["Default"]
    assert sorted(p.name for p in db.parent.iterdir()) == [
        ".other.db.0123abcd.creating",
        "mlflow.db",
    ]


def _clauses(sql: str | None) -> list[str]:
    """A CREATE statement's clauses, in no order: MLflow's migrations write a table's
    constraints in an order that varies from one migration to the next (alembic rebuilds
    SQLite tables from sets), the same schema all the same."""
    return sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())


def test_a_new_store_starts_from_the_kept_empty_store_and_equals_a_migrated_one(
    tmp_path, monkeypatch
):
    """The first new store is built by MLflow's migrations and an empty copy is kept (keyed by
    MLflow's version); the next starts from it without migrating, and is the same store: the
    same tables, schema version and rows, its Default experiment where it lives, and the
    next experiment numbered 1. A damaged copy is dropped and the store migrated."""
    import sqlite3

    import mlflow.store.db.utils as db_utils

    import rnnlab.track.mlflow as tracking

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tracking._template()
    assert template.parent == tmp_path / "cache" / "rnnlab" and not template.exists()

    def store(name: str) -> tuple:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)  # MLflow puts the Default experiment's folder here
        tracker = MlflowTracker(f"sqlite:///{folder / 'mlflow.db'}")
        tracker.check()
        new = tracker.client.create_experiment("next")
        default = tracker.client.get_experiment("0")
        with sqlite3.connect(folder / "mlflow.db") as con:
            tables = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
            tables = [(kind, name, _clauses(sql)) for kind, name, sql in tables.fetchall()]
            rows = {
                name: con.execute(f'SELECT * FROM "{name}"').fetchall()
                for kind, name, _ in tables
                if kind == "table"
            }
        rows.pop("experiments")  # times and folders, compared below
        return tables, rows, new, default.artifact_location, default.name

    migrated = store("a")
    assert template.is_file()
    real = db_utils._initialize_tables

    def refuse(*args, **kwargs):
        raise AssertionError("migrated although a kept empty store was there")

    monkeypatch.setattr(db_utils, "_initialize_tables", refuse)
    copied = store("b")
    assert copied[:3] == migrated[:3] and copied[2] == "1"
    assert copied[3] == str(tmp_path / "b" / "mlruns" / "0") and copied[4] == "Default"
    monkeypatch.setattr(db_utils, "_initialize_tables", real)
    template.write_bytes(b"damaged")
    assert store("c")[:3] == migrated[:3]
    assert template.read_bytes() != b"damaged"  # kept anew


def test_an_in_memory_sqlite_store_is_refused(tmp_path):
    """sqlite:///:memory: would lose every run at exit (and wrote artifacts into the current
    folder): refused as sqlite:// is, nothing written."""
    path = write(tmp_path / "e.yaml", SMALL)
    for uri in ("sqlite:///:memory:", "sqlite://"):
        proc = cli("sweep", path, "--tracking-uri", uri, cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and "in-memory store loses every run" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.yaml"]


def test_a_sweep_over_the_task_trains_each_task_with_its_own_options(tmp_path, store):
    """sweep: {task.name: [adding, copy]} on a base task with options of its own (adding's
    variant): each point trains, and the parent run's grid.json lists both. The grid was
    re-expanded from the resolved spec, where copy met adding's variant: exit 2 after the
    store and a RUNNING parent run were written."""
    path = write(
        tmp_path / "tasks.yaml",
        SMALL.replace("task: {name: adding, seq_len: 6}", "task: {seq_len: 6}").replace(
            "  model.activation: [tanh, relu]\n  seed: [0, 1]\n", "  task.name: [adding, copy]\n"
        ),
    )
    proc = cli("sweep", path, "--tracking-uri", store, "--workers", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    client, runs = grid_runs(store, "rel")
    assert sorted(r.data.params["task.name"] for r in runs) == ["adding", "copy"]
    assert {r.data.tags["rnnlab.status"] for r in runs} == {"finished"}
    [parent] = [
        r for r in client.search_runs([runs[0].info.experiment_id]) if "rnnlab.role" in r.data.tags
    ]
    assert parent.info.status == "FINISHED"
    grid = json.loads(
        Path(client.download_artifacts(parent.info.run_id, "grid.json", tmp_path)).read_text()
    )
    assert set(grid) == {r.data.tags["rnnlab.run_key"] for r in runs}


def test_same_config_and_seed_give_identical_tracked_metrics(tmp_path):
    path = write(tmp_path / "e.yaml", SMALL)
    stores = [f"sqlite:///{tmp_path / f'{i}.db'}" for i in range(2)]
    values = []
    for store, workers in zip(stores, ("1", "2"), strict=True):
        assert (
            cli(
                "sweep", path, "--workers", workers, "--tracking-uri", store, cwd=tmp_path
            ).returncode
            == 0
        )
        client, runs = grid_runs(store, "rel")
        values.append(
            {
                r.data.tags["rnnlab.run_key"]: {
                    k: [
                        m.value
                        for m in sorted(
                            client.get_metric_history(r.info.run_id, k), key=lambda m: m.step
                        )
                    ]
                    for k in r.data.metrics
                }
                for r in runs
            }
        )
    assert values[0] == values[1] and len(values[0]) == 4


def test_readme_has_a_when_things_go_wrong_section():
    text = (ROOT / "README.md").read_text()
    assert "## When things go wrong" in text and "--rerun" in text and "diverged" in text


def session_processes(sid: int) -> list[str]:
    """Live processes of a session (the sweep's, started with start_new_session)."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [r[3] for r in rows if len(r) == 4 and int(r[1]) == sid and not r[2].startswith("Z")]


def test_sigkill_of_the_main_process_leaves_no_orphans_and_the_next_sweep_cleans_up(
    tmp_path, store
):
    """Only the writer is killed (as an OOM killer would): its workers, queue and resource
    tracker go with it; the next sweep takes over the dead writer's lock, closes its parent
    run and its half-runs as KILLED and completes the grid, one finished run per run_key."""
    path = write(tmp_path / "slow.yaml", SLOW.replace(f"steps: {STEPS}", "steps: 400"))
    keys = {r.run_key for r in load_experiment(path)[1]}
    proc = start(path, store, "--workers", "2", "train.ensemble=off")
    try:
        wait_for(lambda: len(finished_keys(grid_runs(store, "slow")[1])) >= 1)
        assert len(session_processes(proc.pid)) >= 3  # the writer and its two workers
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_for(lambda: not session_processes(proc.pid), timeout=20)

    resumed = cli("sweep", path, "--workers", "2", "--tracking-uri", store, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 sweep(s) left RUNNING by a dead process were closed as KILLED" in resumed.stdout
    client, runs = grid_runs(store, "slow")
    assert finished_keys(runs) == keys
    exp = client.get_experiment_by_name("slow")
    parents = client.search_runs([exp.experiment_id], "tags.`rnnlab.role` = 'sweep'")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]
    assert not client.search_registered_models()  # the lock is given back


def test_two_sweeps_of_one_file_at_once_train_each_point_once(tmp_path, store):
    """Started together on a fresh store: no race in MLflow's schema creation, and one of
    the two trains while the other says who holds the experiment (or finds nothing to do)."""
    path = write(tmp_path / "e.yaml", SLOW.replace(f"steps: {STEPS}", "steps: 120"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "rnnlab", "sweep", str(path), "--tracking-uri", store]
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    for _, err in outs:
        assert "Traceback" not in err
    assert codes in ([0, 0], [0, 1]), outs
    if codes == [0, 1]:
        loser = next(err for (_, err), p in zip(outs, procs, strict=True) if p.returncode)
        assert "is being trained into" in loser and "by another rnnlab" in loser
    _, runs = grid_runs(store, "slow")
    keys = {r.run_key for r in load_experiment(path)[1]}
    assert finished_keys(runs) == keys  # exactly one finished run per run_key
    assert len(runs) == len(keys)  # and no second training of any point


@pytest.fixture
def small_disk(tmp_path):
    """A 1.6 MB tmpfs: room for MLflow's schema and a few runs, then a full disk."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_ends_the_sweep_with_one_line_and_closes_its_runs(tmp_path, small_disk):
    path = write(
        tmp_path / "e.yaml",
        SMALL.replace("steps: 3", "steps: 400").replace("[0, 1]", "[0, 1, 2]"),
    )
    store = f"sqlite:///{small_disk / 'mlflow.db'}"
    proc = cli("sweep", path, "--workers", "1", "--tracking-uri", store, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "SELECT" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the tracking store stopped accepting writes")
    assert "disk is full" in last and "run the same command again to resume" in last
    client, runs = grid_runs(store, "rel")
    assert runs and sum(r.info.status == "RUNNING" for r in runs) <= 1  # closed where it could
    assert not client.search_registered_models()  # the lock is given back


def test_a_read_only_store_is_refused_in_seconds(tmp_path, store, small_disk):
    path = write(tmp_path / "e.yaml", SMALL)
    ro = f"sqlite:///{small_disk / 'mlflow.db'}"
    assert cli("sweep", path, "--workers", "1", "--tracking-uri", ro, cwd=tmp_path).returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    t0 = time.time()
    proc = cli("sweep", path, "--rerun", "--tracking-uri", ro, cwd=tmp_path)
    assert time.time() - t0 < 30
    assert proc.returncode == 2 and "not writable (read-only filesystem" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
