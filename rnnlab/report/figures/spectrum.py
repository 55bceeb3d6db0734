"""Figure 5: the spectrum of W_hh over training beside the vanishing bound 1/γ."""

from __future__ import annotations

from pathlib import Path

from rnnlab.measure import names
from rnnlab.model.activations import ACTIVATIONS
from rnnlab.report import plotting as plot
from rnnlab.report.figures import figure
from rnnlab.report.load import Frames

QUANTITIES = {
    names.W_HH_RADIUS: "spectral radius ρ",
    names.W_HH_SIGMA_MAX: "largest singular value σ_max",
}


@figure(
    5,
    "Spectral radius and largest singular value of W_hh; red: the vanishing bound 1/γ.",
    elman_only=True,
)
def spectrum_over_training(f: Frames, out: Path) -> list[Path] | None:
    h = f.history[f.history.key.isin(list(QUANTITIES))]
    if not plot.finite(h.value).any():
        return None  # nothing measured, or nothing finite
    h = plot.with_params(h, f, "model.activation").assign(quantity=lambda d: d.key.map(QUANTITIES))
    facet = "model.activation" if "model.activation" in h.columns else f.col
    hue = f.hue if f.hue != facet else f.col  # one line per length, not a median over them
    g = plot.over_training(h, f, hue, facet, style="quantity", linewidth=1.1)
    for key, ax in plot.facet_axes(g, facet):
        # Pascanu et al. (2013): σ_max(W_hh) < 1/γ suffices for vanishing gradients, |φ′| ≤ γ
        act = ACTIVATIONS.get(key) if facet == "model.activation" else None
        crit = 1 / act.gamma if act is not None else 1.0
        ax.axhline(crit, color="red", lw=0.8, ls="--")
        ax.annotate(
            f"1/γ = {crit:g}",
            (0.02, crit),
            xycoords=("axes fraction", "data"),
            fontsize=7,
            color="red",
            va="bottom",
        )
    plot.label_every_panel(g, "training step", r"$W_{hh}$ spectrum")
    plot.titles(g, facet)
    g.figure.suptitle(
        "W_hh spectrum over training (median over seeds, band: min–max; red: σ_max = 1/γ, "
        "Pascanu et al. 2013)",
        y=1.03,
    )
    return plot.save(g, out, "5_spectrum_over_training")
