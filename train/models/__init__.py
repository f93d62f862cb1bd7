"""Paper models and their registry: ``build_model(name, **options)``, ``list_models()``,
``get_spec(name)``. Importing this package registers every model."""
from .registry import ModelSpec, PaperFigure, build_model, get_spec, list_models, register

import importlib as _importlib

for _name in ("m2sformer", "transforensics", "mgqformer", "qmanet", "diffforensics"):
    try:
        _importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:  # model file not written yet
        if _err.name != f"{__name__}.{_name}":
            raise

__all__ = ["ModelSpec", "PaperFigure", "build_model", "get_spec", "list_models", "register"]
