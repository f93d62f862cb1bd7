"""The real ``tensorrt`` bindings as a spec: a stand-in module that our TensorRT code runs
against where no GPU (and no libnvinfer) exists, checking every use against the real
module of one TensorRT version.

The bindings import with stub libraries (``tests/trt_bindings.py``), so every name, enum
member, property and method signature they define can be read; what they cannot do is
return a real object from the library (``trt.Builder(logger)`` raises "factory function
returned nullptr"). Here:

- module attributes are the real ones (enums, ``DataType`` members, ``nptype``,
  ``__version__``); reading one the module lacks fails as it would on that version;
- a class is constructed for real where that works (``Logger``); where the library is
  needed, an instance of the real class is stood in for, whose attribute reads, property
  writes and method calls are checked against the real class: the attribute must exist,
  a property written must have a setter, and the arguments must bind to one of the
  method's pybind11 signatures with the declared types;
- results follow the declared return type (a stand-in of that class, ``True``, ``1``...),
  unless a scenario hook supplies one, which must then conform to that type as well.

Every member touched is recorded (``Spec.used``) so a test can show what was checked.
"""
from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


class APIMisuse(AssertionError):
    """A use of TensorRT that the real bindings of this version do not have."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: bool


@dataclass(frozen=True)
class Signature:
    params: tuple[Param, ...]  # without self
    returns: str

    def text(self) -> str:
        return "(" + ", ".join(f"{p.name}: {p.type}" for p in self.params) + f") -> {self.returns}"


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


_SIG = re.compile(r"^\s*(?:\d+\.\s+)?(?:[A-Za-z_]\w*)?\((.*)\)\s*->\s*(.+?)\s*$")


def signatures(doc: str | None, method: bool = True) -> list[Signature]:
    """The pybind11 signatures in a docstring (overloads too); ``method`` drops the first
    parameter (self / arg0)."""
    out = []
    for line in (doc or "").splitlines():
        m = _SIG.match(line)
        if not m or "*args" in m.group(1):
            continue
        params = []
        for part in _split_top(m.group(1)):
            name, _, rest = part.partition(":")
            typ, eq, _ = rest.partition(" = ")
            params.append(Param(name.strip(), typ.strip(), bool(eq)))
        if method and params:
            params = params[1:]
        out.append(Signature(tuple(params), m.group(2)))
    return out


def _is_enum(cls: Any) -> bool:
    return isinstance(cls, type) and hasattr(cls, "__members__")


def _is_binding_class(obj: Any) -> bool:
    return isinstance(obj, type) and type(obj).__name__ == "pybind11_type"


class Spec:
    """One version's real module, the hook that supplies scenario results, and the record."""

    def __init__(self, real: types.ModuleType, hook: Callable[..., Any] | None = None):
        self.real = real
        self.version = real.__version__
        self.hook = hook or (lambda obj, cls, name, args: NotImplemented)
        self.used: set[str] = set()
        self.prefixes = tuple(f"{real.__name__}.{sub}." for sub in ("tensorrt", "")) + ("tensorrt.",)

    # -- types ---------------------------------------------------------------

    def resolve(self, name: str) -> Any:
        """The real class a type string names, or None. pybind11 writes a C++ name for a
        type bound under another name (``nvonnxparser::IParserError`` is ``ParserError``)."""
        if "::" in name:
            base = name.split("::")[-1]
            return getattr(self.real, base, None) or getattr(self.real, base[1:], None)
        for prefix in self.prefixes:
            if name.startswith(prefix):
                obj: Any = self.real
                for part in name[len(prefix):].split("."):
                    obj = getattr(obj, part, None)
                    if obj is None:
                        return None
                return obj
        return None

    def conforms(self, value: Any, typ: str) -> bool:
        typ = typ.strip()
        if typ.startswith(("typing.Optional[", "Optional[")):
            return value is None or self.conforms(value, typ[typ.index("[") + 1:-1])
        if " | " in typ:
            return any(self.conforms(value, t) for t in typ.split(" | "))
        m = re.match(r"^(?:typing\.)?(?:List|list|Sequence|collections\.abc\.Sequence)\[(.*)\]$", typ)
        if m:
            return isinstance(value, (list, tuple)) and all(self.conforms(v, m.group(1)) for v in value)
        if typ in ("int", "typing.SupportsInt", "SupportsInt"):
            return isinstance(value, (int, np.integer))
        if typ in ("float", "typing.SupportsFloat", "SupportsFloat"):
            return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
        if typ == "bool":
            return isinstance(value, (bool, np.bool_))
        if typ == "str":
            return isinstance(value, str)
        if typ == "None":
            return value is None
        if typ in ("buffer", "typing_extensions.Buffer", "collections.abc.Buffer", "bytes"):
            return isinstance(value, (bytes, bytearray, memoryview, np.ndarray))
        if typ in ("tuple", "list"):
            return isinstance(value, (tuple, list))
        cls = self.resolve(typ)
        if cls is None:
            return True  # a type we do not model (numpy, capsules): not checked
        if isinstance(value, Stand):
            return issubclass(value._cls, cls)
        if isinstance(value, cls):
            return True
        if cls.__name__.startswith("Dims"):  # pybind11 converts sequences of ints to Dims
            return isinstance(value, (tuple, list)) and all(isinstance(v, (int, np.integer)) for v in value)
        return False

    def default(self, typ: str) -> Any:
        typ = typ.strip()
        if typ.startswith(("typing.Optional[", "Optional[")):
            return self.default(typ[typ.index("[") + 1:-1])
        if re.match(r"^(?:typing\.)?(?:List|list)\[", typ):
            return []
        simple = {"int": 1, "typing.SupportsInt": 1, "float": 0.0, "bool": True, "str": "", "None": None}
        if typ in simple:
            return simple[typ]
        cls = self.resolve(typ)
        if cls is None:
            return None
        if _is_enum(cls):
            return next(iter(cls.__members__.values()))
        return Stand(self, cls)

    # -- calls -----------------------------------------------------------------

    def check_call(self, where: str, sigs: list[Signature], args: tuple, kwargs: dict) -> Signature:
        for sig in sigs:
            if len(args) > len(sig.params):
                continue
            names = [p.name for p in sig.params]
            if any(k not in names[len(args):] for k in kwargs):
                continue
            bound = dict(zip(names, args)) | kwargs
            if any(p.name not in bound and not p.default for p in sig.params):
                continue
            if all(self.conforms(bound[p.name], p.type) for p in sig.params if p.name in bound):
                return sig
        shown = ", ".join(map(_show, args)) + "".join(f", {k}={_show(v)}" for k, v in kwargs.items())
        raise APIMisuse(f"TensorRT {self.version}: {where}({shown}) matches none of "
                        f"{' | '.join(s.text() for s in sigs) or 'its signatures (none readable)'}")

    def result(self, obj: Any, cls: type, name: str, args: tuple, sig_returns: str) -> Any:
        value = self.hook(obj, cls, name, args)
        if value is NotImplemented:
            return self.default(sig_returns)
        target = self.resolve(sig_returns)
        if value is None and target is not None and not _is_enum(target):
            return None  # pybind11 turns a null pointer the library returns into None
        if not self.conforms(value, sig_returns):
            raise AssertionError(f"scenario hook: {cls.__name__}.{name} returned {_show(value)}, "
                                 f"TensorRT {self.version} declares {sig_returns}")
        return value

    def module(self) -> "SpecModule":
        return SpecModule(self)


