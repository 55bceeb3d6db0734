"""Report figures: vanishing and exploding gradients as papers show them, from the MLflow store.

One loading layer turns an experiment's runs into tidy DataFrames (:func:`load`); each figure
is one function that reads only those frames, so figures are testable offline:

  runs      one row per grid point: run_id, name, status, diverged_step, every param
            (typed), final eval/loss_ratio, slope at init and at the end
  history   one row per (run, metric, step) for the metrics plotted over training
  profiles  one row per (run, training step, time step t): k = L − t, n_t

Facets and hues come from the keys the experiment swept (params that vary across runs): hue
is the activation when it varies, columns the sequence length (else gain, init, …). Seeds are
aggregated into bands. Diverged runs are drawn and marked; failed and killed runs are listed
in the report, not drawn.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import LogFormatter
from mlflow.tracking import MlflowClient

from rnnlab.config import ConfigError

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
# One colour per activation, shared by every figure.
_CB = sns.color_palette("colorblind")
PALETTE = {
    "tanh": _CB[0],
    "relu": _CB[1],
    "sigmoid": _CB[2],
    "linear": _CB[4],
    "leaky_relu": _CB[3],
    "hardtanh": _CB[5],
}
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
    "seed": "seed",
}
NOT_FACETS = {"seed", "run_id", "name", "status"}
WIDTH = 3.4  # inches: one column of a two-column paper


@dataclass
class Frames:
    experiment: str
    runs: pd.DataFrame
    history: pd.DataFrame
    profiles: pd.DataFrame
    swept: list[str]
    parent_run_id: str | None = None

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


def load(tracking_uri: str, experiment: str) -> Frames:
    """The tidy frames of one experiment (ConfigError if it does not exist or has no runs)."""
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # one bar per file otherwise
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        known = ", ".join(experiments(tracking_uri)) or "none"
        raise ConfigError(
            [f"no experiment {experiment!r} in {tracking_uri} (experiments: {known})"]
        )
    all_runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        all_runs += list(page)
        token = page.token
        if not token:
            break
    grid = [r for r in all_runs if "rnnlab.run_key" in r.data.tags]
    if not grid:
        raise ConfigError(
            [f"experiment {experiment!r} has no rnnlab runs yet; run `rnnlab sweep` first"]
        )
    parents = sorted(
        (r for r in all_runs if r.data.tags.get("rnnlab.role") == "sweep"),
        key=lambda r: r.info.start_time,
    )
    rank = {"finished": 0, "diverged": 0, "failed": 1, "killed": 1, "running": 2}
    latest: dict[str, object] = {}
    for r in sorted(
        grid, key=lambda r: (-rank.get(r.data.tags.get("rnnlab.status", ""), 3), r.info.start_time)
    ):
        latest[r.data.tags["rnnlab.run_key"]] = r  # best status wins, then the newest
    rows, history, profiles = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in latest.values():
            tags, rid = r.data.tags, r.info.run_id
            row = {
                "run_id": rid,
                "name": r.info.run_name,
                "status": tags.get("rnnlab.status", "?"),
                "diverged_step": float(tags.get("rnnlab.diverged_step", "nan")),
            }
            row |= {k: _typed(v) for k, v in r.data.params.items()}
            row["final_loss_ratio"] = r.data.metrics.get("eval/loss_ratio", math.nan)
            rows.append(row)
            if row["status"] not in ("finished", "diverged"):
                continue
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
    runs = pd.DataFrame(rows)
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
    return Frames(
        experiment, runs, history, profiles, swept, parents[-1].info.run_id if parents else None
    )


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


def _palette(f: Frames, data: pd.DataFrame) -> dict | None:
    if f.hue == "model.activation":
        return {a: PALETTE[a] for a in data[f.hue].unique() if a in PALETTE}
    return None


def _label(key: str | None) -> str:
    return LABELS.get(key, key or "")


def _save(fig_or_grid, out: Path, name: str) -> list[Path]:
    fig = getattr(fig_or_grid, "figure", fig_or_grid)
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        for text in legend.get_texts() if legend else []:  # "model.activation" → "activation"
            text.set_text(LABELS.get(text.get_text(), text.get_text()))
        if legend and legend.get_title().get_text():
            legend.get_title().set_text(_label(legend.get_title().get_text()))
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


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


def gradient_profile_vs_distance(f: Frames, out: Path) -> list[Path]:
    data = profile_frame(f)
    shown = data[np.isfinite(data.ratio) & (data.ratio > 0)]
    g = sns.relplot(
        data=shown,
        x="k",
        y="ratio",
        hue=f.hue,
        style="phase",
        col=f.col,
        kind="line",
        errorbar=("pi", 100),
        palette=_palette(f, shown),
        col_wrap=_wrap(f, shown),
        height=WIDTH * 0.8,
        aspect=1.1,
        facet_kws={"sharex": False},
        linewidth=1.2,
    )
    g.set(yscale="log")
    g.set_axis_labels("distance k = T − t (steps back)", r"$n_{T-k}\,/\,n_T$")
    _titles(g, f)
    g.figure.suptitle("Gradient norm ‖∂L/∂h_t‖ vs distance (band: seeds)", y=1.02)
    return _save(g, out, "1_profile_vs_distance")


def trainability_frame(f: Frames) -> pd.DataFrame:
    """Median final eval/loss_ratio over seeds, one cell per (hue, col) grid point."""
    runs = f.drawn
    rows, cols = f.hue or "name", f.col or "experiment"
    data = runs.assign(experiment=f.experiment)
    cell = data.groupby([rows, cols]).agg(
        ratio=("final_loss_ratio", "median"), diverged=("status", lambda s: (s == "diverged").sum())
    )
    return cell.reset_index()


def trainability_map(f: Frames, out: Path) -> list[Path]:
    cell = trainability_frame(f)
    rows, cols = f.hue or "name", f.col or "experiment"
    ratio = cell.pivot(index=rows, columns=cols, values="ratio")
    div = cell.pivot(index=rows, columns=cols, values="diverged")
    log = np.log10(ratio.astype(float).clip(lower=1e-12))
    lim = max(
        1.0, float(np.nanmax(np.abs(log.to_numpy()))) if np.isfinite(log.to_numpy()).any() else 1.0
    )
    annot = ratio.map(lambda v: "n/a" if not np.isfinite(v) else (f"{v:.2g}"))
    annot = annot.where(div.fillna(0) == 0, annot + "\n(div)")
    fig, ax = plt.subplots(figsize=(WIDTH * 1.3, max(2.0, 0.45 * len(ratio) + 1.2)))
    sns.heatmap(
        log,
        annot=annot,
        fmt="",
        cmap="RdBu_r",
        norm=TwoSlopeNorm(0, -lim, lim),
        ax=ax,
        cbar_kws={"label": r"$\log_{10}$ eval loss / baseline"},
        annot_kws={"fontsize": 7},
    )
    ax.set_xlabel(_label(cols))
    ax.set_ylabel(_label(rows))
    ax.set_title(
        "Trainability: final eval loss ÷ baseline\n(median over seeds; < 1 learned, 1 = chance)"
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
        col=facet,
        kind="line",
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
    g.set_axis_labels("training step", "eval loss / baseline")
    _titles(g, f, facet)
    g.figure.suptitle("Learning curves (dashed: input-ignoring baseline)", y=1.02)
    return _save(g, out, "3_learning_curves")


def grad_norm_over_training(f: Frames, out: Path) -> list[Path]:
    h = _with_params(f.history[f.history.key == "grad/norm"], f)
    h = h.assign(value=h.value.clip(upper=1e300))  # +inf (stored as 1.8e308) drawn at the top
    g = sns.relplot(
        data=h,
        x="step",
        y="value",
        hue=f.hue,
        col=f.col,
        units="run_id",
        estimator=None,
        kind="line",
        palette=_palette(f, h),
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
            ax.scatter(c.step, y, s=6, marker="|", color="0.2", label="clipped")
        d = diverged if key is None else diverged[diverged[f.col] == key]
        for _, r in d.iterrows():
            ax.axvline(r.diverged_step, color="red", lw=0.8, ls=":")
    g.set_axis_labels("training step", r"$\|\partial L/\partial\theta\|_2$ (before clipping)")
    _titles(g, f)
    g.figure.suptitle("Gradient norm over training (| clipped, red: diverged)", y=1.02)
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
    g = sns.relplot(
        data=h,
        x="step",
        y="value",
        hue=f.hue if f.hue != facet else None,
        style="quantity",
        col=facet,
        kind="line",
        errorbar=("pi", 100),
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
    g.set_axis_labels("training step", r"$W_{hh}$ spectrum")
    _titles(g, f, facet)
    g.figure.suptitle("W_hh spectrum over training (red: σ_max = 1/γ, Pascanu et al. 2013)", y=1.02)
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
    g = sns.catplot(
        data=data,
        x=x,
        y="slope",
        hue=f.hue if f.hue != x else None,
        col="phase",
        kind="strip",
        dodge=True,
        palette=_palette(f, data) if f.hue != x else None,
        height=WIDTH * 0.8,
        aspect=1.1,
        size=4,
        jitter=0.15,
    )
    for ax in g.axes.flat:
        ax.axhline(0, color="0.3", lw=0.8, ls="--")
    g.set_axis_labels(_label(x), r"slope of $\ln n_t$ vs $k$ (nats/step)")
    g.set_titles("{col_name}")
    g.figure.suptitle(
        "Gradient decay rate (< 0 vanishing, > 0 exploding), one point per seed", y=1.03
    )
    return _save(g, out, "6_slope_vs_swept")


def profile_heatmap_frame(f: Frames) -> pd.DataFrame:
    """log10 n over (training step, distance k) for each hue value at the longest length."""
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
    return p.assign(log10_n=np.log10(p.n_t.astype(float).where(p.n_t > 0)))


def profile_heatmaps(f: Frames, out: Path) -> list[Path]:
    p = profile_heatmap_frame(f)
    hue = f.hue or "run_id"
    keys = list(dict.fromkeys(p[hue])) if not p.empty else []
    n = max(1, len(keys))
    fig, axes = plt.subplots(
        1, n, figsize=(WIDTH * 1.05 * n, WIDTH * 0.95), squeeze=False, layout="constrained"
    )
    for ax, key in zip(axes[0], keys, strict=False):
        mat = p[p[hue] == key].pivot(index="k", columns="step", values="log10_n").sort_index()
        mesh = ax.pcolormesh(
            mat.columns, mat.index, mat.to_numpy(), cmap="magma", shading="nearest"
        )
        fig.colorbar(mesh, ax=ax, label=r"$\log_{10} n_{T-k}$", pad=0.02)
        ax.grid(False)
        ax.set_facecolor("white")  # underflow (n = 0) and missing steps stay white
        names = f.runs.set_index("run_id").name
        ax.set_title(names.get(p[p[hue] == key].run_id.iloc[0], str(key)), fontsize=7)
        ax.set_xlabel("training step")
        ax.set_ylabel("distance k")
    T = int(p["task.seq_len"].max()) if "task.seq_len" in p.columns and not p.empty else None
    fig.suptitle(
        f"Gradient profile over training{f' at T = {T}' if T else ''} (white: underflow to 0)"
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
    acts = list(dict.fromkeys(data["model.activation"]))
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


def _wrap(f: Frames, data: pd.DataFrame, facet: str | None = "col") -> int | None:
    key = f.col if facet == "col" else facet
    n = data[key].nunique() if key and key in data.columns else 1
    return min(n, 4) if n > 1 else None


def _facet_axes(g, key):
    if key is None or key not in g.data.columns:
        return [(None, ax) for ax in g.axes.flat]
    return list(g.axes_dict.items()) if g.axes_dict else [(None, ax) for ax in g.axes.flat]


def _titles(g, f: Frames, key: str | None = "col") -> None:
    key = f.col if key == "col" else key
    if key:
        g.set_titles(f"{_label(key).split(' ')[-1]} = {{col_name}}")


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
def report(f: Frames, out: Path) -> Path:
    """Every figure (PNG and PDF) plus report.md; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    lines = [
        f"# {f.experiment}",
        "",
        f"{len(f.runs)} grid points: "
        + ", ".join(f"{n} {s}" for s, n in f.runs.status.value_counts().items())
        + f". Swept: {', '.join(f.swept) or 'nothing'}.",
        "",
    ]
    hidden = f.runs[~f.runs.status.isin(["finished", "diverged"])]
    if len(hidden):
        lines += [
            f"Not drawn ({len(hidden)} runs that did not finish): "
            + ", ".join(f"{r.name} ({r.status})" for r in hidden.itertuples()),
            "",
        ]
    for fn, caption in FIGURES:
        paths = fn(f, out)
        if paths is None:  # a figure this experiment's sweep cannot show (e.g. no gain axis)
            continue
        lines += [f"![{caption}]({paths[0].name})", "", f"*{caption}*", ""]
    lines += ["## Final metrics per grid point", "", _markdown(f.runs), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _markdown(runs: pd.DataFrame) -> str:
    cols = ["name", "status", "final_loss_ratio", "slope_init", "slope_final", "diverged_step"]
    table = runs[cols].sort_values("name")
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table.itertuples(index=False):
        rows.append("| " + " | ".join(_fmt(v) for v in r) + " |")
    return "\n".join(rows)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def log_to_parent(tracking_uri: str, f: Frames, out: Path) -> bool:
    """Attach the figures to the experiment's latest sweep run, so the UI shows them."""
    if f.parent_run_id is None:
        return False
    MlflowClient(tracking_uri).log_artifacts(f.parent_run_id, str(out), "report")
    return True
