"""The run folder's record: ``train_log.csv`` (a row every ``log_every`` steps),
``val_log.csv`` (a row per validation), ``history.json`` (both, as JSON) and
``curves.png`` (training loss by step, validation F1 by epoch with the all-one
baseline). A resumed run first cuts both CSVs back to the checkpoint's step, so the log
continues without duplicated or orphaned rows."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from .atomic import atomic_path, write_json


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = []
        for row in csv.DictReader(fh):
            if None in row or any(v is None for v in row.values()):  # a line cut short by a kill
                continue
            rows.append({k: _number(v) for k, v in row.items()})
        return rows


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class RunLog:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.train_csv = self.folder / "train_log.csv"
        self.val_csv = self.folder / "val_log.csv"

    def truncate(self, step: int, val_step: int) -> None:
        """Drop what the resumed run will redo: training rows after ``step`` and validation
        rows after ``val_step`` (the last validation the checkpoint had seen)."""
        for path, last in ((self.train_csv, step), (self.val_csv, val_step)):
            self._rewrite(path, [r for r in _read_rows(path) if int(r["step"]) <= last])

    def _rewrite(self, path: Path, rows: list[dict[str, Any]]) -> None:
        if not rows:
            path.unlink(missing_ok=True)
            return
        with atomic_path(path) as tmp:
            with tmp.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        new = not path.is_file()
        fieldnames = list(row) if new else next(csv.reader(path.open(encoding="utf-8")))
        with path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fieldnames, extrasaction="ignore", restval="")
            if new:
                writer.writeheader()
            writer.writerow(row)
            fh.flush()

    def log_train(self, row: dict[str, Any]) -> None:
        self._append(self.train_csv, row)

    def log_val(self, row: dict[str, Any]) -> None:
        self._append(self.val_csv, row)

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return {"train": _read_rows(self.train_csv), "val": _read_rows(self.val_csv)}

    def write_summary(self) -> None:
        """Rewrite ``history.json`` and ``curves.png`` from the CSVs."""
        hist = self.history()
        write_json(self.folder / "history.json", hist)
        plot_curves(hist, self.folder / "curves.png")


def plot_curves(hist: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(10, 3.8))
    train = hist["train"]
    if train:
        steps = [r["step"] for r in train]
        ax_loss.plot(steps, [r["loss"] for r in train], lw=1, label="training loss")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(alpha=0.3)
    val = hist["val"]
    if val:
        epochs = [r["epoch"] for r in val]
        ax_f1.plot(epochs, [r["val_f1"] for r in val], "o-", label="F1 @0.5, per-image mean")
        if "val_f1_dataset" in val[0]:
            ax_f1.plot(epochs, [r["val_f1_dataset"] for r in val], "s--", ms=4, label="F1 @0.5, dataset")
        base = [r.get("baseline_all_one_f1") for r in val]
        if base and isinstance(base[-1], float) and not math.isnan(base[-1]):
            ax_f1.axhline(base[-1], color="grey", ls=":", label="all-one baseline (per image)")
        ax_f1.legend(fontsize=8)
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("F1")
    ax_f1.set_ylim(0, 1)
    ax_f1.set_title("validation F1")
    ax_f1.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
