"""Plots people ask for after predicting perturbations (matplotlib figures, scanpy-style).

- :func:`delta_scatter` — predicted vs real pseudobulk change per perturbation;
- :func:`de_heatmap` — real and predicted change on each perturbation's top DE genes,
  one colour scale per panel;
- :func:`loss` — training (and validation) loss per epoch, one segment per phase.

Each takes AnnData (real cells with controls, predicted cells) or the delta tables a
run directory holds, and returns a :class:`matplotlib.figure.Figure` (shown once in a
notebook; ``fig.savefig(...)`` to write it). The HTML report draws the same figures.
"""

from sktx.pl._figures import de_heatmap, delta_scatter, loss
from sktx.pl._history import training_history

__all__ = ["de_heatmap", "delta_scatter", "loss", "training_history"]
