"""``python -m train``: train a registered model on a forgery dataset.

    python -m train --model m2sformer --data DATA [--val VAL] [--size N] [--epochs E] ...
    python -m train --model qmanet --data DATA --recipe paper  # the paper's optimiser, lr, batch, epochs, size
    python -m train --resume RUN_DIR                       # continue exactly where it stopped
    torchrun --nproc_per_node G -m train --model ... ...   # DDP, one process per GPU

DATA and VAL are IMDL-BenCo folders (Tp/, Gt/) or JSON lists ([[image, mask], ...],
"Negative" for authentic images); ``python -m train.synth`` makes one. The run folder
holds config.json, train_log.csv, val_log.csv, history.json, curves.png, last.pt (full
state, written atomically every --ckpt-every steps and at each epoch end) and best.pt
(weights with the best validation F1, for ``export.onnx --checkpoint`` and
``train.evaluate``).
"""
from __future__ import annotations

import argparse
import sys

from .cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_folder

interrupts_in_one_line(__name__)  # before the heavy imports

from .checkpoint import ModelBuild, load_checkpoint
from .config import TrainConfig, parse_assignments
from .losses import list_objectives
from .models.external import model_argument


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(model="", data="")
    ap = ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0],
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=model_argument, help="model to train: registered name or package.module:factory")
    ap.add_argument("--data", help="training data: folder (Tp/, Gt/) or JSON list")
    ap.add_argument("--val", help="validation data (default: hold out --val-fraction of --data)")
    ap.add_argument("--val-fraction", type=float, default=d.val_fraction)
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config")
    ap.add_argument("--out", help="run folder (default runs/<model>-<time>)")
    ap.add_argument("--small", action="store_true", help="the model's small configuration (tests, demos)")
    ap.add_argument("--variant", help="a named option set of the model (e.g. TransForensics c3)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="model constructor option (repeatable)")
    ap.add_argument("--objective", choices=list_objectives(), help="training objective (default: the model's)")
    ap.add_argument("--loss-set", action="append", metavar="KEY=VALUE", help="objective option (repeatable)")
    ap.add_argument("--size", type=int, help="input size (default: the paper's; the small size with --small)")
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--min-lr", type=float, default=d.min_lr, help="end of the cosine schedule")
    ap.add_argument("--weight-decay", type=float, default=d.weight_decay)
    ap.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    ap.add_argument("--clip", type=float, default=d.clip, help="max gradient norm (0: off)")
    ap.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default=d.amp,
                    help="mixed precision (CUDA only; auto = bf16 where supported, else fp16)")
    ap.add_argument("--workers", type=int, default=d.workers, help="data loader processes")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="steps between checkpoints (0: epochs only)")
    ap.add_argument("--log-every", type=int, default=d.log_every)
    ap.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    ap.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--threads", type=int, default=d.threads,
                    help="CPU threads per process (0: torch's default; 1 avoids oversubscription on a busy machine)")
    ap.add_argument("--check-data", choices=("header", "full"), default=d.check_data,
                    help="before training, open every pair (header) or decode every file (full)")
    ap.add_argument("--init", metavar="CKPT", help="start from these weights with a fresh optimizer and schedule "
                    "(e.g. DiffForensics: a stage-1 run's last.pt for stage 2)")
    ap.add_argument("--recipe", metavar="NAME", help="training settings of a named recipe (train/recipes.toml; "
                    "'paper': each paper's own); flags given explicitly override it")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if not args.model or not args.data:
        raise ValueError("--model and --data are required (or --resume RUN_DIR)")
    return TrainConfig(
        model=args.model, data=args.data, val=args.val, val_fraction=args.val_fraction, out=args.out,
        small=args.small, variant=args.variant, options=parse_assignments(args.set, "--set"), objective=args.objective,
        objective_options=parse_assignments(args.loss_set, "--loss-set"), size=args.size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, clip=args.clip, amp=args.amp, workers=args.workers, seed=args.seed,
        ckpt_every=args.ckpt_every, log_every=args.log_every, max_steps=args.max_steps, device=args.device,
        threads=args.threads, check_data=args.check_data, init=args.init)


@one_line_errors(ValueError, FileExistsError, FloatingPointError, OSError)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume:
        if args.model or args.data or args.recipe:
            raise ValueError("--resume continues a run with its saved config; drop --model/--data/--recipe")
        config = TrainConfig.from_dict(load_checkpoint(f"{args.resume}/last.pt").get("config") or {})
    else:
        config = config_from_args(args)
        if args.recipe:
            from .recipes import config_with_recipe
            config = config_with_recipe(config, args.recipe, build_parser, argv, quiet=args.quiet)
        config.validate()
        ModelBuild.from_config(config.to_dict()).check(config.size)  # before the data is read
        if config.out:
            output_folder(config.out)
    from .trainer import Trainer

    trainer = None
    try:
        trainer = Trainer(config, resume=args.resume, progress=not args.quiet)
        result = trainer.fit()
    finally:
        if trainer is not None:
            trainer.close()
    if trainer.dist.main:
        best = result["best_val_f1"]
        best_text = f"{best:.4f} (per-image mean at 0.5)" if best == best else "n/a (no forged validation image)"
        print(f"done: {result['steps']} steps in {result['seconds']:.0f} s, best validation F1 {best_text}; "
              f"run folder {result['run_dir']}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
