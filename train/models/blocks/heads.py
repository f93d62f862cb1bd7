"""The export contract every model implements, and the shared image-score reduction.

Contract (DESIGN.md, contract 2): ``predict(x)`` returns ``(prob, score)``: a tamper
probability map (N, 1, H, W) at the input size after sigmoid/softmax, and an image-level
score (N, 1) in [0, 1]. ``forward(x)`` returns a dict of raw training outputs (logits,
edges, auxiliary maps) that only training uses.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def score_from_map(prob: torch.Tensor) -> torch.Tensor:
    """Image-level score of a model without a detection head: the maximum of the
    probability map (the IMDL-BenCo convention for pixel-only models), shape (N, 1)."""
    return prob.flatten(1).amax(dim=1, keepdim=True)


class IMLModel(nn.Module):
    """Base class of the paper models: subclasses implement ``forward`` (training dict)
    and ``predict`` (the export contract)."""

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError
