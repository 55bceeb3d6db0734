"""Report figures: vanishing and exploding gradients as papers show them, from the MLflow store.

A report follows a **grid**, not a bucket of runs. :func:`load` selects the runs to draw:

  - the current grid of an experiment file (its run_keys, overrides applied), when given;
  - else the grid of the experiment's latest sweep (the parent run's ``grid.json``, or its
    ``experiment.yaml`` expanded again for sweeps logged before ``grid.json`` existed);
  - ``all_runs``: every run; ``where``: only runs whose params match ``key=value[,value]``.

Every other run in the experiment is listed (``Frames.others``, with the settings in which
it differs from the drawn grid), never drawn. The selected runs become tidy DataFrames; each
figure is one function that reads only those frames, so figures are testable offline:

  runs      one row per grid point: run_id, name, status, diverged_step, every param
            (typed), final eval/loss_ratio, slope at init and at the end
  history   one row per (run, metric, step) for the metrics plotted over training
  profiles  one row per (run, training step, time step t): k = L − t, n_t

Facets and hues come from the keys the grid sweeps (params that vary across runs): hue is
the activation when it varies, columns the sequence length (else gain, init, …). Seeds are
aggregated into bands (median line, min–max band). Diverged runs are drawn and marked; failed
and killed runs are listed in the report, not drawn.

What a figure cannot show is marked, never silently dropped: colour scales are clipped to a
stated range (:data:`DECADES`, :data:`RATIO_RANGE`) and the clipped cells hatched; a profile
that leaves the y range or underflows to 0 ends in a marker; activations keep one order and
colour everywhere (:mod:`rnnlab.style`); legends list only what occurred.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize, TwoSlopeNorm, to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import LogFormatter
from mlflow.tracking import MlflowClient

from rnnlab.config import ConfigError
from rnnlab.style import ACTIVATION_COLORS, activation_rank

HISTORY_KEYS = [
    "train/loss",
    "eval/loss_ratio",
    "grad/norm",
    "grad/clipped",
    "grad_h/slope",
    "weights/W_hh_radius",
    "weights/W_hh_sigma_max",
    "theory/slope",
    "theory/q_in",
    "theory/bias_var",
    "dyn/lyapunov_max",
]
# One colour per activation, shared by every figure and the MLflow UI (rnnlab.style).
PALETTE = {a: to_rgb(c) for a, c in ACTIVATION_COLORS.items()}
# Pascanu et al. (2013): with |φ′| ≤ γ, σ_max(W_hh) < 1/γ is sufficient for vanishing gradients.
CRITICAL_SIGMA = {
    "tanh": 1.0,
    "relu": 1.0,
    "linear": 1.0,
    "leaky_relu": 1.0,
    "hardtanh": 1.0,
    "sigmoid": 4.0,
}
LABELS = {
    "task.seq_len": "sequence length T",
    "model.gain": "gain g",
    "model.activation": "activation",
    "model.init": "init",
    "model.hidden_size": "hidden size H",
    "train.lr": "learning rate",
    "train.steps": "training steps",
    "seed": "seed",
}
SHORT = {"task.seq_len": "T", "model.activation": "activation", "model.gain": "g"}
NOT_FACETS = {"seed", "run_id", "name", "status"}
NOT_COMPARED = {"train.ensemble", "train.device"}  # scheduling, not science: never "differs"
WIDTH = 3.4  # inches: one column of a two-column paper
DECADES = 8  # figures 1 and 7 show n_{T−k}/n_T within 10^±8; beyond it: clipped and marked
RATIO_RANGE = (0.1, 10.0)  # the trainability map's colour scale; beyond it: hatched


@dataclass
class Frames:
    experiment: str
    runs: pd.DataFrame
    history: pd.DataFrame
    profiles: pd.DataFrame
    swept: list[str]
    parent_run_id: str | None = None
    selection: str = "every run"  # what was drawn, in words ("the grid of x.yaml: …")
    others: pd.DataFrame = field(default_factory=pd.DataFrame)  # listed, not drawn
    missing: list[str] = field(default_factory=list)  # grid points without a run yet

    @property
    def hue(self) -> str | None:
        return _pick(self.swept, ["model.activation", "model.init", "model.gain", "task.seq_len"])

    @property
    def col(self) -> str | None:
        return _pick(
            [k for k in self.swept if k != self.hue],
            ["task.seq_len", "model.gain", "model.init", "model.activation", "train.lr"],
        )

    @property
    def drawn(self) -> pd.DataFrame:
        return self.runs[self.runs.status.isin(["finished", "diverged"])]


def _pick(keys: list[str], order: list[str]) -> str | None:
    for k in order:
        if k in keys:
            return k
    rest = [k for k in keys if k not in NOT_FACETS]
    return rest[0] if rest else None


# --------------------------------------------------------------------------- loading
def experiments(tracking_uri: str) -> list[str]:
    client = MlflowClient(tracking_uri)
    return [e.name for e in client.search_experiments() if e.name != "Default"]


def parse_where(items: list[str]) -> dict[str, list[str]]:
    """``["model.activation=tanh,relu", "task.seq_len=100"]`` → {key: accepted values}."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                [f"--where {item!r}: expected key=value[,value…], e.g. task.seq_len=100"]
            )
        out.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return out


def _matches(row: dict, where: dict[str, list[str]]) -> bool:
    for key, values in where.items():
        if key not in row or not any(_same(row[key], v) for v in values):
            return False
    return True


def _same(value, text: str) -> bool:
    return str(value) == text or _typed(str(value)) == _typed(text)


