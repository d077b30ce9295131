"""Models register by name so a YAML file can say `model: deepfm` and a user can add one.

Hyper-parameters are the keyword arguments of a model's constructor: the signature is the
single source of truth for which names are valid and what their defaults are.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from mtkd.config_io import typed_params
from mtkd.errors import ConfigError
from mtkd.models.param_ranges import check_ranges, check_together

if TYPE_CHECKING:
    from mtkd.data.feature_map import FeatureMap
    from mtkd.models.base import CTRModel

MODELS: dict[str, type] = {}

T = TypeVar("T", bound=type)

# Constructor arguments that are not hyper-parameters.
_NOT_PARAMS = {"self", "feature_map"}


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: `@register_model("deepfm")` makes `build_model("deepfm", ...)` work."""

    def add(cls: T) -> T:
        known = MODELS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"model name {name!r} is already registered by {known.__qualname__}")
        MODELS[name] = cls
        cls.model_name = name  # type: ignore[attr-defined]
        return cls

    return add


def _signature_params(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of `cls.__init__`, following `**params` up the class hierarchy.

    A subclass that only changes defaults (AutoInt+ over AutoInt) declares the changed
    arguments and forwards `**params`; its valid names are its own plus its parent's.
    """
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        forwards = False
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in _NOT_PARAMS:
                params.setdefault(p.name, p)
        if not forwards:
            break
    return params


def _get_class(name: str) -> type:
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown model {name!r}; known models: {known}")
    return MODELS[name]


def model_params(name: str) -> dict[str, Any]:
    """Default hyper-parameters of a model (tuples shown as lists, as YAML writes them)."""
    out: dict[str, Any] = {}
    for pname, p in _signature_params(_get_class(name)).items():
        default = None if p.default is p.empty else p.default
        out[pname] = list(default) if isinstance(default, tuple) else default
    return out


def check_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` typed for model `name`; an unknown name or hyper-parameter, or a value of the
    wrong type, is a ConfigError. Needs no dataset, so a whole experiment is checked up front."""
    cls = _get_class(name)
    valid = _signature_params(cls)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for model {name!r}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    typed = typed_params(cls, params, f"model {name!r}: params")
    check_ranges(name, typed)
    defaults = {k: p.default for k, p in valid.items() if p.default is not inspect.Parameter.empty}
    check_together(name, {**defaults, **typed}, set(typed))
    return typed


def build_model(name: str, feature_map: "FeatureMap", **params: Any) -> "CTRModel":
    """Build a registered model; an unknown name or hyper-parameter is a ConfigError."""
    return _get_class(name)(feature_map, **check_params(name, params))


def describe(name: str) -> str:
    """A model's one-line description (`mtkd models`): its module docstring's first sentence, or
    its class's where the module registers several models (the two text encoders)."""
    cls = _get_class(name)
    first = _sentence(cls.__doc__ or "")
    shared = sum(c.__module__ == cls.__module__ for c in MODELS.values()) > 1
    if shared and first and not first.startswith("hidden:"):
        return first
    return _sentence(sys.modules[cls.__module__].__doc__ or "")


def _sentence(doc: str, width: int = 110) -> str:
    """The first sentence of a docstring's first paragraph (its lines joined), cut at a word with
    an ellipsis when longer than `width`: a line of the docstring ends mid-sentence."""
    para = " ".join(doc.strip().split("\n\n")[0].split())
    end = para.find(". ")
    text = para if end < 0 else para[:end + 1]
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
