"""One activation order and one colour per activation, for every figure and the MLflow UI.

The order runs from the fastest vanishing to exploding (|φ′| ≤ 1/4, then about half the
units off, then near the edge, then no squashing at all), so a reader meets the regimes in
the same order in every legend, facet row and table. Colours are seaborn's colour-blind
palette, written out so that the UI's run colours (tag ``mlflow.runColor``) need no seaborn.
"""

from __future__ import annotations

ACTIVATION_ORDER = ["sigmoid", "relu", "leaky_relu", "tanh", "hardtanh", "linear"]
ACTIVATION_COLORS = {
    "tanh": "#0173b2",
    "relu": "#de8f05",
    "sigmoid": "#029e73",
    "linear": "#cc78bc",
    "leaky_relu": "#d55e00",
    "hardtanh": "#ca9161",
}


def activation_rank(name: str) -> tuple[int, str]:
    """Sort key: the order above, unknown names last (alphabetically)."""
    return (
        ACTIVATION_ORDER.index(name) if name in ACTIVATION_ORDER else len(ACTIVATION_ORDER),
        str(name),
    )
