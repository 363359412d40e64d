"""LaueNN dense classifier (Purushottam Raj Purohit et al., J. Appl. Cryst. 2022), in torch.

Shape as ``lauetoolsnn.NNmodels.model_arch_general`` (``docs/laue-conventions.md`` §5.4)::

    p = n_bins if n_classes ≥ n_bins (p = (n_bins + n_classes)//2 if 15·n_bins < 2·n_classes)
        else n_classes
    Linear(n_bins → n_bins) → ReLU → Dropout(0.3)
    Linear(→ (15p + n_bins)//2) → ReLU → Dropout(0.3)
    Linear(→ 15p) → ReLU → Dropout(0.3)
    Linear(→ n_classes)            (softmax applied by :meth:`LaueNN.predict_proba` / the loss)

``hidden`` overrides the three hidden widths (tiny models for tests).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["LaueNN", "lauenn_hidden_sizes"]


def lauenn_hidden_sizes(n_bins: int, n_classes: int) -> tuple[int, int, int]:
    """The three hidden-layer widths LaueNN uses for ``n_bins`` inputs and ``n_classes`` outputs."""
    if n_classes >= n_bins:
        p = (n_bins + n_classes) // 2 if 15 * n_bins < 2 * n_classes else n_bins
    else:
        p = n_classes
    return n_bins, (15 * p + n_bins) // 2, 15 * p


class LaueNN(nn.Module):
    """Dense classifier: angular-distance histogram (n_bins) → class logits (n_classes)."""

    def __init__(self, n_bins: int, n_classes: int, hidden: tuple[int, ...] | None = None,
                 dropout: float = 0.3):
        super().__init__()
        self.n_bins, self.n_classes = int(n_bins), int(n_classes)
        self.hidden = tuple(int(h) for h in (hidden or lauenn_hidden_sizes(n_bins, n_classes)))
        self.dropout = float(dropout)
        layers, width = [], self.n_bins
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout)]
            width = h
        layers.append(nn.Linear(width, self.n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (..., n_classes)."""
        return self.net(x)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (eval mode, no dropout)."""
        was = self.training
        self.eval()
        out = torch.softmax(self.net(x), dim=-1)
        self.train(was)
        return out

    def config(self) -> dict:
        return {"n_bins": self.n_bins, "n_classes": self.n_classes, "hidden": list(self.hidden),
                "dropout": self.dropout}
