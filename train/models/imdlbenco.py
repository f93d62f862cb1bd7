"""``--model imdlbenco:NAME``: a model of IMDL-BenCo's zoo (the optional ``imdlbenco``
package, import name ``IMDLBenCo``) by its registry name (``MVSSNet``, ``MantraNet``, ...),
read through the output adapter like any import-path model.

Never a dependency of the kit: ``imdlbenco`` 0.1.45 pins numpy<2 and albumentations 1.3.0,
so it lives in an environment of its own; imported only when such a name is asked for.
Their constructors take the options (``--set pretrained_base=False``); several download or
read pretrained weights when built (MVSS-Net's ResNet-50, PSCC-Net's HRNet, TruFor's
configs), and CAT-Net takes JPEG DCT inputs, which the adapter refuses.
"""
from __future__ import annotations

from typing import Any

PREFIX = "imdlbenco:"
PACKAGE = "IMDLBenCo"


class ZooError(ValueError):
    """The package is absent or has no such model; the message is one line."""


def zoo_factory(name: str) -> Any:
    """The class IMDL-BenCo's ``MODELS`` registry holds for ``imdlbenco:NAME``."""
    model = name[len(PREFIX):]
    try:
        from IMDLBenCo.registry import MODELS  # noqa: PLC0415  (optional, lazily)
        import IMDLBenCo.model_zoo  # noqa: F401,PLC0415  (registers the zoo)
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == PACKAGE:
            raise ZooError(f"model {name!r}: needs the optional package imdlbenco (pip install imdlbenco==0.1.45, "
                           "in an environment of its own: it pins numpy<2)") from None
        raise ZooError(f"model {name!r}: importing IMDLBenCo failed: no module named {err.name!r}") from None
    except Exception as err:  # the package's own import-time errors
        first = (str(err).strip().splitlines() or [""])[0]
        raise ZooError(f"model {name!r}: importing IMDLBenCo failed: {type(err).__name__}: {first}") from None
    if not model or not MODELS.has(model):
        known = ", ".join(sorted(MODELS.module_dict))
        raise ZooError(f"model {name!r}: IMDL-BenCo's registry has no {model!r}; it has: {known}")
    return MODELS.get(model)