def load(
    tracking_uri: str,
    experiment: str,
    grid: dict[str, str] | None = None,
    where: list[str] = (),
    all_runs: bool = False,
    source: str | None = None,
) -> Frames:
    """The tidy frames of the runs to draw in one experiment.

    Args:
        grid: run_key → name of the grid to draw (an experiment file's current grid); None:
            the latest sweep's grid.
        where: ``key=value[,value]`` filters on params (and ``status``, ``name``); alone they
            select among every run, with a grid they narrow it.
        all_runs: draw every run in the experiment.
        source: how the grid was chosen, in words (e.g. "the grid of experiments/x.yaml").
    Raises:
        ConfigError: no such experiment, no rnnlab runs, or a malformed ``where``.
    """
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # one bar per file otherwise
    filters = parse_where(list(where))
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = ", ".join(experiments(tracking_uri)) or "none"
        raise ConfigError(
            [f"no experiment {experiment!r} in {tracking_uri} (experiments: {known})"]
        )
    all_found, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        all_found += list(page)
        token = page.token
        if not token:
            break
    points = [r for r in all_found if "rnnlab.run_key" in r.data.tags]
    if not points:
        raise ConfigError(
            [f"experiment {experiment!r} has no rnnlab runs yet; run `rnnlab sweep` first"]
        )
    parents = sorted(
        (r for r in all_found if r.data.tags.get("rnnlab.role") == "sweep"),
        key=lambda r: r.info.start_time,
    )
    parent_names = {r.info.run_id: r.info.run_name for r in parents}
    rank = {"finished": 0, "diverged": 0, "failed": 1, "killed": 1, "running": 2}
    latest: dict[str, object] = {}
    for r in sorted(
        points,
        key=lambda r: (-rank.get(r.data.tags.get("rnnlab.status", ""), 3), r.info.start_time),
    ):
        latest[r.data.tags["rnnlab.run_key"]] = r  # best status wins, then the newest
    rows = {}
    for key, r in latest.items():
        tags = r.data.tags
        row = {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "status": tags.get("rnnlab.status", "?"),
            "diverged_step": float(tags.get("rnnlab.diverged_step", "nan")),
            "sweep": parent_names.get(tags.get("mlflow.parentRunId"), "rnnlab run"),
            "parent_id": tags.get("mlflow.parentRunId"),
        }
        row |= {k: _typed(v) for k, v in r.data.params.items()}
        row["final_loss_ratio"] = r.data.metrics.get("eval/loss_ratio", math.nan)
        rows[key] = row

    # which runs to draw: a grid (a file's, else the latest sweep's), all, or a filter
    missing: list[str] = []
    if grid is None and not all_runs and not filters:
        grid, source = _latest_grid(client, parents)
    if grid is not None:
        chosen = [k for k in grid if k in rows]
        missing = [name for k, name in grid.items() if k not in rows]
        selection = f"{source or 'the given grid'}: {len(grid)} grid points"
        if missing:
            selection += f", {len(missing)} without a run yet"
    else:
        chosen = list(rows)
        selection = (
            "every run in the experiment (--all)"
            if all_runs
            else "every run in the experiment (no sweep has run yet)"
            if not filters
            else "runs matching --where"
        )
    if filters:
        chosen = [k for k in chosen if _matches(rows[k], filters)]
        selection += " where " + ", ".join(f"{k}={'|'.join(v)}" for k, v in filters.items())
    chosen_set = set(chosen)
    if not chosen:
        runs = pd.DataFrame(columns=["run_id", "name", "status", "diverged_step"])
    else:
        runs = pd.DataFrame([rows[k] for k in chosen])
    others = _describe_others(pd.DataFrame([rows[k] for k in rows if k not in chosen_set]), runs)

    history, profiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for row in runs.itertuples():
            if row.status not in ("finished", "diverged"):
                continue
            rid = row.run_id
            for key in HISTORY_KEYS:
                for m in client.get_metric_history(rid, key):
                    history.append((rid, key, m.step, m.value))
            try:
                path = client.download_artifacts(rid, "profiles.parquet", tmp)
            except Exception:  # a run without profiles (none recorded) is still a row in `runs`
                continue
            frame = pd.read_parquet(path)
            frame.insert(0, "run_id", rid)
            profiles.append(frame)
    history = pd.DataFrame(history, columns=["run_id", "key", "step", "value"])
    profiles = (
        pd.concat(profiles, ignore_index=True)
        if profiles
        else pd.DataFrame(columns=["run_id", "step", "t", "k", "n_t"])
    )
    slopes = history[history.key == "grad_h/slope"].sort_values("step")
    first = slopes.groupby("run_id").value.first().rename("slope_init")
    last = slopes.groupby("run_id").value.last().rename("slope_final")
    runs = runs.merge(first, on="run_id", how="left").merge(last, on="run_id", how="left")
    params = [c for c in runs.columns if "." in c or c == "seed"]
    swept = [c for c in params if runs[c].astype(str).nunique() > 1]
    ids = set(runs.parent_id) if "parent_id" in runs.columns else set()
    mine = [r.info.run_id for r in parents if r.info.run_id in ids]  # the drawn grid's sweeps
    return Frames(
        experiment,
        runs,
        history,
        profiles,
        swept,
        mine[-1] if mine else parents[-1].info.run_id if parents else None,
        selection,
        others,
        missing,
    )


def _latest_grid(client, parents) -> tuple[dict[str, str] | None, str | None]:
    """run_key → name of the latest sweep's grid (None when the experiment has no sweep)."""
    from rnnlab.config import load_experiment, run_name

    for parent in reversed(parents):
        rid, name = parent.info.run_id, parent.info.run_name
        with tempfile.TemporaryDirectory() as tmp:
            try:
                grid = json.loads(
                    Path(client.download_artifacts(rid, "grid.json", tmp)).read_text()
                )
                return grid, f"the grid of the latest sweep ({name})"
            except Exception:  # a sweep logged before grid.json: expand its experiment.yaml
                pass
            try:
                path = client.download_artifacts(rid, "experiment.yaml", tmp)
                experiment, runs = load_experiment(path)
            except Exception:
                continue
            swept = experiment.swept_keys()
            return (
                {r.run_key: run_name(r, swept) for r in runs},
                f"the grid of the latest sweep ({name})",
            )
    return None, None


def _describe_others(others: pd.DataFrame, drawn: pd.DataFrame) -> pd.DataFrame:
    """The runs not drawn, each with the settings in which it differs from the drawn grid."""
    cols = ["run_id", "name", "status", "sweep", "differs"]
    if others.empty:
        return pd.DataFrame(columns=cols)
    params = [c for c in others.columns if ("." in c or c == "seed") and c not in NOT_COMPARED]
    values = {c: set(map(_text, drawn[c])) if c in drawn.columns else set() for c in params}
    differs = []
    for _, r in others.iterrows():
        diff = [f"{c}={r[c]}" for c in params if _text(r[c]) not in values[c]]
        differs.append(", ".join(diff) if diff else "same settings (another grid)")
    return others.assign(differs=differs)[cols].sort_values(["differs", "name"])


