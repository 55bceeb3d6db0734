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

Layout: ``load`` (loading and selection; :func:`load_results`, the frames for a notebook),
``plotting`` (what every figure shares), ``figures/`` (one module per figure, registered by
its ``@figure`` decorator: a new figure is one new file; each run's profile.png is drawn by
the sweep's workers, ``rnnlab.run.profile_png``), ``document`` (report.md, report.html, the copy on the sweep run).

Importing this package imports ``load`` (pandas, MLflow) and no plotting: the other names
below are imported on first use, so ``rnnlab.load_results`` in a notebook leaves matplotlib
and its backend alone.
"""

from __future__ import annotations

from rnnlab import lazy_exports
from rnnlab.report.load import Frames, experiments, load, load_results, parse_where

_LAZY = {  # name → module: these import matplotlib (and seaborn), so only on first use
    "condition_table": "rnnlab.report.document",
    "log_to_parent": "rnnlab.report.document",
    "report": "rnnlab.report.document",
    "run_table": "rnnlab.report.document",
    "DECADES": "rnnlab.report.plotting",
    "PALETTE": "rnnlab.report.plotting",
    "RATIO_RANGE": "rnnlab.report.plotting",
    "order": "rnnlab.report.plotting",
    "sci": "rnnlab.report.plotting",
    "profile_heatmap_frame": "rnnlab.report.figures.profile_over_training",
    "profile_frame": "rnnlab.report.figures.profile_vs_distance",
    "profile_marks": "rnnlab.report.figures.profile_vs_distance",
    "slope_frame": "rnnlab.report.figures.slope",
    "criticality_frame": "rnnlab.report.figures.slope_vs_gain",
    "trainability_frame": "rnnlab.report.figures.trainability",
    "ui_base": "rnnlab.ui",
}
__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = ["Frames", "experiments", "load", "load_results", "parse_where", *sorted(_LAZY)]
