"""The TensorRT build recipes in ``engines/recipes.toml``: one per deployment target, plus the
trtexec flags each TensorRT major version has. Loaded and validated here for
``export.trtexec`` (device scripts) and ``export.tensorrt --recipe`` (Python API builds)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .trt_plan import PRECISIONS, parse_version
from .trt_support import ALIASES, TARGETS

DEFAULT_RECIPES = Path(__file__).resolve().parents[1] / "engines" / "recipes.toml"
_KEYS = {"description": str, "tensorrt": str, "lint": str, "precision": str, "strongly_typed": bool,
         "workspace_mib": int, "opt_batch": int, "max_batch": int, "opt_level": int, "trtexec": str,
         "bench": list}


class RecipeError(ValueError):
    """A recipe file or entry that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    tensorrt: str
    lint: str
    precision: str
    strongly_typed: bool
    workspace_mib: int
    opt_batch: int
    max_batch: int
    opt_level: int
    trtexec: str
    bench: tuple[str, ...]

    @property
    def major(self) -> int:
        return parse_version(self.tensorrt)[0]


@dataclass(frozen=True)
class RecipeBook:
    path: Path
    recipes: dict[str, Recipe]
    flags: dict[int, frozenset[str]]  # trtexec flags per TensorRT major version
    removed: dict[int, frozenset[str]]

    def get(self, name: str) -> Recipe:
        try:
            return self.recipes[name]
        except KeyError:
            raise RecipeError(f"{self.path}: no recipe {name!r}; known: {', '.join(self.recipes)}") from None

    def trtexec_flags(self, tensorrt: str) -> frozenset[str]:
        major = parse_version(tensorrt)[0]
        if major not in self.flags:
            raise RecipeError(f"{self.path}: no trtexec flag list for TensorRT {major}.x")
        return self.flags[major]

    def invalid_flags(self, args: list[str], tensorrt: str) -> list[str]:
        """Flags in ``args`` that TensorRT ``tensorrt``'s trtexec does not have."""
        known = self.trtexec_flags(tensorrt)
        return [a for a in args if a.startswith("--") and a.split("=", 1)[0] not in known]


def _recipe(path: Path, name: str, d: object) -> Recipe:
    if not isinstance(d, dict):
        raise RecipeError(f"{path}: recipe {name} must be a table")
    missing = sorted(set(_KEYS) - set(d))
    unknown = sorted(set(d) - set(_KEYS))
    if missing or unknown:
        raise RecipeError(f"{path}: recipe {name}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
    for key, kind in _KEYS.items():
        if not isinstance(d[key], kind) or (kind is int and isinstance(d[key], bool)):
            raise RecipeError(f"{path}: recipe {name}: {key} must be {kind.__name__}")
    if d["precision"] not in PRECISIONS:
        raise RecipeError(f"{path}: recipe {name}: precision {d['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if d["lint"] not in TARGETS and d["lint"] not in ALIASES:
        raise RecipeError(f"{path}: recipe {name}: lint {d['lint']!r} is not one of {', '.join([*TARGETS, *ALIASES])}")
    if not 1 <= d["opt_batch"] <= d["max_batch"]:
        raise RecipeError(f"{path}: recipe {name}: needs 1 <= opt_batch <= max_batch")
    if d["workspace_mib"] < 1 or not 0 <= d["opt_level"] <= 5:
        raise RecipeError(f"{path}: recipe {name}: workspace_mib must be >= 1 and opt_level in 0..5")
    try:
        parse_version(d["tensorrt"])
    except ValueError as err:
        raise RecipeError(f"{path}: recipe {name}: {err}") from None
    return Recipe(name=name, bench=tuple(str(b) for b in d["bench"]),
                  **{k: d[k] for k in _KEYS if k != "bench"})


def load_recipes(path: str | Path | None = None) -> RecipeBook:
    path = Path(path) if path else DEFAULT_RECIPES
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise RecipeError(f"{path}: cannot read ({err.strerror or err})") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML ({err})") from None
    recipes = {name: _recipe(path, name, d) for name, d in data.get("recipes", {}).items()}
    if not recipes:
        raise RecipeError(f"{path}: no [recipes.NAME] tables")
    flags, removed = {}, {}
    for major, table in data.get("trtexec", {}).items():
        if not str(major).isdigit() or not isinstance(table, dict) or not isinstance(table.get("flags"), list):
            raise RecipeError(f"{path}: [trtexec.\"{major}\"] needs a flags list")
        flags[int(major)] = frozenset(table["flags"])
        removed[int(major)] = frozenset(table.get("removed", []))
    book = RecipeBook(path, recipes, flags, removed)
    for r in recipes.values():
        book.trtexec_flags(r.tensorrt)
    return book
