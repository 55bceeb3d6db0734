"""The recurrent cells by name (``model.cell``): what the config, the scheduler and the report
need to know of each, without torch. The recursions themselves live in
``rnnlab.model.elman`` (elman) and ``rnnlab.model.gated`` (its ``RECURSIONS``, one per gated
cell; the test suite checks the two tables name the same cells).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    gates: int
    """H × H blocks of W_hh (the weights and the work per step scale with it)."""
    state_width: int
    """Values of width H training holds per step and sequence (``RunConfig.memory``)."""
    color: str
    """Its colour in every figure where cells are compared."""
    paper: str


CELLS: dict[str, Cell] = {
    # h_t, δ_t and ∂ℓ/∂h_t
    "elman": Cell(1, 3, "#0173b2", "Elman (1990)"),  # tanh's colour: the default Elman cell
    # the gates, their factors and gradients (3 × 4H), c_t, tanh(c_t), ∂h_t/∂c_t, h_t, δh_t, δc_t
    "lstm": Cell(4, 18, "#6a3d9a", "Hochreiter & Schmidhuber (1997)"),
    # the gates, their factors and both gradients (4 × 3H), W_hn h + b_hn, h_t, δh_t
    "gru": Cell(3, 15, "#333333", "Cho et al. (2014)"),
}

NAMES: tuple[str, ...] = tuple(CELLS)
"""The cells' names (``model.cell``), in the order the report shows them."""
