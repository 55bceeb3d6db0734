"""Scale out: the same YAML sweep as Ray tasks, tracked in a real MLflow server (all on loopback)."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import cli, write
from mlflow.tracking import MlflowClient

from rnnlab.config import load_experiment

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

BIN = Path(sys.executable).parent
SWEEP = """\
name: raysweep
task: {seq_len: 50}
model: {hidden_size: 32}
train: {steps: 400, batch_size: 16, eval_size: 16}
probe: {every: 100}
resources: {cpus: 1, gpus: 0}
sweep:
  model.activation: [tanh, relu]
  seed: [0, 1, 2]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head (ray start --block) and an MLflow server, each a process on a free loopback port."""
    tmp = tmp_path_factory.mktemp("cluster")
    # Ray's socket paths must fit AF_UNIX's 107 bytes: a short folder of its own
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    logs = contextlib.ExitStack()
    # Loopback only: Ray rewrites 127.0.0.1 to the interface address unless the "cluster on a
    # laptop" switch is off; token auth (on by default since Ray 2.5x) is off for this test head.
    env = os.environ | {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    ray_port, mlflow_port = free_port(), free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(ray_port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            ray_tmp,
        ],
        stdout=logs.enter_context(open(tmp / "head.log", "w")),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp / 'server.db'}",
            "--artifacts-destination",
            str(tmp / "art"),
            "--serve-artifacts",
        ],
        stdout=logs.enter_context(open(tmp / "server.log", "w")),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{mlflow_port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                assert time.time() < deadline and server.poll() is None, (
                    tmp / "server.log"
                ).read_text()
                time.sleep(0.5)
        while "Ray runtime started" not in (tmp / "head.log").read_text():
            assert time.time() < deadline and head.poll() is None, (tmp / "head.log").read_text()
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{ray_port}", "uri": uri, "tmp": tmp}
    finally:
        stop(server, 15)
        stop(head, 5)  # a SIGTERM'd head drains for up to 30 s; nothing here needs that
        logs.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def runs_of(uri, name):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return client, [r for r in runs if "rnnlab.run_key" in r.data.tags]


def finished_keys(runs):
    keys = [
        r.data.tags["rnnlab.run_key"] for r in runs if r.data.tags["rnnlab.status"] == "finished"
    ]
    assert len(keys) == len(set(keys))
    return set(keys)


def test_sweep_through_ray_into_the_server_then_driver_killed_and_resumed(cluster, tmp_path):
    path = write(tmp_path / "ray.yaml", SWEEP)
    keys = {r.run_key for r in load_experiment(path)[1]}
    args = [
        "sweep",
        str(path),
        "--executor",
        "ray",
        "--ray-address",
        cluster["address"],
        "--tracking-uri",
        cluster["uri"],
    ]
    driver = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *args],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 180
        while len(finished_keys(runs_of(cluster["uri"], "raysweep")[1])) < 1:
            assert driver.poll() is None and time.time() < deadline, driver.communicate()
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver dies mid-sweep
        driver.wait()
    done_before = finished_keys(runs_of(cluster["uri"], "raysweep")[1])
    assert 1 <= len(done_before) < len(keys)

    proc = cli(*args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(done_before)} already done" in proc.stdout
    client, runs = runs_of(cluster["uri"], "raysweep")
    state = [
        (
            r.info.run_name,
            r.info.status,
            r.data.tags.get("rnnlab.status"),
            r.data.tags.get("rnnlab.pid"),
        )
        for r in runs
    ]
    assert finished_keys(runs) == keys, (proc.stdout, proc.stderr[-2000:], state)
    assert not any(r.info.status == "RUNNING" for r in runs)
    for r in runs:
        if r.data.tags["rnnlab.status"] == "finished":
            assert len(client.get_metric_history(r.info.run_id, "train/loss")) == 401
            assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {
                "profiles.parquet",
                "config.yaml",
            }
    # Any executor, after a resume: the same bits as each point trained alone in this process.
    from rnnlab.train import train

    grid = {run.run_key: run for run in load_experiment(path)[1]}
    for r in runs:
        if r.data.tags["rnnlab.status"] == "finished":
            history = client.get_metric_history(r.info.run_id, "train/loss")
            stored = [m.value for m in sorted(history, key=lambda m: m.step)]
            alone = [m.metrics["train/loss"] for m in train(grid[r.data.tags["rnnlab.run_key"]])]
            assert stored == alone, r.info.run_name


def test_a_cluster_needs_a_tracking_server(cluster, tmp_path):
    path = write(tmp_path / "ray.yaml", SWEEP)
    proc = cli(
        "sweep", path, "--executor", "ray", "--ray-address", cluster["address"], cwd=tmp_path
    )
    assert proc.returncode == 2 and "needs a shared tracking server" in proc.stderr
    proc = cli("sweep", path, "--ray-address", cluster["address"], cwd=tmp_path)
    assert proc.returncode == 2 and "needs --executor ray" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ray.yaml"]
