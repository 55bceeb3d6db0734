"""Report: a tiny sweep (with a diverged point) → every figure, and the frames behind them;
the grid it draws, what it lists, and figures that mark what they cannot show."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, write
from conftest import cli as _cli
from PIL import Image

from rnnlab import report

pytestmark = pytest.mark.slow


def cli(*args, cwd=None):
    """`python -m rnnlab` from this tree, whichever rnnlab the venv has installed."""
    return _cli(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT)})


TINY = """\
name: tinyreport
task: {name: adding, seq_len: 8}
model: {hidden_size: 8}
train: {steps: 4, batch_size: 4, eval_size: 8}
probe: {every: 2}
sweep:
  - {task.seq_len: [6, 9], model.activation: [tanh, relu, sigmoid], seed: [0, 1]}
  - {task.seq_len: [9], model.activation: [linear], model.init: [gaussian], model.gain: [40.0], seed: [0, 1]}
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    path = write(tmp / "tiny.yaml", TINY)
    proc = cli("sweep", path, "--tracking-uri", store, "--workers", "1", cwd=tmp)  # data only
    assert proc.returncode == 0, proc.stderr
    assert "12 finished, 2 diverged" in proc.stdout  # linear at gain 40 overflows: drawn, marked
    return tmp, store


def test_every_figure_is_a_valid_image_and_logged_to_the_parent_run(swept):
    tmp, store = swept
    proc = cli("report", "--tracking-uri", store, "--out", tmp / "figs", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    out = tmp / "figs" / "tinyreport"
    pngs = sorted(out.glob("*.png"))
    assert [p.stem for p in pngs] == [
        "12_q_hat_vs_q_star",  # sorted by name: "12_" before "1_"
        "13_jacobian_spectrum",
        "14_units_over_training",
        "15_input_gradient_profile",
        "1_profile_vs_distance",
        "2_trainability_map",
        "3_learning_curves",
        "4_grad_norm_over_training",
        "5_spectrum_over_training",
        "6_slope_vs_swept",
        "7_profile_over_training",
        "8_slope_vs_gain_theory",  # the sweep varies model.gain, so the theory figure is drawn
    ]
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.width > 400 and im.height > 200
            assert im.info.get("dpi", (0, 0))[0] >= 150
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-"
    text = (out / "report.md").read_text()
    assert text.count("![") == 12 and "](1_profile_vs_distance.png)" in text  # local: relative
    assert re.search(r"\| 9 \| linear \| gaussian \| 40 \| 0 \| diverged \|", text)
    # report.html: self-contained, every figure embedded, the tables in it
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 12 and "<table>" in page
    assert "Per condition" in page and "adding-T9-linear-gaussian40-s0" in page
    from mlflow.tracking import MlflowClient

    f = report.load(store, "tinyreport")
    client = MlflowClient(store)
    logged = {a.path for a in client.list_artifacts(f.parent_run_id, "report")}
    assert {"report/2_trainability_map.png", "report/report.md", "report/report.html"} <= logged
    # the parent run's report.md points its images at the run's own artifacts: they display
    md = client.download_artifacts(f.parent_run_id, "report/report.md", str(tmp))
    url = f"http://127.0.0.1:5000/get-artifact?path=report%2F1_profile_vs_distance.png&run_uuid={f.parent_run_id}"
    with open(md) as fh:
        assert f"]({url})" in fh.read()


def test_frames_have_the_expected_rows(swept):
    _, store = swept
    f = report.load(store, "tinyreport")
    assert len(f.runs) == 14 and set(f.runs.status) == {"finished", "diverged"}
    assert f.hue == "model.activation" and f.col == "task.seq_len"
    assert {"task.seq_len", "model.activation", "seed", "model.init", "model.gain"} <= set(f.swept)
    assert f.runs["task.seq_len"].dtype.kind == "i"  # params come back typed
    # 1: one line per activation (and phase) in each length's panel; seeds form the band
    prof = report.profile_frame(f)
    lines = prof.groupby(["task.seq_len", "model.activation", "phase"]).run_id.nunique()
    assert set(lines.loc[6].index.get_level_values(0)) == {"tanh", "relu", "sigmoid"}
    assert lines.loc[(6, "tanh", "init")] == 2  # two seeds
    # 2: one cell per (activation, length) grid point; the diverged one is counted
    cells = report.trainability_frame(f)
    assert (
        len(cells) == 7
        and cells.set_index(["model.activation", "task.seq_len"]).loc[("linear", 9)].diverged == 2
    )
    # 6: one point per seed and phase
    assert len(report.slope_frame(f)) == 2 * 14
    # 7: the longest length, first seed, every probed step × distance
    heat = report.profile_heatmap_frame(f)
    assert set(heat["task.seq_len"]) == {9} and set(heat.seed) == {0}
    assert len(heat[heat["model.activation"] == "tanh"]) == 3 * 9  # steps 0, 2, 4 × k = 0..8
    # the Jacobian spectrum's table: each drawn run at its first and last probe, k = 1 … T
    jac = f.tables["jacobian"]
    assert set(jac.columns) == {"run_id", "step", "k", "log_sv_max", "log_sv_min"}
    ends = jac.merge(f.runs[["run_id", "task.seq_len"]], on="run_id").groupby("run_id")
    assert (ends.k.max() == ends["task.seq_len"].first()).all()
    assert set(jac[jac.run_id == f.runs.run_id.iloc[0]].step) <= {0, 2, 4}


def test_one_seed_one_length_still_draws(tmp_path, store):
    path = write(
        tmp_path / "one.yaml",
        "name: one\ntask: {seq_len: 5}\nmodel: {hidden_size: 4}\n"
        "train: {steps: 2, batch_size: 2, eval_size: 2}\n",
    )
    assert cli("sweep", path, "--tracking-uri", store, cwd=tmp_path).returncode == 0
    proc = cli("report", "--tracking-uri", store, "--out", tmp_path / "figs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # no gain sweep: no figure 8; 12-15 (units, Jacobian, input gradients) draw for one run too
    assert len(list((tmp_path / "figs" / "one").glob("*.png"))) == 11


def test_unknown_or_empty_experiment_is_bad_input(swept, tmp_path):
    _, store = swept
    proc = cli(
        "report",
        "--experiment",
        "nope",
        "--tracking-uri",
        store,
        "--out",
        tmp_path / "f",
        cwd=tmp_path,
    )
    assert (
        proc.returncode == 2
        and "no experiment 'nope'" in proc.stderr
        and "tinyreport" in proc.stderr
    )
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    proc = cli("report", "--tracking-uri", missing, "--out", tmp_path / "f", cwd=tmp_path)
    assert proc.returncode == 2 and "no store there yet" in proc.stderr
    assert not (tmp_path / "missing.db").exists()  # a report never creates a store
    assert not (tmp_path / "f").exists()


def test_report_draws_the_current_grid_and_lists_the_other_runs(swept):
    """An ad-hoc run in the same experiment is listed with what differs, never drawn; --all
    draws it, --where selects by param."""
    tmp, store = swept
    path = tmp / "tiny.yaml"
    proc = cli("run", path, "train.steps=2", "task.seq_len=7", "--tracking-uri", store, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    grid = report.load(store, "tinyreport")  # default: the latest sweep's grid
    assert len(grid.runs) == 14 and set(grid.runs["train.steps"]) == {4}
    assert "latest sweep" in grid.selection
    assert list(grid.others.name) == ["adding-T7-tanh-orthogonal1-s0"]
    assert grid.others.differs.iloc[0] == "task.seq_len=7, train.steps=2"
    every = report.load(store, "tinyreport", all_runs=True)
    assert len(every.runs) == 15 and every.others.empty and "train.steps" in every.swept
    some = report.load(
        store, "tinyreport", where=["model.activation=relu,sigmoid", "task.seq_len=9"]
    )
    assert sorted(some.runs.name) == [
        "adding-T9-relu-orthogonal1-s0",
        "adding-T9-relu-orthogonal1-s1",
        "adding-T9-sigmoid-orthogonal1-s0",
        "adding-T9-sigmoid-orthogonal1-s1",
    ]
    # the file's current grid, through the CLI: drawn, the other run listed in report.md
    proc = cli("report", path, "--tracking-uri", store, "--out", tmp / "grid", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    assert f"the current grid of {path}: 14 grid points (14 runs)" in proc.stdout
    assert "1 other run(s)" in proc.stdout
    text = (tmp / "grid" / "tinyreport" / "report.md").read_text()
    assert "**Not drawn:** 1 other runs" in text and "The drawn runs have train.steps=4" in text
    assert "| task.seq_len=7, train.steps=2 | 1 | 1 finished | rnnlab run |" in text
    # overrides change the grid: no run has train.steps=3, so nothing is drawn and all listed
    # (an override may follow the options, as for sweep)
    proc = cli(
        "report", path, "--tracking-uri", store, "--out", tmp / "o", "train.steps=3", cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "with overrides train.steps=3: 14 grid points, 14 without a run yet (0 runs)" in proc.stdout
    )
    assert "nothing to draw" in proc.stdout and "parent run" not in proc.stdout  # not attached
    proc = cli("report", "--where", "nokey", "--tracking-uri", store, "--out", tmp / "w", cwd=tmp)
    assert proc.returncode == 2 and "expected key=value" in proc.stderr


def _frames(runs: list[dict], profiles: pd.DataFrame | None = None) -> report.Frames:
    runs = pd.DataFrame(runs)
    swept = [c for c in runs.columns if "." in c or c == "seed"]
    swept = [c for c in swept if runs[c].nunique() > 1]
    empty = pd.DataFrame(columns=["run_id", "key", "step", "value"])
    p = (
        profiles
        if profiles is not None
        else pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t"])
    )
    return report.Frames("synthetic", runs, empty, p, swept)


def test_condition_table_sorts_T_numerically_with_medians_and_spread():
    runs = [
        {
            "run_id": f"{T}{a}{s}",
            "name": f"T{T}-{a}-s{s}",
            "status": "finished",
            "task.seq_len": T,
            "model.activation": a,
            "seed": s,
            "final_loss_ratio": ratio * (1 + s),
            "slope_init": -0.1 * s,
            "slope_final": 0.0,
        }
        for T in (200, 10, 100, 25)
        for a, ratio in (("tanh", 0.5), ("sigmoid", 1.0))
        for s in (0, 1, 2)
    ]
    t = report.condition_table(_frames(runs))
    assert list(t["task.seq_len"]) == [10, 10, 25, 25, 100, 100, 200, 200]  # not "10, 100, 200, 25"
    assert list(t["model.activation"][:2]) == ["sigmoid", "tanh"]  # one activation order
    row = t.iloc[1]
    assert row["final_loss_ratio median"] == 1.0 and row["final_loss_ratio min"] == 0.5
    assert row["final_loss_ratio max"] == 1.5 and row.runs == 3


def test_trainability_cells_beyond_the_colour_range_are_marked():
    runs = [
        {
            "run_id": f"{a}{s}",
            "name": f"{a}{s}",
            "status": st,
            "task.seq_len": 10,
            "model.activation": a,
            "seed": s,
            "final_loss_ratio": r,
        }
        for a, r, st in (
            ("relu", 0.05, "finished"),
            ("tanh", 0.5, "finished"),
            ("linear", 470.0, "finished"),
            ("sigmoid", 1.0, "diverged"),
        )
        for s in (0, 1)
    ]
    cells = report.trainability_frame(_frames(runs)).set_index("model.activation")
    assert report.RATIO_RANGE == (0.1, 10.0)
    assert cells.clipped.to_dict() == {"linear": "≥ 10", "relu": "≤ 0.1", "sigmoid": "", "tanh": ""}
    assert cells.diverged.to_dict() == {"linear": 0, "relu": 0, "sigmoid": 2, "tanh": 0}


def test_profile_marks_where_a_profile_leaves_the_range_or_underflows():
    k = np.arange(60)
    rows, runs = [], []
    for act, slope in (("sigmoid", -1.0), ("tanh", 0.0)):  # decades per step
        n = 10.0 ** (slope * k)
        n[n < 1e-45] = 0.0  # float32 underflow
        rid = act
        runs.append(
            {
                "run_id": rid,
                "name": rid,
                "status": "finished",
                "task.seq_len": 60,
                "model.activation": act,
                "seed": 0,
            }
        )
        for step in (0, 10):
            rows.append(pd.DataFrame({"run_id": rid, "step": step, "t": 60 - k, "k": k, "n_t": n}))
    f = _frames(runs, pd.concat(rows, ignore_index=True))
    marks = report.profile_marks(f)
    sig = marks[(marks.hue == "sigmoid") & (marks.phase == "init")].set_index("kind")
    assert sig.loc["below range"].k == report.DECADES + 1  # 10^-9 is the first point below 10^-8
    assert sig.loc["underflow"].k == 45 and sig.loc["underflow"].y == 10.0**-report.DECADES
    assert marks[marks.hue == "tanh"].empty  # flat: nothing to mark, nothing in the legend


def test_the_ui_view_and_its_metrics_are_logged(swept):
    """What the one-click decay view reads: log10 n_{T−k}/n_T per run, run colours, the view."""
    import json

    from mlflow.tracking import MlflowClient

    from rnnlab.model.activations import ACTIVATION_COLORS
    from rnnlab.ui import TAG

    tmp, store = swept
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("tinyreport")
    view = json.loads(exp.tags[TAG])
    assert [c["metricKey"] for c in view["compareRunCharts"]][:2] == [
        "grad_h/init_log10",
        "grad_h/final_log10",
    ]
    assert view["runsHiddenMode"] == "SHOW_ALL"
    f = report.load(store, "tinyreport")
    run = f.runs[f.runs.name == "adding-T9-tanh-orthogonal1-s0"].iloc[0]
    assert client.get_run(run.run_id).data.tags["mlflow.runColor"] == ACTIVATION_COLORS["tanh"]
    log10 = sorted(client.get_metric_history(run.run_id, "grad_h/init_log10"), key=lambda m: m.step)
    first = f.profiles[(f.profiles.run_id == run.run_id) & (f.profiles.step == 0)].sort_values("k")
    expected = np.log10(first.n_t.to_numpy() / first.n_t.iloc[0])
    assert [m.step for m in log10] == list(range(9)) and log10[0].value == 0
    assert [m.value for m in log10] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    # the grid the sweep logged: what `rnnlab report` draws by default
    path = client.download_artifacts(f.parent_run_id, "grid.json", str(tmp))
    grid = json.loads(Path(path).read_text())
    assert (
        len(grid) == 14
        and grid[client.get_run(run.run_id).data.tags["rnnlab.run_key"]] == run["name"]
    )


NEW_FIGURE = '''\
"""A figure from outside rnnlab: runs per status."""

import matplotlib.pyplot as plt

from rnnlab.report.figures import figure
from rnnlab.report.plotting import save


@figure(9, "Runs per status (a figure registered by a module of its own).")
def runs_per_status(f, out):
    fig, ax = plt.subplots()
    f.runs.status.value_counts().plot.bar(ax=ax)
    return save(fig, out, "9_runs_per_status")
'''


def test_a_new_figure_is_one_new_module(swept, tmp_path, monkeypatch):
    """A module that registers a function with @figure is drawn in the report, in its place;
    two figures cannot share a number."""
    import importlib

    from rnnlab.report import figures

    assert [fig.number for fig in figures.registered()] == [*range(1, 9), *range(10, 17)]
    monkeypatch.setattr(figures, "_REGISTRY", dict(figures._REGISTRY))  # undone after the test
    package = tmp_path / "more_figures"
    package.mkdir()
    write(package / "__init__.py", "")
    write(package / "runs_per_status.py", NEW_FIGURE)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("more_figures.runs_per_status")
    with pytest.raises(ValueError, match="figure 9 is registered twice"):
        figures.figure(9, "another")(lambda f, out: None)

    _, store = swept
    out = tmp_path / "out"
    calls = []
    report.report(report.load(store, "tinyreport"), out, progress=lambda *c: calls.append(c))
    assert [(i, n) for i, n, _ in calls] == [(i, 16) for i in range(17)]  # each, then the pages
    assert calls[-1][2] == "report.md and report.html"
    assert calls[8][2] == "runs per status" and calls[0][2] == "gradient profile vs distance"
    text = (out / "report.md").read_text()
    assert text.count("![") == 13  # 1-8, 9 and 12-15 (10 and 11 need a drive or gain grid)
    assert text.index("](8_slope_vs_gain_theory.png)") < text.index("](9_runs_per_status.png)")
    assert text.index("](9_runs_per_status.png)") < text.index("](12_q_hat_vs_q_star.png)")
    assert "*Runs per status (a figure registered by a module of its own).*" in text
    assert (out / "9_runs_per_status.pdf").exists()


def _history(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def test_chaos_vs_drive_draws_a_drive_sweep_only(tmp_path):
    from rnnlab.report.figures.chaos_vs_drive import chaos_vs_drive, drive_frame, zero_crossing

    sigmas = [0.1, 0.5, 1.0, 1.3, 2.0]
    runs = [
        {
            "run_id": f"r{s}",
            "name": f"r{s}",
            "status": "finished",
            "task.input_std": s,
            "model.activation": "tanh",
            "model.gain": 2.0,
            "seed": 0,
        }
        for s in sigmas
    ]
    f = _frames(runs)
    assert chaos_vs_drive(f, tmp_path) is None  # no λ_max or q_in in the history
    f.history = _history(
        [
            (f"r{s}", k, 0, v)
            for s in sigmas
            for k, v in (
                ("theory/q_in", s * s),
                ("dyn/lyapunov_max", 0.15 - 0.12 * s),
                ("theory/slope", 0.155 - 0.12 * s),
            )
        ]
    )
    d = drive_frame(f)
    assert list(d.sigma_u) == pytest.approx(sigmas)
    assert zero_crossing(d.sigma_u.to_numpy(), d.lyapunov.to_numpy()) == pytest.approx(1.25)
    paths = chaos_vs_drive(f, tmp_path)
    assert paths[0].name == "10_chaos_vs_drive.png" and Image.open(paths[0]).size[0] > 300
    f.history = f.history.assign(value=f.history.value.where(f.history.key != "theory/q_in", 1.0))
    assert chaos_vs_drive(f, tmp_path) is None  # one drive: nothing to draw against


def test_depth_scale_map_draws_gain_by_length_with_the_6_xi_line(tmp_path):
    from rnnlab.report.figures.depth_scale_map import depth_scale_frame, depth_scale_map

    gains, lengths, xi = [0.5, 1.0, 2.0], [5, 20, 80], {0.5: 1.4, 1.0: 60.0, 2.0: 3.0}
    runs = [
        {
            "run_id": f"{g}-{T}",
            "name": f"{g}-{T}",
            "status": "finished",
            "model.gain": g,
            "task.seq_len": T,
            "seed": 0,
            "final_loss_ratio": 1.0 if 6 * xi[g] < T else 0.1,
        }
        for g in gains
        for T in lengths
    ]
    f = _frames(runs)
    assert depth_scale_map(f, tmp_path) is None  # no theory/depth_scale in the history
    f.history = _history(
        [
            (f"{g}-{T}", "theory/depth_scale", 0, -xi[g] if g > 1 else xi[g])
            for g in gains
            for T in lengths
        ]
    )
    d = depth_scale_frame(f)
    assert d.xi.min() == 1.4 and d.trained.sum() == 1 + 3 + 1  # ξ is |depth_scale|
    paths = depth_scale_map(f, tmp_path)
    assert paths[0].name == "11_depth_scale_map.png" and Image.open(paths[0]).size[0] > 300


def test_unit_and_jacobian_figures_draw_from_frames_and_skip_without_data(tmp_path):
    from rnnlab.report import plotting as plot
    from rnnlab.report.figures.input_gradient_profile import (
        input_gradient_profile,
        input_profile_frame,
    )
    from rnnlab.report.figures.jacobian_spectrum import jacobian_frame, jacobian_spectrum
    from rnnlab.report.figures.q_hat_vs_q_star import q_hat_vs_q_star
    from rnnlab.report.figures.units_saturation import units_over_training

    runs = [
        {"run_id": f"{a}{s}", "name": f"{a}{s}", "status": "finished",
         "model.activation": a, "task.seq_len": 20, "seed": s}
        for a in ("tanh", "relu") for s in (0, 1)
    ]  # fmt: skip
    f = _frames(runs)
    drawers = (q_hat_vs_q_star, jacobian_spectrum, units_over_training, input_gradient_profile)
    for draw in drawers:
        assert draw(f, tmp_path) is None  # nothing measured: left out of the report
    f.history = _history(
        [
            (r["run_id"], key, step, value)
            for r in runs
            for step in (0, 10, 20)
            for key, value in (
                ("units/q_hat", 0.1 + 0.01 * step),
                ("units/saturated", 0.5),
                ("units/dead", 0.01 * step),
            )
        ]
        + [(r["run_id"], "theory/q_star", 0, 0.12) for r in runs]
    )
    ks = np.array([1, 2, 5, 10, 20])
    f.tables["jacobian"] = pd.concat(
        pd.DataFrame(
            {
                "run_id": r["run_id"],
                "step": step,
                "k": ks,
                "log_sv_max": 0.01 * ks,
                "log_sv_min": np.where(ks < 20, -0.5 * ks, np.nan),
            }
        )
        for r in runs
        for step in (0, 10, 20)
    )
    f.tables["grad_x"] = pd.concat(
        pd.DataFrame(
            {
                "run_id": r["run_id"],
                "step": step,
                "t": np.arange(1, 21),
                "k": np.arange(19, -1, -1),
                "n_t": np.where(np.arange(20) < 2, 0.0, 0.9 ** np.arange(19, -1, -1)),
            }
        )
        for r in runs
        for step in (0, 10, 20)
    )
    nx, left_out = plot.drawable_ratios(input_profile_frame(f))
    assert set(nx.step) == {0, 20} and len(nx) == 4 * 2 * 18  # the two zeros left out…
    assert list(left_out) == [  # …and counted on the figure
        f"{4 * 2 * 2} of {4 * 2 * 20} values 0 (underflow): not drawn, the line ends there"
    ]
    assert nx[nx.k == 0].ratio.eq(1.0).all()
    j = jacobian_frame(f)
    assert set(j.phase) == {"init", "end of training"} and set(j.step) == {0, 20}
    assert len(j) == 4 * 2 * (5 + 4)  # runs × phases × (σ_max at 5 k, σ_min resolved at 4)
    for draw, name in (
        (q_hat_vs_q_star, "12_q_hat_vs_q_star"),
        (jacobian_spectrum, "13_jacobian_spectrum"),
        (units_over_training, "14_units_over_training"),
        (input_gradient_profile, "15_input_gradient_profile"),
    ):
        paths = draw(f, tmp_path)
        assert paths[0].name == f"{name}.png" and Image.open(paths[0]).size[0] > 300


def test_a_condition_with_one_point_is_marked_in_the_learning_curves():
    """Every run of a condition that diverged at its first probe leaves one point per step:
    a line of one point draws nothing, so it is marked, in its line's colour."""
    from matplotlib.colors import to_rgba

    from rnnlab.report import plotting as plot
    from rnnlab.report.figures.learning_curves import mark_single_points

    runs = [
        {"run_id": f"{a}{T}", "name": f"{a}{T}", "status": "finished",
         "model.activation": a, "task.seq_len": T, "seed": 0}
        for a in ("tanh", "linear") for T in (10, 20)
    ]  # fmt: skip
    f = _frames(runs)
    f.history = _history(
        [(r["run_id"], "eval/loss_ratio", s, 0.9) for r in runs[:2] for s in (0, 10, 20)]
        + [(r["run_id"], "eval/loss_ratio", 0, 3.0) for r in runs[2:]]
    )
    h = plot.with_params(f.history, f)
    g = plot.over_training(h, f, "task.seq_len", "model.activation")
    mark_single_points(g, h, "task.seq_len", "model.activation")
    marks = [
        line
        for line in g.axes_dict["linear"].lines
        if line.get_marker() == "o" and list(line.get_xdata()) == [0]
    ]
    assert [list(m.get_ydata()) for m in marks] == [[3.0], [3.0]]
    texts = [t.get_text() for t in g._legend.texts]
    legend = dict(zip(texts, g._legend.legend_handles, strict=True))
    assert to_rgba(marks[1].get_color()) == to_rgba(legend["20"].get_color())
    assert not [x for x in g.axes_dict["tanh"].lines if x.get_marker() == "o"]


def test_report_progress_is_one_line_on_a_terminal_and_nothing_elsewhere():
    """rnnlab report/reproduce: a line rewritten per figure on a terminal, cleared when the
    report is written or fails; in a log or pipe nothing at all."""
    import io

    from rnnlab.cli import _drawing

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Terminal(), io.StringIO()
    for stream in (tty, pipe):
        with pytest.raises(RuntimeError), _drawing("vanishing", stream) as progress:
            progress(0, 15, "gradient profile vs distance")
            progress(1, 15, "trainability map")
            raise RuntimeError("a figure failed")
    clear = "\r\033[K"
    assert tty.getvalue() == (
        f"{clear}vanishing: figure 1/15, gradient profile vs distance"
        f"{clear}vanishing: figure 2/15, trainability map{clear}"
    )
    assert pipe.getvalue() == ""


def test_a_figure_drawn_again_from_the_same_runs_is_the_same_picture(swept, tmp_path):
    """Figure 6 jitters its points (seaborn draws from numpy's global generator): drawn twice,
    with the generator moved on in between, the same bytes; the caller's generator state is
    left as it was."""
    from rnnlab.report.figures.slope import slope_vs_swept

    f = report.load(swept[1], "tinyreport")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    np.random.seed(1)
    first = slope_vs_swept(f, tmp_path / "a")
    after = np.random.random()
    second = slope_vs_swept(f, tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    np.random.seed(1)
    assert np.random.random() == after  # the figure drew nothing from the caller's stream


def test_save_keeps_its_layout_whatever_the_users_matplotlibrc(tmp_path):
    """plot.save lays a figure out once and freezes it: a user's rc asking for another layout
    engine (figure.autolayout, constrained_layout.use) must neither redo it nor, with a
    colorbar, make it fail. The same bytes as under matplotlib's defaults."""
    import matplotlib
    import matplotlib.pyplot as plt

    from rnnlab.report import plotting as plot

    def draw(out):
        fig, ax = plt.subplots(layout="constrained", figsize=(3, 2))
        fig.colorbar(ax.imshow(np.arange(12.0).reshape(3, 4)), ax=ax, label="value")
        ax.set_title("a title")
        out.mkdir()
        return plot.save(fig, out, "f")

    default = draw(tmp_path / "default")
    for rc in ({"figure.autolayout": True}, {"figure.constrained_layout.use": True}):
        with matplotlib.rc_context(rc):
            again = draw(tmp_path / next(iter(rc)))
        for a, b in zip(again, default, strict=True):  # PNG and PDF
            assert a.read_bytes() == b.read_bytes(), (rc, a.name)


def test_ctrl_c_while_drawing_exits_130_and_says_what_is_left(swept):
    """Interrupted once its first figure is written: status 130, one message about the
    report (not about runs), no report.md."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tmp, store = swept
    out = tmp / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "report", "--tracking-uri", store, "--out", str(out)],
        cwd=tmp,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal has it
    )
    deadline = time.time() + 120
    while not list(out.glob("*/*.png")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: the report was not finished" in err and "KILLED" not in err
    assert not list(out.glob("*/report.md"))


# ------------------------------------------- exploding and vanishing values are data
MAX = 1.7976931348623157e308  # SQLite's stand-in for ±inf, as Frames.history holds it


@pytest.fixture
def shown(monkeypatch) -> list[str]:
    """Every text of each figure saved during the test (titles, legend entries, labels), read
    once plot.save has laid it out: what a figure says to its reader."""
    from matplotlib.text import Text

    from rnnlab.report import plotting as plot

    texts: list[str] = []
    save = plot.save

    def spy(fig, out, name):
        paths = save(fig, out, name)
        texts.extend(t.get_text() for t in getattr(fig, "figure", fig).findobj(Text))
        return paths

    monkeypatch.setattr(plot, "save", spy)
    return texts


def _overflowed(n: int = 2) -> report.Frames:
    """``n`` linear runs that diverged at step 0 as the tool records them: every ‖∂L/∂h_t‖ NaN,
    no loss, slope or norm logged, W_hh at 1e38, q̂ at 4e301, λ_max and q* at SQLite's +inf."""
    runs = [
        {"run_id": f"r{s}", "name": f"adding-T5-linear-s{s}", "status": "diverged",
         "diverged_step": 0.0, "model.activation": "linear", "task.seq_len": 5, "seed": s,
         "train.dtype": "float32", "final_loss_ratio": np.nan, "slope_init": np.nan,
         "slope_final": np.nan}
        for s in range(n)
    ]  # fmt: skip
    k = np.arange(5)
    profiles = pd.concat(
        pd.DataFrame({"run_id": r["run_id"], "step": 0, "t": 5 - k, "k": k, "n_t": np.nan})
        for r in runs
    )
    f = _frames(runs, profiles)
    f.history = _history(
        [
            (r["run_id"], key, 0, value)
            for r in runs
            for key, value in (
                ("weights/W_hh_radius", 1e38),
                ("weights/W_hh_sigma_max", 1e38),
                ("dyn/lyapunov_max", MAX),
                ("theory/q_star", MAX),
                ("units/q_hat", 4e301),
                ("units/saturated", 0.0),
                ("units/dead", 0.0),
            )
        ]
    )
    return f


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_report_of_runs_that_overflowed_at_step_0_draws_what_is_finite(tmp_path, shown):
    """Every run diverged at its first step: figure 1 (which crashed: TypeError in seaborn),
    the learning curves and the gradient norm have nothing finite and are left out; the
    profile over training is drawn, each cell said to be not finite (not "underflow")."""
    from rnnlab.report.figures.grad_norm import grad_norm_over_training
    from rnnlab.report.figures.learning_curves import learning_curves
    from rnnlab.report.figures.profile_over_training import profile_heatmaps
    from rnnlab.report.figures.profile_vs_distance import gradient_profile_vs_distance

    f = _overflowed()
    for draw in (gradient_profile_vs_distance, learning_curves, grad_norm_over_training):
        assert draw(f, tmp_path) is None
    assert profile_heatmaps(f, tmp_path)[0].name == "7_profile_over_training.png"
    assert "not finite (inf or NaN: overflow)" in shown
    assert not [t for t in shown if "underflow" in t]  # NaN is not a 0
    path = report.report(f, tmp_path / "all")  # the whole report: no figure crashes
    text = path.read_text()
    assert "](7_profile_over_training.png)" in text and "1_profile_vs_distance" not in text


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_profile_with_no_finite_point_keeps_its_colour_and_is_marked(tmp_path, shown):
    """Beside a finite profile, one NaN throughout (it overflowed) has no line: its hue stays
    in the legend and a marker on the top edge of its panel says it is not finite."""
    from rnnlab.report.figures.profile_vs_distance import gradient_profile_vs_distance

    f = _overflowed(1)
    k = np.arange(5)
    f.profiles = pd.concat(
        [f.profiles, pd.DataFrame({"run_id": "t", "step": 0, "t": 5 - k, "k": k, "n_t": 0.5**k})]
    )
    f.runs = pd.concat(
        [f.runs, f.runs.assign(run_id="t", name="tanh", **{"model.activation": "tanh"})]
    )
    f.swept = ["model.activation"]
    marks = report.profile_marks(f)
    assert marks[["hue", "kind", "k", "y"]].values.tolist() == [
        ["linear", "not finite", 0, 10.0**report.DECADES]
    ]
    assert gradient_profile_vs_distance(f, tmp_path)[0].exists()
    assert {"linear", "tanh", "not finite (inf or NaN: overflow) beyond"} <= set(shown)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_chaos_vs_drive_marks_infinite_exponents_and_leaves_out_nan_ones(tmp_path, shown):
    """λ_max at +inf in some runs and −inf in others (SQLite's ±1.8e308) made matplotlib's
    axis overflow (LinAlgError: Singular matrix); λ_max NaN in every run made the figure's
    frame lose its column (KeyError). Infinite values are drawn on the panel's edges and said
    so, NaN ones counted; nothing finite at all: the figure is left out."""
    from rnnlab.report.figures.chaos_vs_drive import chaos_vs_drive, drive_frame, zero_crossing

    acts = ["tanh", "tanh", "linear", "linear"]
    runs = [
        {"run_id": f"r{i}", "name": f"r{i}", "status": "finished", "model.activation": a,
         "model.gain": 1e38, "model.hidden_size": 2**i, "seed": 0}
        for i, a in enumerate(acts)
    ]  # fmt: skip
    f = _frames(runs)
    q_in, lyap = [0.003, 0.011, 0.04, 0.1], [-MAX, -MAX, MAX, MAX]
    theory = [43.4, 43.4, 87.5, 87.5]
    rows = [
        (f"r{i}", key, 0, v[i])
        for i in range(4)
        for key, v in (("theory/q_in", q_in), ("dyn/lyapunov_max", lyap), ("theory/slope", theory))
    ]
    f.history = _history(rows)
    d = drive_frame(f)
    assert np.isnan(zero_crossing(d.sigma_u.to_numpy(), d.lyapunov.to_numpy()))  # ±inf: no line
    assert chaos_vs_drive(f, tmp_path)[0].exists()
    assert {"λ_max = +∞ (on the top edge)", "λ_max = −∞ (on the bottom edge)"} <= set(shown)
    assert not [t for t in shown if t.startswith("mean field")]  # no one activation to draw it at
    # λ_max NaN in two runs: the others drawn, the two counted
    f.history = _history([(r, k, s, np.nan if k == "dyn/lyapunov_max" and r < "r2" else v)
                          for r, k, s, v in rows])  # fmt: skip
    assert chaos_vs_drive(f, tmp_path)[0].exists() and "λ_max NaN: 2 runs, not drawn" in shown
    # λ_max NaN everywhere, ½ ln χ₁ at +inf: nothing finite to draw
    f.history = _history([(r, k, s, np.nan if k == "dyn/lyapunov_max" else MAX if k == "theory/slope" else v)
                          for r, k, s, v in rows])  # fmt: skip
    d = drive_frame(f)
    assert len(d) == 4 and d.lyapunov.isna().all()
    assert chaos_vs_drive(f, tmp_path) is None


def test_ad_hoc_runs_with_one_name_draw_one_panel_each_saying_which(tmp_path, shown):
    """`rnnlab run` twice with different learning rates: two runs of one name and one hue
    (figure 7 pivoted them together: ValueError, duplicate entries). One is drawn, and its
    panel says which learning rate it has."""
    from rnnlab.report.figures.profile_over_training import profile_heatmaps

    cells = [("g", "adding-T5-gru-s0", "gru", 0.001), ("a", "adding-T5-tanh-s0", "elman", 0.01),
             ("b", "adding-T5-tanh-s0", "elman", 0.1)]  # fmt: skip
    runs = [
        {"run_id": rid, "name": name, "status": "finished", "model.cell": cell,
         "train.lr": lr, "task.seq_len": 5, "seed": 0}
        for rid, name, cell, lr in cells
    ]  # fmt: skip
    k = np.arange(5)
    profiles = pd.concat(
        pd.DataFrame({"run_id": rid, "step": step, "t": 5 - k, "k": k, "n_t": 0.9**k})
        for rid, *_ in cells
        for step in (0, 2)
    )
    f = _frames(runs, profiles)
    heat = report.profile_heatmap_frame(f)
    assert sorted(set(heat.run_id)) == ["a", "g"] and len(heat) == 2 * 2 * 5
    assert profile_heatmaps(f, tmp_path)[0].exists()
    assert "adding-T5-tanh-s0\nlearning rate = 0.01" in "\n".join(shown)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_values_left_out_of_a_figure_are_counted_on_it(tmp_path, shown):
    """Figures over training leave out what is not finite and say how many; a panel left with
    nothing keeps its place and says so; slopes that are NaN are counted in the title."""
    from rnnlab.report.figures.learning_curves import learning_curves
    from rnnlab.report.figures.q_hat_vs_q_star import q_hat_vs_q_star
    from rnnlab.report.figures.slope import slope_vs_swept

    runs = [
        {"run_id": a, "name": a, "status": "finished" if a == "tanh" else "diverged",
         "model.activation": a, "seed": 0, "slope_init": -0.1 if a == "tanh" else np.nan,
         "slope_final": -0.2 if a == "tanh" else np.nan}
        for a in ("tanh", "linear")
    ]  # fmt: skip
    f = _frames(runs)
    f.history = _history(
        [("tanh", "eval/loss_ratio", s, 0.5) for s in (0, 5, 10)]
        + [("linear", "eval/loss_ratio", 0, np.nan), ("linear", "eval/loss_ratio", 5, MAX)]
        + [(a, "units/q_hat", s, 0.3 if a == "tanh" else MAX) for a in ("tanh", "linear") for s in (0, 5)]
        + [("tanh", "theory/q_star", 0, 0.25), ("linear", "theory/q_star", 0, MAX)]
    )  # fmt: skip
    assert learning_curves(f, tmp_path)[0].exists()
    assert "2 of 5 values not finite (inf or NaN): not drawn" in shown
    assert "no finite value" in shown  # the linear panel, in its place
    shown.clear()
    assert q_hat_vs_q_star(f, tmp_path)[0].exists()
    assert "2 of 4 values not finite (inf or NaN): not drawn" in shown
    assert "q* inf, NaN or 0 in 1 run: no dashed line" in shown
    shown.clear()
    assert slope_vs_swept(f, tmp_path)[0].exists()
    assert "2 of 4 slopes not finite (inf or NaN): not drawn" in "\n".join(shown)
    f.runs = f.runs.assign(slope_init=np.nan, slope_final=np.nan)
    assert slope_vs_swept(f, tmp_path) is None  # nothing finite: left out
