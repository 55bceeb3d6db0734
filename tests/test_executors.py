"""Executors behind one protocol: the same bits from every one, one dead-worker rule, and
SLURM through submitit's local executor (real job processes, as on a cluster)."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import cli, write
from mlflow.tracking import MlflowClient

from rnnlab.config import Experiment, RunConfig, load_experiment
from rnnlab.run.executors import choices, make, registry
from rnnlab.run.executors.base import work
from rnnlab.run.sweep import run_sweep
from rnnlab.track import MemoryTracker, MlflowTracker
from rnnlab.train import train


def cfg(seed=0, **train) -> RunConfig:
    return RunConfig.model_validate(
        {
            "task": {"name": "adding", "seq_len": 8},
            "model": {"hidden_size": 6},
            "train": {"steps": 12, "batch_size": 4, "eval_size": 4} | train,
            "probe": {"every": 4},
            "seed": seed,
        }
    )


class Scripted:
    """A fake executor: runs the first job for real, then reports the second job over after
    one measurement without ending it (as a worker that dies would)."""

    name = "scripted"

    def slots(self):
        return 2

    def run(self, jobs, deliver, job_over, interrupted):
        first, second = jobs
        work(first, deliver)
        job_over(first[0], None)
        messages = []
        work(second, messages.append)
        deliver([messages[0][0]])  # one measurement, then the worker "dies"
        job_over(second[0], "the node went away")


def test_a_job_that_dies_ends_its_open_runs_as_failed_by_the_one_rule():
    grid = [cfg(0, ensemble="off"), cfg(1, ensemble="off")]
    tracker = MemoryTracker()
    summary = run_sweep(Experiment(name="x"), grid, tracker, executor=Scripted())
    assert (summary.finished, summary.failed) == (1, 1)
    died = [r for r in tracker.history if r["status"] == "failed"]
    assert len(died) == 1 and died[0]["error"] == "the node went away"
    assert len(died[0]["metrics"]["train/loss"]) == 1  # what it sent is kept


def test_workers_draw_each_runs_profile_png_from_the_profiles_it_logged():
    """The driver only writes: profile.png comes from the worker, and is the figure of
    exactly the profiles the tracker received (drawn again here from those)."""
    from rnnlab.run.profile_png import profile_png

    grid = [cfg(0, ensemble="off"), cfg(1, ensemble="off")]
    tracker = MemoryTracker(figures=True)
    summary = run_sweep(Experiment(name="x"), grid, tracker)  # work(), inline
    assert summary.finished == 2
    for r in tracker.history:
        assert [s for s, _ in r["profiles"]] == [0, 4, 8, 12]
        again = profile_png(r["profiles"], r["name"])
        assert r["figure"].startswith(b"\x89PNG") and r["figure"] == again
    quiet = MemoryTracker()  # a tracker that stores no figure gets none drawn
    run_sweep(Experiment(name="x"), grid[:1], quiet)
    assert quiet.history[0]["figure"] is None and quiet.history[0]["profiles"]
    stopping, messages = threading.Event(), []  # nor does a run the sweep stops
    stopping.set()
    work(([0], [grid[0].model_dump_json()], ["x"]), messages.extend, stopping)
    assert messages[0][0] == "m" and messages[0][2].profile is not None
    assert [m for m in messages if m[0] == "end"] == [("end", 0, ("killed", None, None))]


def test_every_executor_is_registered_and_follows_the_protocol():
    assert set(registry()) == {"inline", "processes", "ray", "slurm"}
    assert {name: c.__name__ for name, c in choices().items()} == {
        "local": "Processes",
        "ray": "Ray",
        "slurm": "Slurm",
    }
    for name in ("inline", "processes"):
        ex = make(name, **({"workers": 2} if name == "processes" else {}))
        assert ex.name == name and ex.slots() >= 1 and callable(ex.run)
    for c in choices().values():
        assert callable(c.check) and callable(c.from_cli) and c.help


SERIAL = """\
\"\"\"Jobs one after another, in reverse order (a test's executor: one new file).\"\"\"

