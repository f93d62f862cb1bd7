"""The training run's configuration: one dataclass, saved as ``config.json`` in the run
folder and inside every checkpoint, so ``--resume`` and ``train.evaluate`` rebuild exactly
the same model, data pipeline and schedule."""
from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class TrainConfig:
    model: str
    data: str
    val: str | None = None  # a second dataset; without it ``val_fraction`` of ``data`` is held out
    val_fraction: float = 0.1
    out: str | None = None  # run folder (default runs/<model>-<time>)
    small: bool = False  # the model spec's small configuration
    variant: str | None = None  # a named option set of the model spec (--variant)
    options: dict[str, Any] = field(default_factory=dict)  # model constructor options on top (--set)
    objective: str | None = None  # default: the model's name
    objective_options: dict[str, Any] = field(default_factory=dict)  # (--loss-set)
    size: int | None = None  # default: the spec's input size (small_size with --small)
    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "adamw"  # adamw | adam (the papers' recipes, train/recipes.toml)
    lr: float = 1e-4  # cosine to min_lr (M2SFormer / DiffForensics: 1e-4)
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    clip: float = 1.0  # max gradient norm; 0 disables clipping
    amp: str = "auto"  # auto (bf16 or fp16 on CUDA, off on CPU) | off | bf16 | fp16
    workers: int = 2
    seed: int = 0
    ckpt_every: int = 200  # optimizer steps between mid-epoch checkpoints (0: epoch ends only)
    log_every: int = 10  # optimizer steps between log rows
    max_steps: int | None = None  # stop (and end the cosine schedule) after this many steps
    device: str = "auto"
    threads: int = 0  # CPU intra-op threads per process (0: torch's default); 1 is fastest on a busy machine
    init: str | None = None  # weights to start from, fresh optimizer (DiffForensics stage 1 -> 2, fine-tuning)
    check_data: str = "header"  # header: open every file and compare sizes; full: decode every file
    recipe: str | None = None  # the training recipe applied (python -m train --recipe), for the record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError("batch size must be >= 2 (the models' BatchNorm layers need two samples)")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, got {self.amp!r}")
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"optimizer must be adamw or adam, got {self.optimizer!r}")
        if self.check_data not in ("header", "full"):
            raise ValueError(f"check_data must be header or full, got {self.check_data!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        check_device(self.device)


def check_device(device: str) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and CUDA only where torch sees a GPU.
    Raises ValueError (one line)."""
    import torch

    kind, _, index = device.partition(":")
    if device in ("auto", "cpu") or (kind == "cuda" and (not index or index.isdigit())):
        if kind == "cuda":
            if not torch.cuda.is_available():
                build = "a CPU-only build" if torch.version.cuda is None else f"a CUDA {torch.version.cuda} build"
                raise ValueError(f"--device {device}: no CUDA device available (torch {torch.__version__}, {build}); "
                                 "use --device cpu or auto")
            if index and int(index) >= torch.cuda.device_count():
                raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return
    raise ValueError(f"--device {device}: expected auto, cpu, cuda or cuda:N")


_WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict, values parsed as Python literals when possible
    (``true`` / ``false`` / ``none`` in any case too), else kept as strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        if value.lower() in _WORDS:
            out[key] = _WORDS[value.lower()]
            continue
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
