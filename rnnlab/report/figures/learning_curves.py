"""Figure 3: eval loss ÷ baseline over training."""

from __future__ import annotations

from pathlib import Path

from rnnlab.measure import names
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames


@figure(3, "Eval loss ratio over training; the dashed line is chance.")
def learning_curves(f: Frames, out: Path) -> list[Path]:
    h = plot.with_params(f.history[f.history.key == names.EVAL_LOSS_RATIO], f)
    facet, hue = f.hue, f.col
    g = plot.over_training(h, f, hue, facet, linewidth=1.2)
    g.set(yscale="log")
    for ax in g.axes.flat:
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    plot.label_every_panel(g, "training step", "eval loss / baseline")
    plot.titles(g, facet)
    g.figure.suptitle(
        "Learning curves (median over seeds, band: min–max; dashed: input-ignoring baseline)",
        y=1.03,
    )
    return plot.save(g, out, "3_learning_curves")
