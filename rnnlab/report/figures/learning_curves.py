"""Figure 3: eval loss ÷ baseline over training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from rnnlab.measure import names
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames
from rnnlab.report.plotting import (
    WIDTH,
    _label_every_panel,
    _save,
    _titles,
    _with_params,
    _wrap,
    order,
)


@figure(3, "Eval loss ratio over training; the dashed line is chance.")
def learning_curves(f: Frames, out: Path) -> list[Path]:
    h = _with_params(f.history[f.history.key == names.EVAL_LOSS_RATIO], f)
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
