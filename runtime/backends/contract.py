"""What every backend shares: the contract outputs ("prob" (N, 1, h, w), "score" (N, 1), both
float32), the check of an input batch and of the outputs, and running a batch through a model
whose batch dimension is fixed at 1 one image at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ModelError, RuntimeInputError

__all__ = ["CONTRACT", "PRECISIONS", "run_batch", "checked_outputs"]

CONTRACT = ("prob", "score")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def run_batch(path: Path, batch: np.ndarray, fixed: int | None,
              run_once: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``batch`` as a contiguous float32 (N, 3, H, W) array through ``run_once``; a model with a
    fixed batch of 1 gets the images one by one, any other fixed batch must match."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[0] == 0:
        raise RuntimeInputError(f"model {path}: expected a non-empty (N, 3, H, W) batch, got {batch.shape}")
    if fixed is not None and batch.shape[0] != fixed:
        if fixed != 1:
            raise ModelError(f"model {path}: fixed batch size {fixed} cannot take a batch of {batch.shape[0]}")
        parts = [run_once(batch[k : k + 1]) for k in range(batch.shape[0])]
        return {n: np.concatenate([p[n] for p in parts], axis=0) for n in CONTRACT}
    return run_once(batch)


def checked_outputs(path: Path, prob, score, n: int) -> dict[str, np.ndarray]:
    """The contract outputs as float32 arrays, with their shapes checked for a batch of ``n``."""
    prob = np.asarray(prob, dtype=np.float32)
    score = np.asarray(score, dtype=np.float32)
    if prob.ndim != 4 or prob.shape[:2] != (n, 1):
        raise ModelError(f"model {path}: output prob has shape {prob.shape}, expected ({n}, 1, h, w)")
    if score.shape != (n, 1):
        raise ModelError(f"model {path}: output score has shape {score.shape}, expected ({n}, 1)")
    return {"prob": prob, "score": score}