def _show(v: Any) -> str:
    return f"<{v._cls.__name__}>" if isinstance(v, Stand) else type(v).__name__ if not isinstance(v, (int, str)) else repr(v)


class SpecModule(types.ModuleType):
    """``import tensorrt`` for our code: the real module's attributes, classes wrapped."""

    def __init__(self, spec: Spec):
        super().__init__("tensorrt")
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "__version__", spec.version)

    def __getattr__(self, name: str) -> Any:
        spec = self._spec
        if not hasattr(spec.real, name):
            raise AttributeError(f"TensorRT {spec.version} has no tensorrt.{name}")
        spec.used.add(f"tensorrt.{name}")
        value = getattr(spec.real, name)
        return SpecClass(spec, value) if _is_binding_class(value) else value


class SpecClass:
    """A real class: its members read for real (recorded); called, constructed for real or
    stood in for."""

    def __init__(self, spec: Spec, cls: type):
        self._spec, self._cls = spec, cls

    def __getattr__(self, name: str) -> Any:
        if not hasattr(self._cls, name):
            raise AttributeError(f"TensorRT {self._spec.version} has no {self._cls.__name__}.{name}")
        self._spec.used.add(f"{self._cls.__name__}.{name}")
        value = getattr(self._cls, name)
        return SpecClass(self._spec, value) if _is_binding_class(value) else value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        spec, cls = self._spec, self._cls
        spec.used.add(f"{cls.__name__}()")
        sigs = signatures(getattr(cls.__init__, "__doc__", ""))
        spec.check_call(f"{cls.__name__}", [Signature(s.params, cls.__name__) for s in sigs], args, kwargs)
        if not any(isinstance(a, Stand) for a in (*args, *kwargs.values())):
            try:
                return cls(*args, **kwargs)
            except TypeError as err:
                if "nullptr" not in str(err):
                    raise
        value = spec.hook(None, cls, "__init__", args)
        return Stand(spec, cls) if value is NotImplemented else value


