"""Training losses: the papers' loss terms (``functional``) and the per-model objectives
that map each model's training outputs to them (``objectives``: ``get_objective(name)``)."""
from .functional import (balanced_bce, class_nll, cosine_distance, dice_loss, edge_target, focal_loss,
                         weighted_bce)
from .objectives import OBJECTIVES, LossResult, Objective, get_objective, list_objectives

__all__ = ["OBJECTIVES", "LossResult", "Objective", "balanced_bce", "class_nll", "cosine_distance", "dice_loss",
           "edge_target", "focal_loss", "get_objective", "list_objectives", "weighted_bce"]
