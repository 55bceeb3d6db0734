"""The MLflow UI as a user sees it: headless chromium (Debian's) driven by Playwright.

Screenshots of what a user sees (the decay-curve view, the report on the sweep run) are
left in the test's temporary folder, and in $RNNLAB_SCREENSHOTS when that is set.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, write
from conftest import cli as _cli
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ENV = {"PYTHONPATH": str(ROOT)}  # this tree's rnnlab, whichever the venv has installed


def cli(*args, cwd=None):
    return _cli(*args, cwd=cwd, env=ENV)


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
        cli(
            "sweep", write(tmp / "t.yaml", TINY), "--workers", "1", "--tracking-uri", store, cwd=tmp
        ).returncode
        == 0
    )
    port = free_port()
    log = open(tmp / "ui.log", "w")  # noqa: SIM115 — closed in teardown
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "ui", "--port", str(port), "--tracking-uri", store],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=tmp,
        env=os.environ | ENV,
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
        found = client.search_runs([exp.experiment_id])
        runs = [r for r in found if "rnnlab.run_key" in r.data.tags]
        parent = next(r for r in found if r.data.tags.get("rnnlab.role") == "sweep")
        # the report on the sweep run, its report.md's images served by this UI
        args = ("report", "--tracking-uri", store, "--out", tmp / "figs", "--ui-url", base)
        proc = cli(*args, cwd=tmp)
        assert proc.returncode == 0, proc.stderr
        yield {"base": base, "exp": exp, "runs": runs, "parent": parent, "tmp": tmp}
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


def shoot(pg, ui, name: str) -> None:
    """Keep a screenshot of what the user sees (tmp folder, and $RNNLAB_SCREENSHOTS)."""
    close = pg.get_by_role("button", name="Close")  # the assistant's side panel, as a user would
    if close.count():
        close.first.click()
        pg.wait_for_timeout(1000)
    for folder in (ui["tmp"], os.environ.get("RNNLAB_SCREENSHOTS")):
        if folder:
            pg.screenshot(path=str(Path(folder) / f"{name}.png"))


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


def test_decay_curves_open_in_one_click(browser, ui):
    """The link `rnnlab ui` prints opens the chart view: grid points only (no parent row to
    expand), every run charted, log10 n_{T−k}/n_T on a linear axis, coloured by activation."""
    from playwright.sync_api import expect

    log = (ui["tmp"] / "ui.log").read_text()
    link = next(
        line.split("decay curves:")[1].strip()
        for line in log.splitlines()
        if "decay curves:" in line
    )
    assert link.startswith(ui["base"]) and "compareRunsMode=CHART" in link
    with page(browser, ui, "decay") as pg:
        pg.goto(link)
        expect(pg.get_by_text("Gradient decay curves")).to_be_visible(timeout=30000)
        expect(pg.get_by_text("2 matching runs")).to_be_visible(timeout=15000)
        for metric in ("grad_h/init_log10", "grad_h/final_log10", "grad_h/init", "grad_h/final"):
            expect(pg.get_by_text(metric, exact=True).first).to_be_attached()
        pg.wait_for_function(  # four charts, a curve per run in each
            "() => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 8",
            timeout=30000,
        )
        strokes = pg.locator(".js-plotly-plot .scatterlayer .trace path.js-line").evaluate_all(
            "els => els.map(e => e.style.stroke)"
        )
        assert {"rgb(1, 115, 178)", "rgb(222, 143, 5)"} <= set(
            strokes
        )  # tanh, relu: the figures' colours
        shoot(pg, ui, "ui_decay_curves")


def test_report_renders_on_the_sweep_run(browser, ui):
    """report.html shows inline with its figures and tables; report.md's images display."""
    from playwright.sync_api import expect

    parent = ui["parent"].info.run_id
    url = f"{ui['base']}/#/experiments/{ui['exp'].experiment_id}/runs/{parent}/artifacts/report/report.html"
    with page(browser, ui, "report") as pg:
        pg.goto(url)
        frame = pg.frame_locator("iframe").first
        expect(frame.get_by_text("Per condition (median over seeds, [min … max])")).to_be_visible(
            timeout=30000
        )
        expect(frame.locator("table").first).to_be_visible()
        pg.wait_for_timeout(1000)
        widths = frame.locator("img").evaluate_all("els => els.map(e => e.naturalWidth)")
        drawn = list((ui["tmp"] / "figs").rglob("*.png"))  # what the report drew
        assert len(drawn) >= 7 and len(widths) == len(drawn)  # every figure embedded…
        assert min(widths) > 400  # …and decoded
        shoot(pg, ui, "ui_report_html")
        pg.get_by_text("report.md", exact=True).click()  # in the artifact tree, as a user does
        pg.wait_for_function(
            "() => [...document.images].filter(i => i.src.includes('get-artifact')"
            f" && i.complete && i.naturalWidth > 400).length == {len(drawn)}",
            timeout=30000,
        )
        shoot(pg, ui, "ui_report_md")
