"""Report: a tiny sweep (with a diverged point) → every figure, and the frames behind them."""

import pytest
from conftest import cli, write
from PIL import Image

from rnnlab import report

pytestmark = pytest.mark.slow

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
    proc = cli("sweep", path, "--tracking-uri", store, cwd=tmp)
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
    assert text.count("![") == 8 and "| adding-T9-linear-gaussian40-s0 | diverged |" in text
    from mlflow.tracking import MlflowClient

    f = report.load(store, "tinyreport")
    logged = {a.path for a in MlflowClient(store).list_artifacts(f.parent_run_id, "report")}
    assert "report/2_trainability_map.png" in logged and "report/report.md" in logged


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


def test_one_seed_one_length_still_draws(tmp_path, store):
    path = write(
        tmp_path / "one.yaml",
        "name: one\ntask: {seq_len: 5}\nmodel: {hidden_size: 4}\n"
        "train: {steps: 2, batch_size: 2, eval_size: 2}\n",
    )
    assert cli("sweep", path, "--tracking-uri", store, cwd=tmp_path).returncode == 0
    proc = cli("report", "--tracking-uri", store, "--out", tmp_path / "figs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "figs" / "one").glob("*.png"))) == 7  # no gain sweep: no figure 8


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
