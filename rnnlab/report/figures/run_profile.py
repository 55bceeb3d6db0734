"""One run's profile at init and at the end: the profile.png every run carries in MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import matplotlib

matplotlib.use("Agg")  # files only, drawn by the sweep's workers; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import LogFormatter


def run_profile_figure(profiles: pd.DataFrame, path: Path | BinaryIO, title: str = "") -> None:
    """One run's gradient profile at init and at the end (from its tidy profile table), as a
    PNG written to ``path`` (a file name or a binary buffer)."""
    fig, ax = plt.subplots(figsize=(4.0, 2.6))
    fig.subplots_adjust(left=0.19, right=0.97, bottom=0.17, top=0.9)  # fixed: layout engines
    # cost more than the drawing, once per run
    first, last = profiles.step.min(), profiles.step.max()
    for step, label, style in (
        (first, f"init (step {first})", "-"),
        (last, f"end (step {last})", "--"),
    ):
        p = profiles[(profiles.step == step) & (profiles.n_t > 0) & np.isfinite(profiles.n_t)]
        ax.plot(p.k, p.n_t, style, lw=1.3, label=label)
    ax.set_yscale("log")
    # Plain-text labels: parsing mathtext (log tick labels included) costs 60 ms a figure, and
    # this one is drawn for every run.
    ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
    ax.set_xlabel("distance k = T − t")
    ax.set_ylabel("n = ‖∂L/∂h_t‖")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