def _text(value) -> str:
    """A param as text, with None and NaN (a param a run lacks) alike."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return str(value)


def _typed(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"None": None, "True": True, "False": False}.get(value, value)


# ----------------------------------------------------------------------- helpers
def _with_params(frame: pd.DataFrame, f: Frames, *extra: str) -> pd.DataFrame:
    keys = [k for k in dict.fromkeys([f.hue, f.col, "seed", *extra]) if k and k in f.runs.columns]
    return frame.merge(f.runs[["run_id", "status", *keys]], on="run_id")


def order(key: str | None, values) -> list:
    """One order for a key's values in every figure: activations by regime, numbers by size."""
    vals = list(dict.fromkeys(v for v in values if v is not None))
    if key == "model.activation":
        return sorted(vals, key=activation_rank)
    try:
        return sorted(vals, key=float)
    except (TypeError, ValueError):
        return sorted(vals, key=str)


def _palette(key: str | None, data: pd.DataFrame) -> dict | None:
    if key == "model.activation" and key in data.columns:
        return {a: PALETTE[a] for a in data[key].unique() if a in PALETTE}
    return None


def _label(key: str | None) -> str:
    return LABELS.get(key, key or "")


def _panel(key: str | None, value) -> str:
    """A facet title: "T = 100", "activation = tanh", "g = 1.5"."""
    return f"{SHORT.get(key, _label(key).split(' ')[-1])} = {value}" if key else ""


def _wrap(f: Frames, data: pd.DataFrame, facet: str | None = "col") -> int | None:
    """Columns per row: one row up to four panels, else rows of (nearly) equal length."""
    key = f.col if facet == "col" else facet
    n = data[key].nunique() if key and key in data.columns else 1
    if n <= 4:
        return None
    return math.ceil(n / math.ceil(n / 4))


def _facet_axes(g, key):
    if key is None or key not in g.data.columns or not g.axes_dict:
        return [(None, ax) for ax in g.axes.flat]
    return list(g.axes_dict.items())


def _label_every_panel(g, xlabel: str, ylabel: str) -> None:
    """Tick labels and axis labels on every panel: no panel borrows its neighbour's."""
    for ax in g.axes.flat:
        ax.tick_params(labelbottom=True, labelleft=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)


def _titles(g, key: str | None) -> None:
    if key:
        for value, ax in _facet_axes(g, key):
            ax.set_title(_panel(key, value))


def _legend(g, extra: dict[str, object]) -> None:
    """Seaborn's legend plus ``extra`` (label → handle): entries only for what occurred."""
    data = {}
    if g._legend is not None:
        texts = [t.get_text() for t in g._legend.texts]
        data = dict(zip(texts, g._legend.legend_handles, strict=False))
        g._legend.remove()
        g._legend = None
    data |= extra
    if data:
        g.add_legend(legend_data=data, label_order=list(data))


def _save(fig_or_grid, out: Path, name: str) -> list[Path]:
    if isinstance(fig_or_grid, sns.FacetGrid):  # room for every panel's tick labels
        fig_or_grid.tight_layout(h_pad=1.5, w_pad=1.0)
    fig = getattr(fig_or_grid, "figure", fig_or_grid)
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        for text in legend.get_texts() if legend else []:  # "model.activation" → "activation"
            text.set_text(LABELS.get(text.get_text(), text.get_text()))
        if legend and legend.get_title().get_text():
            legend.get_title().set_text(_label(legend.get_title().get_text()))
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Producer": None})
    plt.close(fig)
    return paths


def _sci(v: float) -> str:
    """0.14, 0.95, 470, 1.2e11: two significant digits."""
    if not np.isfinite(v):
        return "inf" if v > 0 else "n/a"
    if v == 0 or 0.01 <= abs(v) < 10:
        return f"{v:.2g}"
    if abs(v) < 10_000:
        return f"{float(f'{v:.2g}'):.0f}"
    exp = math.floor(math.log10(abs(v)))
    return f"{v / 10**exp:.2g}e{exp}"


# ----------------------------------------------------------------------- figures
def profile_frame(f: Frames) -> pd.DataFrame:
    """Profiles at init and at the end, normalised: n_{L−k} / n_L against distance k."""
    p = f.profiles
    if p.empty:
        return p.assign(phase=[], ratio=[])
    first, last = (
        p.groupby("run_id").step.transform("min"),
        p.groupby("run_id").step.transform("max"),
    )
    p = p[(p.step == first) | (p.step == last)].copy()
    p["phase"] = np.where(p.step == first[p.index], "init", "end of training")
    ref = p[p.k == 0].set_index(["run_id", "step"]).n_t
    p["ratio"] = (
        p.n_t.to_numpy() / ref.reindex(pd.MultiIndex.from_frame(p[["run_id", "step"]])).to_numpy()
    )
    return _with_params(p, f)


def profile_marks(f: Frames) -> pd.DataFrame:
    """Where each median profile of figure 1 leaves the y range or underflows.

    One row per (panel, hue, phase) with an event: ``kind`` is "below range", "above range"
    (the median first crosses 10^∓DECADES at ``k``) or "underflow" (some seed's n reached
    exactly 0 at ``k``: the line ends at k − 1), ``y`` where to draw the marker.
    """
    data = profile_frame(f)
    cols = ["col", "hue", "phase", "kind", "k", "y"]
    if data.empty:
        return pd.DataFrame(columns=cols)
    lo, hi = 10.0**-DECADES, 10.0**DECADES
    data = data.assign(_col=data[f.col] if f.col else "", _hue=data[f.hue] if f.hue else "")
    rows = []
    for (c, h, phase), d in data.groupby(["_col", "_hue", "phase"]):
        pos = d[np.isfinite(d.ratio) & (d.ratio > 0)]
        med = pos.groupby("k").ratio.median().sort_index()
        out = med[(med < lo) | (med > hi)]
        if len(out):
            k = int(out.index[0])
            below = out.iloc[0] < lo
            rows.append(
                (c, h, phase, "below range" if below else "above range", k, lo if below else hi)
            )
        zero = d[d.ratio == 0]
        if len(zero):
            k = int(zero.k.min())
            end = med[med.index < k]
            y = float(np.clip(end.iloc[-1], lo, hi)) if len(end) else lo
            rows.append((c, h, phase, "underflow", k - 1, y))
    return pd.DataFrame(rows, columns=cols)


MARKERS = {
    "below range": ("v", rf"leaves the y range (below $10^{{-{DECADES}}}$)"),
    "above range": ("^", rf"leaves the y range (above $10^{{{DECADES}}}$)"),
    "underflow": ("X", "underflow: n = 0 (float32) beyond"),
}


