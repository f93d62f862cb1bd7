"""The training loop: data, model, objective, AdamW (or Adam) + cosine schedule, mixed precision on
CUDA, gradient clipping, DDP, validation, checkpoints and exact resume.

Exact resume: everything random is a function of the seed and a position, never of
history. The epoch's sample order comes from (seed, epoch) (``ResumableSampler``), a
sample's augmentation from (seed, epoch, index), and the torch RNG (dropout, drop-path,
diffusion noise) is re-seeded before every optimizer step from (seed, step, rank). A
checkpoint therefore only needs the weights, optimizer, scheduler, scaler and the
position (epoch, batch, step): the resumed run takes the same next batch with the same
random draws and ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from .atomic import write_json
from .checkpoint import ModelBuild, load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig
from .data.dataset import ForgeryDataset, ResumableSampler
from .data.folders import DataError, Sample, check_samples, is_forged, read_samples
from .ddp import DistContext
from .losses import get_objective
from .metrics import PixelMetrics
from .models import get_spec
from .runlog import RunLog


def warmup_cosine(total: int, warmup: int, floor: float):
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``
    (= min_lr / lr) at step ``total``."""
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 4099 + rank) % (2 ** 63 - 1)


def split_holdout(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Deterministic (seed) split of one dataset into training and validation parts."""
    if len(samples) < 2:
        raise DataError(f"{samples[0].image.parent}: one image cannot be split into training and "
                        "validation sets; pass --val")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(len(samples) - 1, max(1, round(fraction * len(samples))))
    return [samples[i] for i in order[n_val:]], [samples[i] for i in order[:n_val]]


class Trainer:
    """One training run; ``fit()`` trains, validates, checkpoints. Build with a config (a
    new run) or with ``resume=RUN_DIR`` (continue from ``RUN_DIR/last.pt``)."""

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> None:
        config.validate()
        self.config = cfg = config
        self.dist = DistContext.from_env(cfg.device)
        try:
            self._setup(resume, progress)
        except BaseException:
            self.dist.close()
            raise

    def _setup(self, resume: str | Path | None, progress: bool) -> None:
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.progress = progress and self.dist.main
        spec = get_spec(cfg.model)
        self.size = cfg.size or (spec.small_size if cfg.small else spec.input_size)
        self.run_dir = Path(resume) if resume else Path(cfg.out or self.dist.broadcast(self._default_out()))
        if not resume and (self.run_dir / "last.pt").exists():
            raise FileExistsError(f"{self.run_dir}: holds a run already; continue it with --resume {self.run_dir} "
                                  "or choose another --out")

        # data
        samples = read_samples(cfg.data)
        if cfg.val:
            train_samples, val_samples = samples, read_samples(cfg.val)
        else:
            train_samples, val_samples = split_holdout(samples, cfg.val_fraction, cfg.seed)
        check_samples(tqdm(train_samples + val_samples, desc="check data", unit="pair", leave=False,
                           disable=not self.progress, file=sys.stderr), decode=cfg.check_data == "full")
        self.train_set = ForgeryDataset(train_samples, self.size, spec.mean, spec.std, augment=True, seed=cfg.seed)
        val_all = ForgeryDataset(val_samples, self.size, spec.mean, spec.std)
        self.val_set = Subset(val_all, list(range(self.dist.rank, len(val_all), self.dist.world)))
        self.sampler = ResumableSampler(self.train_set, self.dist.world, self.dist.rank, shuffle=True, seed=cfg.seed,
                                        drop_last=True)
        self.steps_per_epoch = self.sampler.num_samples // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise DataError(f"{cfg.data}: {len(train_samples)} training images make {self.sampler.num_samples} per "
                            f"process, fewer than one batch of {cfg.batch_size}")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)

        # model, objective, optimisation
        torch.manual_seed(cfg.seed)
        self.model = ModelBuild.from_config(cfg.to_dict()).build(self.size)
        if cfg.init and not resume:  # a resumed run restores its own weights below
            load_weights(self.model, load_checkpoint(cfg.init)["model"], cfg.init)
        self.model = self.model.to(self.dist.device)
        self.objective = get_objective(cfg.objective or cfg.model, **cfg.objective_options)
        self.objective.prepare(self.model)
        if self.objective.wants_label_counts:  # e.g. DiffForensics' detection loss weights
            forged = sum(is_forged(s) for s in tqdm(train_samples, desc="count forged images", unit="image",
                                                       leave=False, disable=not self.progress, file=sys.stderr))
            note = self.objective.observe_labels(forged, len(train_samples) - forged)
            if note and self.progress:
                print(note, file=sys.stderr)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        self.optimizer = optimizer(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(self.total_steps, cfg.warmup_steps, cfg.min_lr / cfg.lr))
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.net: nn.Module = self.model
        if self.dist.distributed:
            self.net = DistributedDataParallel(
                self.model, device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
                find_unused_parameters=self.objective.find_unused_parameters)

        self.log = RunLog(self.run_dir)
        self.epoch = self.batch_in_epoch = self.step = 0
        self.val_step = -1  # step of the last logged validation
        self.best_f1 = -1.0
        if resume:
            self._resume()
        elif self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())

    # ----------------------------------------------------------------------------- set-up
    def _default_out(self) -> str:
        return str(Path("runs") / f"{self.config.model}-{datetime.now():%Y%m%d-%H%M%S}")

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.config.amp
        if self.dist.device.type != "cuda" or amp == "off":
            if amp in ("bf16", "fp16") and self.dist.device.type != "cuda":
                raise ValueError(f"--amp {amp} needs a CUDA device")
            return None
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _resume(self) -> None:
        path = self.run_dir / "last.pt"
        ckpt = load_checkpoint(path)
        load_weights(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.best_f1, self.val_step = state["best_f1"], state["val_step"]
        if self.dist.main:
            self.log.truncate(self.step, self.val_step)

    # ------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step,
                "best_f1": self.best_f1, "val_step": self.val_step}

    def save(self, name: str = "last.pt", full: bool = True) -> None:
        if not self.dist.main:
            return
        payload = {"model": self.model.state_dict(), "config": self.config.to_dict(), "state": self._state()}
        if full:
            payload.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                           scaler=self.scaler.state_dict())
        save_checkpoint(self.run_dir / name, payload)

    # ------------------------------------------------------------------------------ train
    def _loader(self, dataset, sampler=None, shuffle: bool = False) -> DataLoader:
        workers = self.config.workers
        return DataLoader(dataset, batch_size=self.config.batch_size, sampler=sampler, shuffle=shuffle,
                          num_workers=workers, drop_last=sampler is not None, pin_memory=self.dist.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=2 if workers else None)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
        self.model.train()
        torch.manual_seed(step_seed(self.config.seed, self.step, self.dist.rank))
        batch = {k: v.to(self.dist.device, non_blocking=True) for k, v in batch.items()}
        with self._autocast():
            result = self.objective(self.net, batch)
        # every rank learns of a bad loss, so no rank waits in backward's all-reduce for it
        bad_ranks = self.dist.sum([float(not torch.isfinite(result.loss))])[0]
        if bad_ranks:
            raise FloatingPointError(f"loss is not finite on {int(bad_ranks)} process(es) at step {self.step + 1} "
                                     f"(here: {float(result.loss)}); lower --lr or check the data")
        self.scaler.scale(result.loss).backward()
        if self.config.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += 1
        return float(result.loss.detach()), result.parts

    def fit(self) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        while self.epoch < cfg.epochs and self.step < self.total_steps:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * cfg.batch_size)
            bar = tqdm(self._loader(self.train_set, self.sampler), total=self.steps_per_epoch,
                       initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch",
                       disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
            for batch in bar:
                if self.step >= self.total_steps:
                    break
                loss, parts = self.train_step(batch)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    loss, *values = self.dist.sum([loss, *parts.values()])
                    n = self.dist.world
                    row = {"step": self.step, "epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                           "loss": loss / n, **{k: v / n for k, v in zip(parts, values)},
                           "seconds": round(time.perf_counter() - started, 2)}
                    if self.dist.main:
                        self.log.log_train(row)
                    bar.set_postfix(loss=f"{loss / n:.4f}")
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                    self.save()
            bar.close()
            epoch_done = self.batch_in_epoch >= self.steps_per_epoch
            metrics = self.validate()
            if epoch_done:
                self.epoch += 1
                self.batch_in_epoch = 0
            self.val_step = self.step
            if self.dist.main:
                self.log.log_val({"step": self.step, "epoch": self.epoch if epoch_done else self.epoch + 1,
                                  **metrics})
                if not metrics["val_f1"] <= self.best_f1:  # better, or no F1 to compare (nan)
                    self.best_f1 = metrics["val_f1"]
                    self.save("best.pt", full=False)
                self.save()
                self.log.write_summary()
            self.dist.barrier()
        return {"run_dir": str(self.run_dir), "steps": self.step, "best_val_f1": self.best_f1,
                "seconds": time.perf_counter() - started}

    # --------------------------------------------------------------------------- validate
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Pixel F1 at 0.5 on the validation set at the model's input size, per-image mean
        and pooled over pixels (forged images only), and the all-one baseline."""
        self.model.eval()
        pixels = PixelMetrics()
        baseline = []
        loader = DataLoader(self.val_set, batch_size=self.config.batch_size, num_workers=self.config.workers)
        for batch in tqdm(loader, desc="validate", unit="batch", leave=False, disable=not self.progress,
                          file=sys.stderr):
            with self._autocast():
                prob, _ = self.model.predict(batch["image"].to(self.dist.device))
            prob = prob.float().cpu().numpy()[:, 0]
            masks = batch["mask"].numpy()[:, 0] > 0.5
            for p, m in zip(prob, masks):
                pixels.update(p, m)
                if m.any():
                    baseline.append(2 * m.mean() / (1 + m.mean()))
        f1 = pixels.per_image["f1"]
        sums = self.dist.sum([sum(f1), len(f1), pixels.tp, pixels.fp, pixels.fn, sum(baseline)])
        f1_sum, n, tp, fp, fn, base_sum = sums
        return {"val_f1": f1_sum / n if n else float("nan"),
                "val_f1_dataset": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan"),
                "baseline_all_one_f1": base_sum / n if n else float("nan"), "val_forged_images": int(n)}

    def close(self) -> None:
        self.dist.close()

