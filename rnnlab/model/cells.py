"""The recurrent cells by name (``model.cell``): what the config, the scheduler, the training
loop and the report need to know of each (what it logs included), without torch. The recursions themselves live in
``rnnlab.model.elman`` (elman) and ``rnnlab.model.gated`` (its ``RECURSIONS``, one per gated
cell; the test suite checks the two tables name the same cells).
"""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.measure import names


@dataclass(frozen=True)
class Cell:
    gates: int
    """H × H blocks of W_hh (the weights and the work per step scale with it)."""
    state_width: int
    """Values of width H training holds per step and sequence (``RunConfig.memory``)."""
    color: str
    """Its colour in every figure where cells are compared."""
    paper: str
    parameters: tuple[str, ...]
    """Its parameters by name, each with its ``grad/<parameter>`` metric."""
    elman_measures: bool = False
    """It logs what describes the Elman cell's W_hh and φ (``names.ELMAN_ONLY_GROUPS``)."""
    cell_state: bool = False
    """It has a cell state c_t and logs its profile (``grad_c/*``)."""


CELLS: dict[str, Cell] = {
    # h_t, δ_t and ∂ℓ/∂h_t
    "elman": Cell(  # tanh's colour: the default Elman cell
        1, 3, "#0173b2", "Elman (1990)", names.PARAMETERS, elman_measures=True
    ),
    # the gates, their factors and gradients (3 × 4H), c_t, tanh(c_t), ∂h_t/∂c_t, h_t, δh_t, δc_t
    "lstm": Cell(
        4, 18, "#6a3d9a", "Hochreiter & Schmidhuber (1997)", names.GATED_PARAMETERS, cell_state=True
    ),
    # the gates, their factors and both gradients (4 × 3H), W_hn h + b_hn, h_t, δh_t
    "gru": Cell(3, 15, "#333333", "Cho et al. (2014)", names.GATED_PARAMETERS),
}

NAMES: tuple[str, ...] = tuple(CELLS)
"""The cells' names (``model.cell``), in the order the report shows them."""


def logged_by(metric: str) -> tuple[str, ...]:
    """The cells whose runs log ``metric`` (a name in ``names.run_metrics``)."""
    group = metric.split("/", 1)[0]
    every_param = {names.grad_param(p) for c in CELLS.values() for p in c.parameters}

    def logs(cell: Cell) -> bool:
        if group in names.ELMAN_ONLY_GROUPS:
            return cell.elman_measures
        if group == "grad_c":
            return cell.cell_state
        if metric in every_param:
            return metric in map(names.grad_param, cell.parameters)
        return True

    return tuple(name for name, cell in CELLS.items() if logs(cell))
