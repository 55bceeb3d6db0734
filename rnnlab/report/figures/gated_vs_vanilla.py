"""Figure 16: the gated cells beside the vanilla RNN — ‖∂L/∂h_{T−k}‖ (and the LSTM's
‖∂L/∂c_{T−k}‖) relative to the last step against distance k, at the longest length."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames

HIDDEN, CELL_STATE = "‖∂L/∂h‖", "‖∂L/∂c‖ (LSTM cell state)"


def gated_frame(f: Frames) -> pd.DataFrame:
    """n_{T−k}/n_T of h_t (every cell) and c_t (the LSTM's ``grad_c`` table) at each run's
    first and last probe, for the runs at the longest sequence length a gated cell ran, with a ``gradient``
    column naming which (zeros and non-finite ratios included: the figure counts them)."""
    cols = ["run_id", "k", "phase", "ratio", "gradient", "model.cell"]
    if "model.cell" not in f.runs.columns or set(f.drawn["model.cell"]) <= {"elman"}:
        return pd.DataFrame(columns=cols)
    parts = [plot.relative_profiles(f.profiles, f).assign(gradient=HIDDEN)]
    c = f.tables.get(names.TABLE_GRAD_C)
    if c is not None and not c.empty:
        parts.append(plot.relative_profiles(c, f).assign(gradient=CELL_STATE))
    data = pd.concat(parts, ignore_index=True)
    more = [k for k in ("model.cell", "task.seq_len") if k not in data.columns]
    data = data.merge(f.runs[["run_id", *more]], on="run_id")
    longest = data.loc[data["model.cell"] != "elman", "task.seq_len"].max()  # with a gated run
    return data[data["task.seq_len"] == longest]


@figure(
    16,
    "Gated cells beside the vanilla RNN at the longest sequence length: the hidden-state "
    "gradient ‖∂L/∂h_{T−k}‖ (solid) and the LSTM's cell-state gradient ‖∂L/∂c_{T−k}‖ "
    "(dashed), relative to the last step, at initialisation and after training.",
)
def gated_vs_vanilla(f: Frames, out: Path) -> list[Path] | None:
    data, left_out = plot.drawable_ratios(gated_frame(f))
    if data.empty:
        return None  # no gated cell in this experiment, or nothing finite
    other = f.col if f.col not in (None, "task.seq_len", "model.cell") else None
    hue = "unit" if f.hue == "unit" else "model.cell"  # unit: activations apart, see load.py
    g = sns.relplot(
        data=data,
        x="k",
        y="ratio",
        hue=hue,
        hue_order=plot.order(hue, data[hue]),
        style="gradient",
        style_order=[s for s in (HIDDEN, CELL_STATE) if s in set(data.gradient)],
        col="phase",
        col_order=[p for p in ("init", "end of training") if p in set(data.phase)],
        row=other,
        row_order=plot.order(other, data[other]) if other else None,
        kind="line",
        estimator="median",
        errorbar=("pi", 100),
        palette=plot.palette(hue, data),
        height=plot.WIDTH * 0.8,
        aspect=1.2,
        facet_kws={"sharex": True, "sharey": True},
        linewidth=1.2,
    )
    g.set(yscale="log")
    for key, ax in g.axes_dict.items():
        phase, value = key if isinstance(key, tuple) else (key, None)
        if other:
            phase, value = value, phase  # seaborn keys (row, col)
        ax.axhline(1.0, color="0.3", lw=0.8, ls=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # distances are whole steps
        ax.set_title(f"{phase}, {plot.panel(other, value)}" if other else phase)
    plot.legend(g, left_out)
    plot.label_every_panel(g, "distance k = T − t (steps back)", r"$n_{T-k}\,/\,n_T$")
    T = int(data["task.seq_len"].max())
    g.figure.suptitle(
        f"Gated vs vanilla at T = {T}: gradient norm against distance "
        "(median over seeds, band: min–max)",
        y=1.04,
    )
    return plot.save(g, out, "16_gated_vs_vanilla")
