"""Regenerate the docs' figures and numbers from this commit: ``make docs-figures``.

Runs ``experiments/vanishing.yaml`` and ``experiments/criticality.yaml`` as a new user would
(``rnnlab sweep``, then ``rnnlab report``) into a temporary store, copies the chosen figures
into ``docs/``, and rewrites the block between ``<!-- numbers:begin -->`` and
``<!-- numbers:end -->`` in ``docs/performance.md`` (:data:`NUMBERS_PAGE`): every number the
docs quote about these sweeps lives in that one block, and the README and the other pages
link to it, so none can go stale. With chromium installed it also screenshots the MLflow
UI's decay-curve view (``docs/ui_decay_curves.png``) the way the browser test drives it.

Deterministic apart from the timings: seeded training, always two worker processes (so
the same ensembles and thread counts on every machine), PNGs without a timestamp. About
3 minutes on an idle 2-core CPU.

    python -m rnnlab.docs_figures [--keep DIR] [--no-screenshots]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = {  # report figure → docs/ name
    ("vanishing", "1_profile_vs_distance.png"): "1_profile_vs_distance.png",
    ("vanishing", "2_trainability_map.png"): "2_trainability_map.png",
    ("vanishing", "7_profile_over_training.png"): "7_profile_over_training.png",
    ("criticality", "8_slope_vs_gain_theory.png"): "8_slope_vs_gain_theory.png",
}
BEGIN, END = "<!-- numbers:begin -->", "<!-- numbers:end -->"
NUMBERS_PAGE = DOCS / "performance.md"
"""The one page holding the numbers block (``tests/test_docs.py`` checks it is the only one)."""


def _rnnlab(*args: str, cwd: Path) -> float:
    """Run ``python -m rnnlab ARGS`` from this tree; returns the wall time in seconds."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rnnlab", *args], cwd=cwd, env=env, text=True)
    if proc.returncode != 0:
        sys.exit(f"docs-figures: `rnnlab {' '.join(args)}` failed ({proc.returncode})")
    return time.perf_counter() - t0


def numbers_block(vanishing, criticality, seconds: dict[str, float]) -> str:
    """The numbers block of ``NUMBERS_PAGE``, as markdown, from the report's frames."""
    from rnnlab.report import condition_table, order

    runs = vanishing.runs
    acts = order("model.activation", runs["model.activation"])
    regime = {
        "sigmoid": "vanishing fast: \\|φ′\\| ≤ 1/4",
        "relu": "vanishing: about half the units are off",
        "leaky_relu": "vanishing: about half the units nearly off",
        "tanh": "near the edge of chaos",
        "hardtanh": "near the edge",
        "linear": "exploding: ln 1.1 = +0.095",
    }
    lines = [
        f"`experiments/vanishing.yaml`: {len(runs)} runs "
        f"({', '.join(f'{n} {s}' for s, n in runs.status.value_counts().items())}). "
        "Slope of ln n_t per step back in time at initialisation (median over lengths and "
        "seeds, [min … max]):",
        "",
        "| activation | slope at init (nats/step) | regime |",
        "|---|---|---|",
    ]
    for a in acts:
        s = runs.loc[runs["model.activation"] == a, "slope_init"].astype(float)
        lines.append(
            f"| {a} | {s.median():+.3f} [{s.min():+.3f} … {s.max():+.3f}] | {regime.get(a, '')} |"
        )
    t = condition_table(vanishing)
    Ts = order("task.seq_len", t["task.seq_len"])
    lines += [
        "",
        f"Final eval loss ÷ baseline after {int(runs['train.steps'].iloc[0])} Adam steps "
        "(median over 3 seeds; < 1 learned, 1 = chance, the trainability map's numbers):",
        "",
        "| activation | " + " | ".join(f"T = {T}" for T in Ts) + " |",
        "|---|" + "---|" * len(Ts),
    ]
    for a in acts:
        row = t[t["model.activation"] == a].set_index("task.seq_len")["final_loss_ratio median"]
        lines.append(f"| {a} | " + " | ".join(_g(row.get(T, np.nan)) for T in Ts) + " |")
    c = criticality.runs
    lines += [
        "",
        f"`experiments/criticality.yaml`: {len(c)} runs. Measured when these numbers were "
        f"generated (2 workers, `make docs-figures`; timings vary with the machine): "
        f"`make sweep` {seconds['vanishing']:.0f} s, `make sweep "
        f"EXP=experiments/criticality.yaml` {seconds['criticality']:.0f} s, `make report` of "
        f"both {seconds['report']:.0f} s, on a {os.cpu_count()}-core CPU.",
    ]
    return "\n".join(lines)


def _g(v: float) -> str:
    from rnnlab.report import sci

    return sci(v)


def rewrite_numbers(block: str, page: Path = NUMBERS_PAGE) -> None:
    """Replace the block between ``BEGIN`` and ``END`` in ``page`` (exactly one is expected)."""
    text = page.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    found = len(pattern.findall(text))
    if found != 1:
        sys.exit(
            f"docs-figures: {page.relative_to(ROOT)} has {found} {BEGIN} … {END} blocks, not 1"
        )
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text))


def screenshot_decay_view(store: str, path: Path) -> bool:
    """The MLflow UI's decay-curve view of the vanishing sweep, as `rnnlab ui` links it."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("docs-figures: no chromium/playwright: docs/ui_decay_curves.png left as it is")
        return False
    import signal
    import socket
    import urllib.request

    from rnnlab.measure import names
    from rnnlab.track import MlflowTracker
    from rnnlab.ui import decay_url

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "ui", "--port", str(port), "--tracking-uri", store],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        exp = MlflowTracker(store).experiments()["vanishing"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.goto(decay_url(base, exp))
            page.get_by_text(names.PROFILE_INIT_LOG10).first.wait_for(timeout=60000)
            close = page.get_by_role("button", name="Close")  # the assistant's side panel
            if close.count():
                close.first.click()
            page.wait_for_timeout(4000)  # the charts draw after the runs load
            page.screenshot(path=str(path))
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: temp)")
    ap.add_argument("--no-screenshots", action="store_true", help="skip the MLflow UI screenshot")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="rnnlab-docs-"))
    work.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{work / 'mlflow.db'}"
    seconds = {}
    for name in ("vanishing", "criticality"):
        exp = ROOT / "experiments" / f"{name}.yaml"
        seconds[name] = _rnnlab(
            "sweep", str(exp), "--workers", "2", "--tracking-uri", store, cwd=work
        )
    files = [str(ROOT / "experiments" / f"{n}.yaml") for n in ("vanishing", "criticality")]
    seconds["report"] = _rnnlab(
        "report", *files, "--tracking-uri", store, "--out", str(work / "figures"), cwd=work
    )
    for (exp, fig), name in FIGURES.items():
        shutil.copyfile(work / "figures" / exp / fig, DOCS / name)
    from rnnlab import report
    from rnnlab.cli import _file_grid

    frames = {}
    for n, file in zip(("vanishing", "criticality"), files, strict=True):
        name, grid, source, _ = _file_grid(Path(file), [])
        frames[n] = report.load_results(name, store, grid=grid, source=source)
    block = numbers_block(frames["vanishing"], frames["criticality"], seconds)
    rewrite_numbers(block)
    if not args.no_screenshots:
        screenshot_decay_view(store, DOCS / "ui_decay_curves.png")
    print(block)
    print(
        f"\ndocs-figures: {', '.join(sorted(FIGURES.values()))} → docs/; numbers block → "
        f"{NUMBERS_PAGE.relative_to(ROOT)}"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    pd.set_option("display.width", 120)
    sys.exit(main())
