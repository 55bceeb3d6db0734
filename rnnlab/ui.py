"""The decay curves in the MLflow UI in one click: a saved chart view and its link.

MLflow 3's runs page can open a *shared view*: the experiment tag
``mlflow.sharedViewState.<key>`` holds the page's state as JSON (charts, their scales,
which runs are shown), and ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens it.
rnnlab stores one such view per experiment, :data:`VIEW_KEY`, with

- the grid-point runs only (the filter hides the sweep's parent runs, so no run is
  collapsed under one), every run charted (MLflow charts the first 10 by default);
- ``grad_h/init_log10`` and ``grad_h/final_log10``: log10 n_{T−k}/n_T against the
  distance k (MLflow's "Step"), on the default linear axis, where vanishing and exploding
  profiles are straight lines, falling and rising;
- ``grad_h/init`` and ``grad_h/final`` on a log axis, the same curves unnormalised;
- each run coloured by its activation, a gated run by its cell (run tag
  ``mlflow.runColor``, set by the tracker), the colours of the report's figures.

The format is the UI's own (``mlflow/server/js``: the keys of ``sharedViewState`` and the
line-chart card's fields); a UI that does not know a field ignores it.
"""

from __future__ import annotations

import json

from rnnlab.measure import names

VIEW_KEY = "rnnlab-decay"
TAG = names.mlflow_shared_view(VIEW_KEY)
SECTION = "rnnlab-decay-section"

CHARTS = [  # (metric, y scale, title)
    (
        names.PROFILE_INIT_LOG10,
        "linear",
        "At init: log10 n(T−k)/n(T) against distance k (x axis: Step = k)",
    ),
    (
        names.PROFILE_FINAL_LOG10,
        "linear",
        "After training: log10 n(T−k)/n(T) against distance k (Step = k)",
    ),
    (names.PROFILE_INIT, "log", "At init: n(T−k) = ‖∂L/∂h‖ against distance k (Step = k), log y"),
    (names.PROFILE_FINAL, "log", "After training: n(T−k) against distance k (Step = k), log y"),
]


def _line_chart(i: int, metric: str, scale: str, title: str) -> dict:
    return {
        "uuid": f"rnnlab-decay-{i}",
        "type": "LINE",
        "runsCountToCompare": 1000,
        "metricSectionId": SECTION,
        "deleted": False,
        "isGenerated": False,
        "displayName": title,
        "metricKey": metric,
        "selectedMetricKeys": [metric],
        "lineSmoothness": 0,
        "xAxisScaleType": "linear",
        "scaleType": scale,
        "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None},
        "xAxisKey": "step",
        "selectedXAxisMetricKey": "",
        "yAxisKey": "metric",
        "yAxisExpressions": [],
        "ignoreOutliers": False,
        "useGlobalXaxisKey": False,
        "useGlobalLineSmoothing": False,
    }


def view_state() -> dict:
    """The runs page's state: search facets and UI state, as MLflow serialises them."""
    return {
        # search facets
        "searchFilter": f"tags.`{names.TAG_RUN_KEY}` LIKE '%'",  # grid points, not sweep parents
        "orderByKey": f"tags.`{names.MLFLOW_RUN_NAME}`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        # UI state
        "selectedColumns": [
            "params.`task.seq_len`",
            "params.`model.activation`",
            "params.`model.cell`",
            "params.`seed`",
            f"metrics.`{names.EVAL_LOSS_RATIO}`",
            f"tags.`{names.TAG_STATUS}`",
        ],
        "columnOrder": [],
        "columnWidths": {},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [_line_chart(i, *c) for i, c in enumerate(CHARTS)],
        "compareRunSections": [
            {
                "uuid": SECTION,
                "name": "Gradient decay curves",
                "display": True,
                "isReordered": True,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": True,
        "groupBy": None,
        "groupsExpanded": {},
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "globalLineChartConfig": {
            "xAxisKey": "step",
            "lineSmoothness": 0,
            "selectedXAxisMetricKey": "",
        },
        "chartsSearchFilter": "",
    }


def save_view(client, experiment_id: str) -> None:
    """Store the decay-curve view on the experiment (idempotent)."""
    client.set_experiment_tag(experiment_id, TAG, json.dumps(view_state()))


def ui_base(tracking_uri: str) -> str:
    """Where the UI serves this store: the tracking server, else `make ui`'s address."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return "http://127.0.0.1:5000"


def decay_url(base: str, experiment_id: str) -> str:
    """The link that opens the decay curves: ``base`` is the UI's address."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?compareRunsMode=CHART&viewStateShareKey={VIEW_KEY}"
    )