def _member(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


class Stand:
    """An instance of real class ``cls`` the library would have made."""

    def __init__(self, spec: Spec, cls: type, **state: Any):
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_state", dict(state))

    def __repr__(self) -> str:
        return f"<stand-in {self._cls.__name__} of TensorRT {self._spec.version}>"

    def __getattr__(self, name: str) -> Any:
        spec, cls = self._spec, self._cls
        member = _member(cls, name)
        if member is None or name.startswith("__"):
            raise AttributeError(f"TensorRT {spec.version}: {cls.__name__} has no attribute {name!r}")
        spec.used.add(f"{cls.__name__}.{name}")
        if isinstance(member, property):
            if name in self._state:
                return self._state[name]
            sig = signatures(member.fget.__doc__, method=False)
            returns = sig[0].returns if sig else "None"
            return spec.result(self, cls, name, (), returns)
        if callable(member):
            sigs = signatures(member.__doc__)

            def call(*args: Any, **kwargs: Any) -> Any:
                sig = spec.check_call(f"{cls.__name__}.{name}", sigs, args, kwargs)
                return spec.result(self, cls, name, args + tuple(kwargs.values()), sig.returns)

            return call
        return member

    def __setattr__(self, name: str, value: Any) -> None:
        spec, cls = self._spec, self._cls
        member = _member(cls, name)
        if not isinstance(member, property):
            raise APIMisuse(f"TensorRT {spec.version}: {cls.__name__} has no property {name!r} to set")
        if member.fset is None:
            raise APIMisuse(f"TensorRT {spec.version}: {cls.__name__}.{name} is read-only")
        sigs = signatures(member.fset.__doc__)
        spec.check_call(f"{cls.__name__}.{name} =", sigs, (value,), {})
        spec.used.add(f"{cls.__name__}.{name}=")
        self._state[name] = value

    def __bytes__(self) -> bytes:
        if "buffer protocol" not in (self._cls.__doc__ or ""):
            raise APIMisuse(f"TensorRT {self._spec.version}: {self._cls.__name__} has no buffer protocol")
        self._spec.used.add(f"{self._cls.__name__}.__bytes__")
        value = self._spec.hook(self, self._cls, "__bytes__", ())
        return b"" if value is NotImplemented else value

    def __bool__(self) -> bool:
        return True