def gradient_profile_vs_distance(f: Frames, out: Path) -> list[Path]:
    data = profile_frame(f)
    shown = data[np.isfinite(data.ratio) & (data.ratio > 0)]
    hue_order = order(f.hue, shown[f.hue]) if f.hue else None
    g = sns.relplot(
        data=shown,
        x="k",
        y="ratio",
        hue=f.hue,
        hue_order=hue_order,
        style="phase",
        style_order=[p for p in ("init", "end of training") if p in set(shown.phase)],
        col=f.col,
        col_order=order(f.col, shown[f.col]) if f.col else None,
        kind="line",
        estimator="median",
        errorbar=("pi", 100),
        palette=_palette(f.hue, shown),
        col_wrap=_wrap(f, shown),
        height=WIDTH * 0.8,
        aspect=1.1,
        facet_kws={"sharex": False, "sharey": True},
        linewidth=1.2,
    )
    g.set(yscale="log", ylim=(10.0**-DECADES, 10.0**DECADES))
    marks = profile_marks(f)
    pal = _palette(f.hue, shown) or {}
    for key, ax in _facet_axes(g, f.col):
        m = marks if key is None else marks[marks.col == key]
        for r in m.itertuples():
            ax.plot(
                r.k,
                r.y,
                MARKERS[r.kind][0],
                ms=5,
                color=pal.get(r.hue, "0.2"),
                mec="black",
                mew=0.4,
                clip_on=False,
                zorder=5,
            )
    extra = {
        MARKERS[k][1]: Line2D(
            [], [], ls="", marker=MARKERS[k][0], color="0.5", mec="black", mew=0.4
        )
        for k in MARKERS
        if k in set(marks.kind)
    }
    _legend(g, extra)
    _label_every_panel(g, "distance k = T − t (steps back)", r"$n_{T-k}\,/\,n_T$")
    _titles(g, f.col)
    g.figure.suptitle(
        "Gradient norm ‖∂L/∂h_t‖ vs distance (median over seeds, band: min–max; "
        rf"y range $10^{{\pm {DECADES}}}$)",
        y=1.03,
    )
    return _save(g, out, "1_profile_vs_distance")


def trainability_frame(f: Frames) -> pd.DataFrame:
    """Median final eval/loss_ratio over seeds, one cell per (hue, col) grid point."""
    runs = f.drawn
    rows, cols = f.hue or "name", f.col or "experiment"
    data = runs.assign(experiment=f.experiment)
    cell = data.groupby([rows, cols]).agg(
        ratio=("final_loss_ratio", "median"),
        runs=("status", "size"),
        diverged=("status", lambda s: (s == "diverged").sum()),
    )
    cell = cell.reset_index()
    lo, hi = RATIO_RANGE
    cell["clipped"] = np.select(
        [cell.ratio >= hi, cell.ratio <= lo], [f"≥ {hi:g}", f"≤ {lo:g}"], default=""
    )
    return cell


def trainability_map(f: Frames, out: Path) -> list[Path]:
    cell = trainability_frame(f)
    rows, cols = f.hue or "name", f.col or "experiment"
    row_order, col_order = order(rows, cell[rows]), order(cols, cell[cols])
    ratio = cell.pivot(index=rows, columns=cols, values="ratio").reindex(row_order)[col_order]
    div = cell.pivot(index=rows, columns=cols, values="diverged").reindex(row_order)[col_order]
    n = cell.pivot(index=rows, columns=cols, values="runs").reindex(row_order)[col_order]
    lo, hi = RATIO_RANGE
    log = np.log10(ratio.astype(float).where(ratio > 0)).clip(math.log10(lo), math.log10(hi))
    fig, ax = plt.subplots(figsize=(WIDTH * 1.35, max(2.2, 0.5 * len(ratio) + 1.6)))
    cmap = sns.color_palette("RdBu_r", as_cmap=True).with_extremes(bad="0.85")
    norm = TwoSlopeNorm(0, math.log10(lo), math.log10(hi))
    sns.heatmap(
        log,
        cmap=cmap,
        norm=norm,
        ax=ax,
        cbar_kws={
            "label": f"eval loss / baseline (clipped to {lo:g} … {hi:g})",
            "extend": "both",
            "ticks": [math.log10(lo), -0.5, 0, 0.5, math.log10(hi)],
            "format": matplotlib.ticker.FuncFormatter(lambda v, _: f"{10**v:.2g}"),
        },
        linewidths=0.5,
        linecolor="white",
    )
    used = set()
    for i, rname in enumerate(ratio.index):
        for j, cname in enumerate(ratio.columns):
            v, d, k = ratio.loc[rname, cname], div.loc[rname, cname], n.loc[rname, cname]
            hatch = None
            if np.isfinite(d) and d > 0:
                hatch, kind = "xxx", "diverged"
            elif np.isfinite(v) and v >= hi:
                hatch, kind = "///", f"≥ {hi:g}"
            elif np.isfinite(v) and v <= lo:
                hatch, kind = "...", f"≤ {lo:g}"
            if hatch:
                used.add((hatch, kind))
                ax.add_patch(
                    Rectangle((j, i), 1, 1, fill=False, hatch=hatch, edgecolor="0.35", lw=0)
                )
            text = _sci(v) if np.isfinite(v) else "n/a" if np.isfinite(k) else "not run"
            if np.isfinite(d) and d > 0:
                text += f"\n{int(d)}/{int(k)} div."
            shade = (
                cmap(norm(log.loc[rname, cname]))
                if np.isfinite(log.loc[rname, cname])
                else (1, 1, 1)
            )
            light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.5
            ax.text(
                j + 0.5,
                i + 0.5,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="black" if light else "white",
                bbox={"boxstyle": "round,pad=0.15", "fc": shade, "ec": "none"} if hatch else None,
            )
    ax.set_xlabel(_label(cols))
    ax.set_ylabel(_label(rows))
    ax.set_title(
        "Trainability: final eval loss ÷ baseline\n(median over seeds; < 1 learned, 1 = chance)"
    )
    if used:
        labels = {
            "xxx": "diverged (n/m: seeds of the cell that diverged)",
            "///": f"above the colour range (ratio ≥ {hi:g})",
            "...": f"below the colour range (ratio ≤ {lo:g})",
        }
        handles = [
            Patch(facecolor="white", edgecolor="0.35", hatch=h, label=labels[h])
            for h in ("///", "...", "xxx")
            if any(u[0] == h for u in used)
        ]
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.22),
            ncol=1,
            fontsize=7,
            frameon=False,
        )
    return _save(fig, out, "2_trainability_map")


