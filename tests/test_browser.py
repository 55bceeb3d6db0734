"""The MLflow UI as a user sees it: headless chromium (Debian's) driven by Playwright."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest
from conftest import cli, write
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
]
TINY = """\
name: tinyui
description: Tiny sweep for the UI test.
task: {seq_len: 8}
model: {hidden_size: 8}
train: {steps: 4, batch_size: 4, eval_size: 8}
probe: {every: 2}
sweep:
  model.activation: [tanh, relu]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A tiny sweep in a fresh store, served by `rnnlab ui` on a free loopback port."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: `make test` installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("ui")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    assert (
        cli("sweep", write(tmp / "t.yaml", TINY), "--tracking-uri", store, cwd=tmp).returncode == 0
    )
    port = free_port()
    log = open(tmp / "ui.log", "w")  # noqa: SIM115 — closed in teardown
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "ui", "--port", str(port), "--tracking-uri", store],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.time() < deadline, (tmp / "ui.log").read_text()
            time.sleep(0.5)
        client = MlflowClient(store)
        exp = client.get_experiment_by_name("tinyui")
        runs = [
            r for r in client.search_runs([exp.experiment_id]) if "rnnlab.run_key" in r.data.tags
        ]
        yield {"base": base, "exp": exp, "runs": runs, "tmp": tmp}
        out = (tmp / "ui.log").read_text()
        assert f"{base}/#/experiments/{exp.experiment_id}/runs" in out  # the direct link is printed
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser(ui):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@contextmanager
def page(browser, ui, name):
    """A page that leaves a screenshot behind when the test fails."""
    pg = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        yield pg
    except BaseException:
        shot = ui["tmp"] / f"failure-{name}.png"
        pg.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
        raise
    finally:
        pg.close()


def test_experiment_page_lists_the_runs_by_name(browser, ui):
    from playwright.sync_api import expect

    with page(browser, ui, "runs") as pg:
        pg.goto(f"{ui['base']}/#/experiments/{ui['exp'].experiment_id}/runs")
        expect(pg.get_by_text("Tiny sweep for the UI test.")).to_be_visible(timeout=30000)
        # child runs are nested under the sweep's parent run: expand it, as a user would
        pg.locator(
            '[data-component-id*="runnamecellrenderer"][data-component-type="button"]'
        ).first.click()
        for r in ui["runs"]:
            expect(pg.get_by_text(r.info.run_name)).to_be_visible(timeout=15000)


def test_run_page_shows_params_and_the_decay_curve_metric(browser, ui):
    from playwright.sync_api import expect

    run = ui["runs"][0]
    with page(browser, ui, "run") as pg:
        pg.goto(f"{ui['base']}/#/experiments/{ui['exp'].experiment_id}/runs/{run.info.run_id}")
        expect(pg.get_by_text(run.info.run_name).first).to_be_visible(timeout=30000)
        expect(pg.get_by_text("model.activation", exact=True).first).to_be_visible()
        expect(pg.get_by_text("grad_h/init", exact=True).first).to_be_visible()


def test_artifact_view_renders_the_profile_png(browser, ui):
    run = ui["runs"][0]
    with page(browser, ui, "artifact") as pg:
        pg.goto(
            f"{ui['base']}/#/experiments/{ui['exp'].experiment_id}/runs/{run.info.run_id}/artifacts/profile.png"
        )
        pg.wait_for_function(
            "() => [...document.images].some(i => i.complete && i.naturalWidth == 440)",
            timeout=30000,
        )
        widths = pg.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
        assert 440 in widths  # profile.png is 4 in × 110 dpi wide
