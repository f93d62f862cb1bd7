"""Training recipes: named sets of training settings, one entry per training objective (a
model name, or ``diffforensics_stage1``), every number with its source, all in one data
file (``train/recipes.toml``, shipped with the package). ``python -m train --recipe
paper`` trains each model as its paper states (optimiser, learning rates, schedule,
weight decay, batch size, epochs, input size); flags given on the command line override
the recipe's values.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .config import TrainConfig

FIELDS: dict[str, type | tuple[type, ...]] = {
    "optimizer": str, "lr": (int, float), "min_lr": (int, float), "schedule": str,
    "weight_decay": (int, float), "batch_size": int, "epochs": int, "size": int, "warmup_steps": int,
    "objective_options": dict,
}
# every entry must say where these come from ("not stated ..." where the paper is silent)
SOURCED = ("optimizer", "lr", "schedule", "weight_decay", "batch_size", "epochs", "size")
SCHEDULES = ("cosine", "constant")
OPTIMIZERS = ("adam", "adamw")
# command-line destinations (python -m train) that set the same TrainConfig field
FLAG_FIELDS = {"lr": "lr", "min_lr": "min_lr", "weight_decay": "weight_decay", "batch_size": "batch_size",
               "epochs": "epochs", "size": "size", "warmup_steps": "warmup_steps"}


class RecipeError(ValueError):
    """A recipe file or entry that cannot be used; the message is one line."""


@dataclass(frozen=True)
class RecipeEntry:
    recipe: str
    key: str  # the training objective it is for
    values: dict[str, Any]
    sources: dict[str, str]

    def config_values(self) -> dict[str, Any]:
        """The TrainConfig fields this entry sets ("constant" schedule: min_lr = lr)."""
        values = {k: v for k, v in self.values.items() if k != "schedule"}
        for key in ("lr", "min_lr", "weight_decay"):
            if key in values:
                values[key] = float(values[key])
        if self.values.get("schedule") == "constant" and "lr" in values:
            values["min_lr"] = values["lr"]
        return values

    def describe(self) -> str:
        v = self.values
        parts = [f"{v['optimizer']}" if "optimizer" in v else None,
                 f"lr {v['lr']:g}" + (f" -> {v['min_lr']:g}" if "min_lr" in v else "") if "lr" in v else None,
                 v.get("schedule"),
                 f"weight decay {v['weight_decay']:g}" if "weight_decay" in v else None,
                 f"batch {v['batch_size']}" if "batch_size" in v else None,
                 f"{v['epochs']} epochs" if "epochs" in v else None,
                 f"size {v['size']}" if "size" in v else None,
                 f"loss options {v['objective_options']}" if "objective_options" in v else None]
        return ", ".join(p for p in parts if p)


def default_path() -> Path:
    return Path(str(resources.files("train") / "recipes.toml"))


def _entry(recipe: str, key: str, table: Any, path: Path) -> RecipeEntry:
    where = f"{path}: [{recipe}.{key}]"
    if not isinstance(table, dict):
        raise RecipeError(f"{where} is not a table")
    table = dict(table)
    sources = table.pop("sources", {})
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
    for name, value in table.items():
        kind = FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise RecipeError(f"{where}: {name} = {value!r} has the wrong type")
    if table.get("schedule", "cosine") not in SCHEDULES:
        raise RecipeError(f"{where}: schedule must be one of {', '.join(SCHEDULES)}")
    if table.get("optimizer", "adamw") not in OPTIMIZERS:
        raise RecipeError(f"{where}: optimizer must be one of {', '.join(OPTIMIZERS)}")
    if not isinstance(sources, dict) or not all(isinstance(s, str) and s for s in sources.values()):
        raise RecipeError(f"{where}: sources must map field names to non-empty strings")
    unsourced = [name for name in (*SOURCED, *table) if name not in sources]
    if unsourced:
        raise RecipeError(f"{where}: no source for {', '.join(dict.fromkeys(unsourced))}")
    return RecipeEntry(recipe, key, table, dict(sources))


def load_recipes(path: str | Path | None = None) -> dict[str, dict[str, RecipeEntry]]:
    """All recipes of the file: {recipe name: {objective: entry}}, validated."""
    path = Path(path) if path else default_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe file ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from None
    return {name: {key: _entry(name, key, table, path) for key, table in entries.items()}
            for name, entries in data.items()}


def list_recipes(path: str | Path | None = None) -> list[str]:
    return sorted(load_recipes(path))


def get_recipe(name: str, key: str, path: str | Path | None = None) -> RecipeEntry:
    recipes = load_recipes(path)
    if name not in recipes:
        raise RecipeError(f"--recipe: unknown recipe {name!r}; known: {', '.join(sorted(recipes))}")
    if key not in recipes[name]:
        raise RecipeError(f"--recipe {name}: no entry for {key!r}; it has {', '.join(sorted(recipes[name]))}")
    return recipes[name][key]


def explicit_flags(build_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None) -> set[str]:
    """Destinations of the options the user actually gave in ``argv`` (abbreviations and
    ``--opt=value`` included): a second parse in which every default other than None is a
    sentinel (options defaulting to None, appending ones included, are given when set)."""
    parser = build_parser()
    unset = object()
    defaults = vars(parser.parse_args([]))
    parser.set_defaults(**{dest: unset for dest, value in defaults.items() if value is not None})
    given = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    return {dest for dest, value in given.items()
            if value is not unset and (value is not None or defaults[dest] is not None)}


def apply_recipe(config: TrainConfig, name: str, explicit: set[str] = frozenset(),
                 path: str | Path | None = None) -> tuple[TrainConfig, RecipeEntry, list[str]]:
    """``config`` with the recipe entry for its objective applied, except the fields whose
    flags are in ``explicit``; a "constant" schedule follows the final lr. Loss options
    merge, those of ``--loss-set`` winning. Returns (config, entry, overridden field names)."""
    entry = get_recipe(name, config.objective or config.model, path)
    values = entry.config_values()
    overridden = sorted(field for dest, field in FLAG_FIELDS.items() if dest in explicit and field in values)
    for field in overridden:
        values.pop(field)
    if entry.values.get("schedule") == "constant" and "min_lr" not in explicit:
        values["min_lr"] = values.get("lr", config.lr)
    if "objective_options" in values:
        values["objective_options"] = {**values["objective_options"], **config.objective_options}
    return replace(config, recipe=name, **values), entry, overridden


def config_with_recipe(config: TrainConfig, name: str, build_parser: Callable[[], argparse.ArgumentParser],
                       argv: list[str] | None, quiet: bool = False) -> TrainConfig:
    """``python -m train --recipe NAME``: ``config`` with the recipe applied under the flags
    given explicitly in ``argv``; says on stderr what it set."""
    config, entry, kept = apply_recipe(config, name, explicit_flags(build_parser, argv))
    if not quiet:
        note = f"; given flags kept: {', '.join(kept)}" if kept else ""
        print(f"recipe {name} for {entry.key}: {entry.describe()}{note}", file=sys.stderr)
    return config