def learning_curves(f: Frames, out: Path) -> list[Path]:
    h = _with_params(f.history[f.history.key == "eval/loss_ratio"], f)
    facet, hue = f.hue, f.col
    g = sns.relplot(
        data=h,
        x="step",
        y="value",
        hue=hue,
        hue_order=order(hue, h[hue]) if hue else None,
        col=facet,
        col_order=order(facet, h[facet]) if facet else None,
        kind="line",
        estimator="median",
        errorbar=("pi", 100),
        palette="viridis" if hue and pd.api.types.is_numeric_dtype(h[hue]) else None,
        col_wrap=_wrap(f, h, facet),
        height=WIDTH * 0.8,
        aspect=1.1,
        linewidth=1.2,
        facet_kws={"sharey": False},
    )
    g.set(yscale="log")
    for ax in g.axes.flat:
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    _label_every_panel(g, "training step", "eval loss / baseline")
    _titles(g, facet)
    g.figure.suptitle(
        "Learning curves (median over seeds, band: min–max; dashed: input-ignoring baseline)",
        y=1.03,
    )
    return _save(g, out, "3_learning_curves")


def grad_norm_over_training(f: Frames, out: Path) -> list[Path]:
    h = _with_params(f.history[f.history.key == "grad/norm"], f)
    h = h.assign(value=h.value.clip(upper=1e300))  # +inf (stored as 1.8e308) drawn at the top
    g = sns.relplot(
        data=h,
        x="step",
        y="value",
        hue=f.hue,
        hue_order=order(f.hue, h[f.hue]) if f.hue else None,
        col=f.col,
        col_order=order(f.col, h[f.col]) if f.col else None,
        units="run_id",
        estimator=None,
        kind="line",
        palette=_palette(f.hue, h),
        col_wrap=_wrap(f, h),
        height=WIDTH * 0.8,
        aspect=1.1,
        linewidth=0.6,
        alpha=0.8,
    )
    g.set(yscale="log")
    clipped = _with_params(f.history[(f.history.key == "grad/clipped") & (f.history.value > 0)], f)
    diverged = f.drawn[f.drawn.status == "diverged"]
    for key, ax in _facet_axes(g, f.col):
        if not clipped.empty:
            c = clipped if key is None else clipped[clipped[f.col] == key]
            norms = h.set_index(["run_id", "step"]).value
            y = norms.reindex(pd.MultiIndex.from_frame(c[["run_id", "step"]])).to_numpy()
            ax.scatter(c.step, y, s=6, marker="|", color="0.2")
        d = diverged if key is None else diverged[diverged[f.col] == key]
        pal = _palette(f.hue, h) or {}
        for _, r in d.iterrows():  # the step it diverged, and its norm off the top (inf)
            ax.axvline(r.diverged_step, color="red", lw=0.8, ls=":")
            ax.plot(
                r.diverged_step,
                1.0,
                "^",
                ms=5,
                transform=ax.get_xaxis_transform(),
                color=pal.get(r.get(f.hue), "0.3"),
                mec="red",
                mew=0.6,
                clip_on=False,
            )
    extra, events = {}, []
    if not clipped.empty:
        extra["clipped (grad/clipped = 1)"] = Line2D([], [], ls="", marker="|", color="0.2")
        events.append("| clipped")
    if len(diverged):
        extra["diverged at this step (▲)"] = Line2D(
            [], [], color="red", lw=0.8, ls=":", marker="^", mec="red", mfc="0.6"
        )
        events.append("red: diverged")
    _legend(g, extra)
    _label_every_panel(g, "training step", r"$\|\partial L/\partial\theta\|_2$ (before clipping)")
    _titles(g, f.col)
    what = f" ({', '.join(events)})" if events else ""
    g.figure.suptitle(f"Gradient norm over training, one line per run{what}", y=1.03)
    return _save(g, out, "4_grad_norm_over_training")


def spectrum_over_training(f: Frames, out: Path) -> list[Path]:
    h = f.history[f.history.key.isin(["weights/W_hh_radius", "weights/W_hh_sigma_max"])]
    h = _with_params(h, f, "model.activation").assign(
        quantity=lambda d: d.key.map(
            {
                "weights/W_hh_radius": "spectral radius ρ",
                "weights/W_hh_sigma_max": "largest singular value σ_max",
            }
        )
    )
    facet = "model.activation" if "model.activation" in h.columns else f.col
    hue = f.hue if f.hue != facet else f.col  # one line per length, not a median over them
    g = sns.relplot(
        data=h,
        x="step",
        y="value",
        hue=hue,
        hue_order=order(hue, h[hue]) if hue else None,
        style="quantity",
        col=facet,
        col_order=order(facet, h[facet]) if facet else None,
        kind="line",
        estimator="median",
        errorbar=("pi", 100),
        palette="viridis" if hue and pd.api.types.is_numeric_dtype(h[hue]) else None,
        height=WIDTH * 0.8,
        aspect=1.1,
        col_wrap=_wrap(f, h, facet),
        linewidth=1.1,
        facet_kws={"sharey": False},
    )
    for key, ax in _facet_axes(g, facet):
        crit = CRITICAL_SIGMA.get(key, 1.0) if facet == "model.activation" else 1.0
        ax.axhline(crit, color="red", lw=0.8, ls="--")
        ax.annotate(
            f"1/γ = {crit:g}",
            (0.02, crit),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="red",
            va="bottom",
        )
    _label_every_panel(g, "training step", r"$W_{hh}$ spectrum")
    _titles(g, facet)
    g.figure.suptitle(
        "W_hh spectrum over training (median over seeds, band: min–max; red: σ_max = 1/γ, "
        "Pascanu et al. 2013)",
        y=1.03,
    )
    return _save(g, out, "5_spectrum_over_training")


def slope_frame(f: Frames) -> pd.DataFrame:
    runs = f.drawn.melt(
        id_vars=[c for c in f.drawn.columns if c not in ("slope_init", "slope_final")],
        value_vars=["slope_init", "slope_final"],
        var_name="phase",
        value_name="slope",
    )
    return runs.assign(
        phase=runs.phase.map({"slope_init": "init", "slope_final": "end of training"})
    )