from typing import ClassVar

from rnnlab.run.executors.base import work


class Serial:
    name: ClassVar[str] = "serial"
    choice: ClassVar[str] = "serial"
    help: ClassVar[str] = "the jobs in reverse order, in this process"

    @staticmethod
    def check(args, tracking_uri):
        pass

    @classmethod
    def from_cli(cls, args, resources, workers):
        return cls(), "backwards"

    def slots(self):
        return 1

    def run(self, jobs, deliver, job_over, interrupted):
        for job in reversed(jobs):
            work(job, deliver, interrupted)
            job_over(job[0], None)
"""


def test_a_new_executor_is_one_new_file(tmp_path):
    """serial.py dropped into (a copy of) rnnlab/run/executors/ is offered by --executor and
    trains the sweep, with no other file edited."""
    import shutil
    from pathlib import Path

    import rnnlab

    shutil.copytree(Path(rnnlab.__file__).parent, tmp_path / "rnnlab")
    write(tmp_path / "rnnlab" / "run" / "executors" / "serial.py", SERIAL)
    exp = write(tmp_path / "e.yaml", SWEEP.replace("resources: {cpus: 1, time_min: 10}\n", ""))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"PYTHONPATH": str(tmp_path)}
    helped = cli("sweep", "--help", cwd=tmp_path, env=env, timeout=60)
    assert "serial: the jobs in reverse order" in " ".join(helped.stdout.split())
    done = cli(
        "sweep", exp, "train.steps=3", "--executor", "serial", "--tracking-uri", store,
        cwd=tmp_path, env=env, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "backwards" in done.stderr and "4 finished" in done.stdout
    assert "serial" not in registry()  # the copy was extended, this process untouched


SWEEP = """\
name: slurmy
task: {name: adding, seq_len: 10}
model: {hidden_size: 8}
train: {steps: 40, batch_size: 4, eval_size: 8}
probe: {every: 10}
resources: {cpus: 1, time_min: 10}
sweep:
  model.activation: [tanh, relu]
  seed: [0, 1]
