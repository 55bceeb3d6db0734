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
colour everywhere (:mod:`rnnlab.model.activations`); legends list only what occurred.

Layout: ``frames`` (loading and selection), ``plotting`` (what every figure shares), one
module per figure (``profile_vs_distance``, ``trainability``, ``learning_curves``,
``grad_norm``, ``spectrum``, ``slope``, ``profile_over_training``, ``slope_vs_gain``, and
``run_profile`` for each run's profile.png), ``document`` (report.md, report.html, the copy
on the sweep run). A new figure is one module plus one entry in ``document.FIGURES``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

from rnnlab.report.document import (
    FIGURES,
    condition_table,
    log_to_parent,
    report,
    run_table,
    ui_base,
)
from rnnlab.report.load import Frames, experiments, load, parse_where
from rnnlab.report.plotting import DECADES, PALETTE, RATIO_RANGE, order, sci
from rnnlab.report.profile_over_training import profile_heatmap_frame
from rnnlab.report.profile_vs_distance import profile_frame, profile_marks
from rnnlab.report.run_profile import run_profile_figure
from rnnlab.report.slope import slope_frame
from rnnlab.report.slope_vs_gain import criticality_frame
from rnnlab.report.trainability import trainability_frame

__all__ = [
    "DECADES",
    "FIGURES",
    "PALETTE",
    "RATIO_RANGE",
    "Frames",
    "condition_table",
    "criticality_frame",
    "experiments",
    "load",
    "log_to_parent",
    "order",
    "parse_where",
    "profile_frame",
    "profile_heatmap_frame",
    "profile_marks",
    "report",
    "run_profile_figure",
    "run_table",
    "sci",
    "slope_frame",
    "trainability_frame",
    "ui_base",
]