def slope_vs_swept(f: Frames, out: Path) -> list[Path]:
    data = slope_frame(f)
    x = f.col or f.hue or "name"
    hue = f.hue if f.hue != x else None
    g = sns.catplot(
        data=data,
        x=x,
        y="slope",
        order=order(x, data[x]),
        hue=hue,
        hue_order=order(hue, data[hue]) if hue else None,
        col="phase",
        col_order=["init", "end of training"],
        kind="strip",
        dodge=True,
        palette=_palette(hue, data),
        height=WIDTH * 0.8,
        aspect=1.1,
        size=4,
        jitter=0.15,
    )
    for ax in g.axes.flat:
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
    _label_every_panel(g, _label(x), r"slope of $\ln n_t$ vs $k$ (nats/step)")
    g.set_titles("{col_name}")
    g.figure.suptitle(
        "Gradient decay rate (< 0 vanishing, > 0 exploding), one point per seed", y=1.03
    )
    return _save(g, out, "6_slope_vs_swept")


def profile_heatmap_frame(f: Frames) -> pd.DataFrame:
    """log10 n_{T−k}/n_T over (training step, distance k) for each hue value at the longest
    length (first seed); ``log10_n`` is NaN where n underflowed to 0."""
    p = _with_params(f.profiles, f, "task.seq_len")
    if "task.seq_len" in p.columns and not p.empty:
        p = p[p["task.seq_len"] == p["task.seq_len"].max()]
    if "seed" in p.columns and not p.empty:
        p = p[p.seed == p.seed.min()]
    if not p.empty:  # one run per hue value (other swept keys: the first run by name)
        names = f.runs.set_index("run_id").name
        hue = f.hue or "run_id"
        keep = p.assign(_name=p.run_id.map(names)).groupby(hue)._name.min()
        p = p[p.run_id.map(names).isin(set(keep))]
    n = p.n_t.astype(float)
    ref = p[p.k == 0].set_index(["run_id", "step"]).n_t.astype(float)
    n_T = ref.reindex(pd.MultiIndex.from_frame(p[["run_id", "step"]])).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return p.assign(
            log10_n=np.log10(n.where(n > 0)), log10_ratio=np.log10(n.where(n > 0) / n_T)
        )


def profile_heatmaps(f: Frames, out: Path) -> list[Path]:
    """One shared, clipped colour scale: panels compare across activations."""
    p = profile_heatmap_frame(f)
    hue = f.hue or "run_id"
    keys = order(hue if f.hue else None, p[hue]) if not p.empty else []
    n = max(1, len(keys))
    fig, axes = plt.subplots(
        1, n, figsize=(WIDTH * 0.95 * n + 0.8, WIDTH * 0.95), squeeze=False, layout="constrained"
    )
    cmap = sns.color_palette("RdBu_r", as_cmap=True).with_extremes(bad="0.8")
    norm = Normalize(-DECADES, DECADES)
    clipped = underflow = False
    mesh = None
    names = f.runs.set_index("run_id").name
    for ax, key in zip(axes[0], keys, strict=False):
        d = p[p[hue] == key]
        mat = d.pivot(index="k", columns="step", values="log10_ratio").sort_index()
        values = mat.to_numpy()
        mesh = ax.pcolormesh(
            mat.columns,
            mat.index,
            np.clip(values, -DECADES, DECADES),
            cmap=cmap,
            norm=norm,
            shading="nearest",
        )
        out_of_range = np.isfinite(values) & (np.abs(values) > DECADES)
        if out_of_range.any():
            clipped = True
            ax.pcolor(
                mat.columns,
                mat.index,
                np.ma.masked_where(~out_of_range, np.ones_like(values)),
                hatch="///",
                facecolor="none",
                edgecolor="white",
                lw=0,
                shading="nearest",
            )
        underflow |= bool(np.isnan(values).any())
        ax.grid(False)
        ax.set_title(f"{key}\n{names.get(d.run_id.iloc[0], '')}", fontsize=7)
        ax.set_xlabel("training step")
        ax.set_ylabel("distance k")
    handles = []
    if clipped:
        handles.append(
            Patch(
                facecolor=cmap(0.0),
                edgecolor="white",
                hatch="///",
                label=rf"beyond $10^{{\pm {DECADES}}}$ (clipped)",
            )
        )
    if underflow:
        handles.append(Patch(facecolor="0.8", label="n underflowed to 0 (float32)"))
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            fontsize=7,
            frameon=False,
        )
    if mesh is not None:
        fig.colorbar(
            mesh,
            ax=axes[0].tolist(),
            pad=0.01,
            extend="both" if clipped else "neither",
            label=rf"$\log_{{10}}\, n_{{T-k}}/n_T$ (clipped to ±{DECADES})",
        )
    T = int(p["task.seq_len"].max()) if "task.seq_len" in p.columns and not p.empty else None
    fig.suptitle(
        f"Gradient profile over training{f' at T = {T}' if T else ''}, first seed: "
        "one colour scale for all panels (blue vanishing, red exploding)",
        fontsize=9,
    )
    return _save(fig, out, "7_profile_over_training")


def criticality_frame(f: Frames) -> pd.DataFrame:
    """Per run at init: gain, measured slope, mean-field slope, λ_max (long: one row per quantity)."""
    h = f.history[f.history.step == 0].pivot_table(index="run_id", columns="key", values="value")
    need = ["grad_h/slope", "theory/slope", "dyn/lyapunov_max"]
    if "model.gain" not in f.runs.columns or not set(need) <= set(h.columns):
        return pd.DataFrame(
            columns=["run_id", "model.gain", "model.activation", "quantity", "slope"]
        )
    wide = f.drawn[["run_id", "model.gain", "model.activation"]].merge(h.reset_index(), on="run_id")
    names = {
        "grad_h/slope": "measured slope",
        "theory/slope": "mean field ½ ln χ₁",
        "dyn/lyapunov_max": "λ_max (QR)",
    }
    long = wide.melt(
        id_vars=["run_id", "model.gain", "model.activation", "theory/q_in", "theory/bias_var"],
        value_vars=list(names),
        var_name="quantity",
        value_name="slope",
    )
    return long.assign(quantity=long.quantity.map(names))


