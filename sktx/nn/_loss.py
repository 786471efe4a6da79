"""Set-level training loss: pseudobulk MSE plus an optional energy distance."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SetLoss", "energy_distance", "predict_cells"]


def predict_cells(
    control_cells: torch.Tensor, basal: torch.Tensor, delta: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Per-cell prediction ``relu(basal + delta + exp(log_scale) * (x - basal))``.

    ``control_cells`` (B, S, G); ``basal``, ``delta``, ``log_scale`` (B, G).
    With ``log_scale = 0`` this is the control cell shifted by ``delta``,
    clipped at zero (log1p expression is non-negative).
    """
    scale = torch.exp(log_scale).unsqueeze(1)
    base = basal.unsqueeze(1)
    return torch.relu(base + delta.unsqueeze(1) + scale * (control_cells - base))


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean energy distance between matching sets of ``a`` (B, S, G) and ``b`` (B, S', G).

    Divided by ``sqrt(G)`` so its size does not grow with the number of genes.
    """
    eps = 1e-8

    def mean_dist(x, y, same: bool = False):
        # Gram form: (B, S, S) memory instead of (B, S, S, G)
        d2 = (
            x.pow(2).sum(-1, keepdim=True)
            + y.pow(2).sum(-1).unsqueeze(1)
            - 2 * x @ y.transpose(1, 2)
        )
        if same:
            # a cell's distance to itself is exactly 0; in the Gram form it is rounding
            # noise, and sqrt's 1/(2*sqrt(eps)) slope turned that noise into gradient
            eye = torch.eye(d2.shape[-1], dtype=torch.bool, device=d2.device)
            d2 = d2.masked_fill(eye, 0.0)
        return torch.sqrt(d2.clamp_min(0) + eps).mean(dim=(1, 2))

    ed = 2 * mean_dist(a, b) - mean_dist(a, a, same=True) - mean_dist(b, b, same=True)
    return ed.mean() / math.sqrt(a.shape[-1])


class SetLoss(nn.Module):
    """MSE between predicted and observed set means, plus ``distributional`` x energy distance.

    Parameters
    ----------
    distributional : float, default=0.0
        Weight of the energy distance between predicted cells (control cells
        shifted by the predicted delta) and the observed perturbed cells.

    Examples
    --------
    >>> import torch
    >>> loss = SetLoss()
    >>> y = {"basal": torch.zeros(2, 3), "target": torch.ones(2, 3)}
    >>> float(loss((torch.ones(2, 3), torch.zeros(2, 3)), y))
    0.0
    """

    def __init__(self, distributional: float = 0.0):
        super().__init__()
        self.distributional = distributional

    def forward(self, y_pred, y_true) -> torch.Tensor:
        delta, log_scale = y_pred
        basal, target = y_true["basal"], y_true["target"]
        loss = torch.mean((basal + delta - target) ** 2)
        if self.distributional > 0 and "control_cells" in y_true:
            pred = predict_cells(y_true["control_cells"], basal, delta, log_scale)
            loss = loss + self.distributional * energy_distance(pred, y_true["perturbed_cells"])
        return loss