"""


def finished(store, name):
    client = MlflowClient(store)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if "rnnlab.run_key" in r.data.tags]


@pytest.mark.cluster
def test_slurm_executor_through_submitit_gives_the_bits_of_training_alone(tmp_path, store):
    path = write(tmp_path / "s.yaml", SWEEP)
    proc = cli(
        "sweep",
        path,
        "--executor",
        "slurm",
        "--slurm-folder",
        tmp_path / "slurm",
        "--tracking-uri",
        store,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "local jobs via submitit" in proc.stderr  # no sbatch here: submitit runs them locally
    client, runs = finished(store, "slurmy")
    grid = {r.run_key: r for r in load_experiment(path)[1]}
    assert sorted(r.data.tags["rnnlab.status"] for r in runs) == ["finished"] * 4
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "train/loss")
        stored = [m.value for m in sorted(history, key=lambda m: m.step)]
        alone = [m.metrics["train/loss"] for m in train(grid[r.data.tags["rnnlab.run_key"]])]
        assert stored == alone
    logs = list((tmp_path / "slurm").rglob("*_log.out"))
    assert logs, "submitit keeps each job's log in the folder"
    assert not list((tmp_path / "slurm").glob("sweep-*"))  # the spool is cleaned up


@pytest.mark.cluster
def test_slurm_interrupt_then_resume(tmp_path, store):
    path = write(tmp_path / "s.yaml", SWEEP.replace("steps: 40", "steps: 1500"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    MlflowTracker(store).check()  # created before the sweep and the test poll it
    args = [
        "sweep",
        str(path),
        "--executor",
        "slurm",
        "--slurm-folder",
        str(tmp_path / "slurm"),
        "--tracking-uri",
        store,
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        exp = MlflowClient(store).get_experiment_by_name("slurmy")
        if exp and MlflowClient(store).search_runs(
            [exp.experiment_id], "tags.`rnnlab.status` = 'running'"
        ):
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # at once: on a busy machine a run can end within seconds
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    _, runs = finished(store, "slurmy")
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    assert "killed" in {r.data.tags["rnnlab.status"] for r in runs}
    assert {r.data.tags["rnnlab.status"] for r in runs} <= {"killed", "finished"}

    resumed = cli(*args, cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    _client, runs = finished(store, "slurmy")
    done = [
        r.data.tags["rnnlab.run_key"] for r in runs if r.data.tags["rnnlab.status"] == "finished"
    ]
    assert sorted(done) == sorted({r.run_key for r in load_experiment(path)[1]})


def test_the_sweep_driver_never_imports_torch():
    """The driver schedules (``groups`` asks whether CUDA is there, as torch would answer) and
    stores what workers send (a pickled Measurement) without torch: 3.3 s less before a GPU
    host's sweep starts its workers."""
    import pickle

    import numpy as np
    import torch

    from rnnlab.run import schedule

    sent = next(train(RunConfig.model_validate({"train": {"steps": 1, "batch_size": 4}})))
    assert isinstance(sent.profile, np.ndarray) and sent.metrics
    code = (
        "import pickle, sys\n"
        "import rnnlab.cli, rnnlab.run.sweep, rnnlab.track.mlflow\n"
        "from rnnlab.run.executors.processes import Processes\n"
        "from rnnlab.config import load_experiment\n"
        "from rnnlab.run import schedule\n"
        "grid = load_experiment('experiments/vanishing.yaml')[1]\n"
        "units = schedule.groups(grid, list(range(len(grid))), 2)\n"
        "m = pickle.loads(sys.stdin.buffer.read())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(schedule.cuda_available(), sorted(map(len, units)), m.step, len(m.metrics))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(sent),
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    grid = load_experiment(Path(__file__).parent.parent / "experiments" / "vanishing.yaml")[1]
    want = sorted(map(len, schedule.groups(grid, list(range(len(grid))), 2)))  # torch's answer
    assert proc.stdout.decode().split() == [
        str(torch.cuda.is_available()),
        *str(want).split(),
        "0",
        str(len(sent.metrics)),
    ]


def _maps_torch(pid: int) -> bool:
    """Has process pid loaded torch's library (Linux: its memory map names it)?"""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _gone(pids: list[int], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if Path(f"/proc/{p}").exists()]
        if not alive or all(
            Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[0] == "Z" for p in alive
        ):
            return True
        time.sleep(0.05)
    return False


def test_local_workers_start_before_their_jobs_with_torch_loaded_and_run_uses_them():
    """``started``: the workers spawn and import torch before the jobs are known (the driver
    opens the store meanwhile); ``run`` trains on those very processes, to the same bits as
    training alone, and shuts them down; a block that ends without ``run`` ends them at once."""
    import multiprocessing as mp

    from rnnlab.run.executors.base import started

    ex = make("processes", workers=2)
    with started(ex, [cfg(0, ensemble="off"), cfg(1, ensemble="off"), cfg(2, ensemble="off")]):
        pids = sorted(p.pid for p in ex._pool._processes.values())
        assert len(pids) == 2
        deadline = time.monotonic() + 120
        while not all(map(_maps_torch, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(map(_maps_torch, pids)), "the started workers never imported torch"
        grid = [cfg(0, ensemble="off"), cfg(1, ensemble="off")]
        jobs = [([i], [grid[i].model_dump_json()], None) for i in range(2)]
        seen, got, over = set(), {}, []

        def deliver(batch):
            seen.update(p.pid for p in mp.active_children())
            for _, i, payload in batch:
                got.setdefault(i, []).append(payload)

        ex.run(jobs, deliver, lambda unit, error: over.append((unit, error)), threading.Event())
    assert seen and seen <= set(pids)  # no other process trained
    assert sorted(over) == [([0], None), ([1], None)]
    for i, run in enumerate(grid):
        alone = [m.metrics for m in train(run)]
        assert [m.metrics for m in got[i][:-1]] == alone and got[i][-1][0] == "finished"
    assert _gone(pids, within=10)

    with started(ex, [cfg(0)]):  # one job: one worker, whatever --workers says; none comes
        workers = list(ex._pool._processes.values())
    # ended once its imports were done (not killed holding a lock file)
    assert ex._pool is None and [p.exitcode for p in workers] == [0]


def test_a_worker_that_cannot_import_torch_fails_its_jobs_with_the_first_error(
    tmp_path, monkeypatch
):
    """An install broken for the workers (here a torch that raises on import, first on their
    path) fails each job with the import's own traceback, not with the different error a
    second import of a half-imported torch would raise; the sweep goes on to the end."""
    broken = tmp_path / "torch"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('this torch is broken')\n")
    monkeypatch.syspath_prepend(tmp_path)  # a spawned worker starts with this sys.path
    ex = make("processes", workers=2)
    grid = [cfg(0, ensemble="off"), cfg(1, ensemble="off"), cfg(2, ensemble="off")]
    over = []
    ex.run(
        [([i], [grid[i].model_dump_json()], None) for i in range(3)],
        lambda batch: None,
        lambda unit, error: over.append((unit, error)),
        threading.Event(),
    )
    assert sorted(unit for unit, _ in over) == [[0], [1], [2]]
    for _, error in over:
        assert "could not import what training needs" in error
        assert "this torch is broken" in error


def test_a_slurm_sweep_into_a_refused_store_creates_no_folder(tmp_path):
    """submitit's executor makes its folder when it is created: it is created only when there
    are jobs, so a refused store (exit 2) leaves nothing behind."""
    pytest.importorskip("submitit")
    from conftest import TINY

    path = write(tmp_path / "tiny.yaml", TINY)
    refused = tmp_path / "refused"
    refused.mkdir()
    folder = tmp_path / "slurm"
    uri = f"sqlite:///{refused}"
    proc = cli(
        "sweep", path, "--executor", "slurm", "--slurm-folder", folder, "--tracking-uri", uri
    )
    assert proc.returncode == 2 and "is a directory" in proc.stderr, proc.stderr
    assert not folder.exists() and not any(refused.iterdir())


def test_a_sweep_into_a_refused_store_leaves_no_worker_behind_and_writes_nothing(tmp_path):
    """The early workers of ``rnnlab sweep`` end with it when no job comes (``started``
    closes them: a refused store here, exit 2; a sweep with nothing to train takes the same
    path), and nothing is written."""
    from conftest import TINY

    path = write(tmp_path / "tiny.yaml", TINY)
    refused = tmp_path / "refused"  # a directory where the store's file should be
    refused.mkdir()
    before = sorted(tmp_path.rglob("*"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    cmd = [sys.executable, "-m", "rnnlab", "sweep", str(path), "--workers", "2"]
    proc = subprocess.Popen(
        [*cmd, "--tracking-uri", f"sqlite:///{refused}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "is a directory" in err, err
    left = subprocess.run(
        ["ps", "-eo", "sid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [r for r in left if r.split()[0] == str(proc.pid) and "Z" not in r.split()[1]]
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("triton", [False, True])
def test_a_process_that_exits_quickly_freezes_what_it_made_unless_triton_is_loaded(triton):
    """``exit_quickly`` (the command, the local workers) leaves every object out of Python's
    last collection, except where Triton's bindings would report them as leaks."""
    if triton:
        pytest.importorskip("triton")
    code = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count()))  # runs last\n"
        "import rnnlab, rnnlab.config\n"
        f"{'import triton' if triton else ''}\n"
        "rnnlab.exit_quickly()\n"
        "print('before', gc.get_freeze_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    before, frozen = (int(line.split()[1]) for line in out.stdout.splitlines())
    assert before == 0 and (frozen == 0 if triton else frozen > 10_000), out.stdout
    assert "leaked" not in out.stderr