def slope_vs_gain_with_theory(f: Frames, out: Path) -> list[Path] | None:
    """Measured slope at init against gain, the mean-field curve, λ_max, the critical gain."""
    from rnnlab import theory

    data = criticality_frame(f)
    if data.empty or data["model.gain"].nunique() < 2:
        return None  # needs a sweep over model.gain
    acts = order("model.activation", data["model.activation"])
    fig, axes = plt.subplots(
        1,
        len(acts),
        figsize=(WIDTH * 1.1 * len(acts), WIDTH * 0.9),
        squeeze=False,
        layout="constrained",
    )
    for ax, act in zip(axes[0], acts, strict=True):
        d = data[data["model.activation"] == act]
        measured = d[d.quantity == "measured slope"]
        lyap = d[d.quantity == "λ_max (QR)"]
        ax.scatter(
            measured["model.gain"],
            measured.slope,
            s=14,
            color=PALETTE.get(act),
            label="measured slope",
            zorder=3,
        )
        ax.scatter(
            lyap["model.gain"],
            lyap.slope,
            s=18,
            marker="x",
            color="0.25",
            label="λ_max (QR)",
            zorder=3,
        )
        q_in, b = float(d["theory/q_in"].median()), float(d["theory/bias_var"].median())
        gains = np.geomspace(d["model.gain"].min() * 0.9, d["model.gain"].max() * 1.1, 200)
        curve = [theory.mean_field(act, g, q_in, b).slope for g in gains]
        ax.plot(gains, curve, color="black", lw=1.2, label="mean field ½ ln χ₁")
        crit = theory.critical_gain(act, q_in, b)
        if np.isfinite(crit):
            ax.axvline(crit, color="red", lw=0.8, ls="--")
            ax.annotate(
                f"edge g = {crit:.3g}",
                (crit, 0.02),
                xycoords=("data", "axes fraction"),
                color="red",
                fontsize=7,
                rotation=90,
                ha="right",
                va="bottom",
            )
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("gain g (σ_w)")
        ax.set_ylabel("nats per step")
        ax.set_title(act, fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("Gradient slope at init vs gain: measurement, mean-field theory and λ_max")
    return _save(fig, out, "8_slope_vs_gain_theory")


FIGURES = [
    (
        gradient_profile_vs_distance,
        "Gradient norm against distance at init and after training: "
        "vanishing curves fall, exploding ones rise.",
    ),
    (
        trainability_map,
        "Final eval loss relative to the input-ignoring baseline; blue learned, red did not.",
    ),
    (learning_curves, "Eval loss ratio over training; the dashed line is chance."),
    (grad_norm_over_training, "Global gradient norm per run; spikes are exploding gradients."),
    (
        spectrum_over_training,
        "Spectral radius and largest singular value of W_hh; red: the vanishing bound 1/γ.",
    ),
    (slope_vs_swept, "Measured decay rate of the gradient profile, one point per seed."),
    (profile_heatmaps, "The whole gradient profile over training (first seed, longest sequence)."),
    (
        slope_vs_gain_with_theory,
        "Measured slope at init against gain beside the mean-field "
        "prediction ½ ln χ₁ and the largest Lyapunov exponent; red: the edge of chaos (χ₁ = 1).",
    ),
]


def run_profile_figure(profiles: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One run's gradient profile at init and at the end (from its tidy profile table)."""
    fig, ax = plt.subplots(figsize=(4.0, 2.6))
    fig.subplots_adjust(left=0.19, right=0.97, bottom=0.17, top=0.9)  # fixed: layout engines
    # cost more than the drawing, once per run in the sweep's writer
    first, last = profiles.step.min(), profiles.step.max()
    for step, label, style in (
        (first, f"init (step {first})", "-"),
        (last, f"end (step {last})", "--"),
    ):
        p = profiles[(profiles.step == step) & (profiles.n_t > 0) & np.isfinite(profiles.n_t)]
        ax.plot(p.k, p.n_t, style, lw=1.3, label=label)
    ax.set_yscale("log")
    # Plain-text labels: parsing mathtext (log tick labels included) costs 60 ms a figure, and
    # this one is drawn for every run, in the sweep's writer.
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
    ax.set_xlabel("distance k = T − t")
    ax.set_ylabel("n = ‖∂L/∂h_t‖")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------- report
def condition_table(f: Frames) -> pd.DataFrame:
    """One row per condition (every swept key but the seed), medians over seeds with their
    spread: numeric columns, sorted by value (T numerically, activations in their order)."""
    keys = _condition_keys(f)
    runs = f.runs
    if runs.empty:
        return pd.DataFrame(columns=[*keys, "runs"])
    groups = runs.groupby(keys, dropna=False, sort=False) if keys else [((), runs)]
    rows = []
    for values, g in groups:
        values = values if isinstance(values, tuple) else (values,)
        row = dict(zip(keys, values, strict=True))
        row["runs"] = len(g)
        row["diverged"] = int((g.status == "diverged").sum())
        row["not finished"] = int((~g.status.isin(["finished", "diverged"])).sum())
        for col in ("final_loss_ratio", "slope_init", "slope_final"):
            v = g[col].astype(float) if col in g.columns else pd.Series(dtype=float)
            row[f"{col} median"] = v.median()
            row[f"{col} min"] = v.min()
            row[f"{col} max"] = v.max()
        rows.append(row)
    return _sorted(pd.DataFrame(rows), keys)


def run_table(f: Frames) -> pd.DataFrame:
    """One row per run: the swept keys as typed columns, then the results; sorted by value."""
    keys = [*_condition_keys(f), *(["seed"] if "seed" in f.swept else [])]
    cols = [
        *keys,
        "status",
        "final_loss_ratio",
        "slope_init",
        "slope_final",
        "diverged_step",
        "name",
    ]
    runs = f.runs.reindex(columns=cols)
    return _sorted(runs, keys)


def _condition_keys(f: Frames) -> list[str]:
    rest = [k for k in f.swept if k not in ("seed", f.col, f.hue)]
    return [k for k in (f.col, f.hue) if k] + rest


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    if frame.empty or not keys:
        return frame.reset_index(drop=True)
    rank = {k: {v: i for i, v in enumerate(order(k, frame[k]))} for k in keys}
    sort = pd.DataFrame({k: frame[k].map(rank[k]) for k in keys})
    return frame.loc[sort.sort_values(keys).index].reset_index(drop=True)


def _head(key: str) -> str:
    return {
        "task.seq_len": "T",
        "model.activation": "activation",
        "final_loss_ratio": "loss ratio",
        "slope_init": "slope at init",
        "slope_final": "slope at end",
        "diverged_step": "diverged at step",
    }.get(key, key)


def _condition_rows(t: pd.DataFrame, keys: list[str]) -> tuple[list[str], list[list[str]]]:
    head = [*(_head(k) for k in keys), "runs", "diverged"]
    stats = ("final_loss_ratio", "slope_init", "slope_final")
    head += [f"{_head(s)}: median [min … max]" for s in stats]
    rows = []
    for r in t.to_dict("records"):
        cells = [_fmt(r[k]) for k in keys] + [str(r["runs"]), str(r["diverged"])]
        for s in stats:
            med, lo, hi = r[f"{s} median"], r[f"{s} min"], r[f"{s} max"]
            cells.append("" if not np.isfinite(med) else f"{_fmt(med)} [{_fmt(lo)} … {_fmt(hi)}]")
        rows.append(cells)
    return head, rows


def _summary(f: Frames) -> list[str]:
    """The report's opening paragraphs: what is drawn, and what is not."""
    counts = ", ".join(f"{n} {s}" for s, n in f.runs.status.value_counts().items()) or "no runs"
    swept = ", ".join(f"{SHORT.get(k, k)} ({f.runs[k].nunique()})" for k in f.swept) or "nothing"
    out = [f"**Drawn:** {f.selection}. {len(f.runs)} runs ({counts}). Swept: {swept}."]
    if not f.others.empty:
        keys = sorted(
            {d.split("=")[0] for ds in f.others.differs for d in ds.split(", ") if "=" in d}
        )
        fixed = [
            f"{k}={f.runs[k].iloc[0]}"
            for k in keys
            if k in f.runs.columns and f.runs[k].astype(str).nunique() == 1
        ]
        here = f" The drawn runs have {', '.join(fixed)}." if fixed else ""
        out.append(
            f"**Not drawn:** {len(f.others)} other runs in experiment '{f.experiment}' "
            f"(`rnnlab report --all` draws every run, `--where key=value` selects some).{here}"
        )
    hidden = f.runs[~f.runs.status.isin(["finished", "diverged"])]
    if len(hidden):
        out.append(
            f"**Listed, not drawn** ({len(hidden)} runs that did not finish): "
            + ", ".join(f"{r.name} ({r.status})" for r in hidden.itertuples())
        )
    if f.missing:
        shown = ", ".join(f.missing[:6]) + (", …" if len(f.missing) > 6 else "")
        out.append(
            f"**Missing:** {len(f.missing)} grid points have no run yet ({shown}); "
            "`rnnlab sweep` the file to add them."
        )
    return out


def _others_rows(f: Frames) -> tuple[list[str], list[list[str]]]:
    head = ["differs from the drawn grid in", "runs", "status", "logged by", "e.g."]
    rows = []
    for differs, g in f.others.groupby("differs", sort=True):
        status = ", ".join(f"{n} {s}" for s, n in g.status.value_counts().items())
        rows.append([differs, str(len(g)), status, ", ".join(sorted(set(g.sweep))), g.name.iloc[0]])
    return head, rows


def report(f: Frames, out: Path) -> Path:
    """Every figure (PNG and PDF), report.md and report.html; returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    blocks: list[tuple] = [("h1", f.experiment)]
    blocks += [("p", text) for text in _summary(f)]
    if not f.drawn.empty:
        for fn, caption in FIGURES:
            paths = fn(f, out)
            if paths is None:  # a figure this experiment's sweep cannot show (e.g. no gain axis)
                continue
            blocks.append(("figure", paths[0].name, caption))
    else:
        blocks.append(("p", "Nothing to draw: no selected run finished."))
    keys = _condition_keys(f)
    if not f.runs.empty:
        blocks += [
            ("h2", "Per condition (median over seeds, [min … max])"),
            ("table", *_condition_rows(condition_table(f), keys)),
        ]
        runs = run_table(f)
        blocks += [
            ("h2", "Per run"),
            (
                "table",
                [_head(c) for c in runs.columns],
                [[_fmt(v) for v in r] for r in runs.itertuples(index=False)],
            ),
        ]
    if not f.others.empty:
        blocks += [("h2", "Other runs in this experiment (not drawn)"), ("table", *_others_rows(f))]
    (out / "report.html").write_text(_html(f, blocks, out))
    path = out / "report.md"
    path.write_text(_markdown(blocks))
    return path


def _markdown(blocks: list[tuple], image_url=lambda name: name) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind == "h1":
            lines += [f"# {rest[0]}", ""]
        elif kind == "h2":
            lines += [f"## {rest[0]}", ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "figure":
            name, caption = rest
            lines += [f"![{caption}]({image_url(name)})", "", f"*{caption}*", ""]
        elif kind == "table":
            head, rows = rest
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
img{max-width:100%;height:auto;display:block;margin:1em auto 0}figure{margin:1.5em 0}
figcaption{font-style:italic;text-align:center;color:#555}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f3f3f3}
td:last-child{text-align:left}code{background:#f3f3f3;padding:0 3px}"""


def _html(f: Frames, blocks: list[tuple], out: Path) -> str:
    """A self-contained page (figures embedded as data URIs): MLflow's artifact view
    renders it inline, and it opens from disk without its folder."""

    def inline(text: str) -> str:  # the little markdown the summary uses: **bold**, `code`
        parts = html.escape(text).split("**")
        text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
        parts = text.split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{inline(rest[0])}</p>")
        elif kind == "figure":
            name, caption = rest
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        elif kind == "table":
            head, rows = rest
            body.append(
                "<table><thead><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                + "</tr></thead><tbody>"
                + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                + "</tbody></table>"
            )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(f.experiment)}: rnnlab report</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def ui_base(tracking_uri: str) -> str:
    """Where the UI serves this store: the tracking server, else `make ui`'s address."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def log_to_parent(tracking_uri: str, f: Frames, out: Path, ui: str | None = None) -> bool:
    """Attach the report to the sweep run of the drawn grid, so the UI shows it: the
    figures, report.html (rendered inline by the artifact view, figures embedded) and a
    report.md whose images are the run's own artifacts as served by the UI at ``ui``
    (MLflow's markdown view shows only absolute http(s) images)."""
    if f.parent_run_id is None:
        return False
    client = MlflowClient(tracking_uri)
    client.log_artifacts(f.parent_run_id, str(out), "report")
    md = (out / "report.md").read_text()
    base = (ui or ui_base(tracking_uri)).rstrip("/")
    for png in out.glob("*.png"):  # ![caption](x.png) → the artifact URL the UI serves
        url = f"{base}/get-artifact?path=report%2F{png.name}&run_uuid={f.parent_run_id}"
        md = md.replace(f"]({png.name})", f"]({url})")
    client.log_text(f.parent_run_id, md, "report/report.md")
    return True
