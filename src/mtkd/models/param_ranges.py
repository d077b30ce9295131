"""The valid range of the zoo's shared hyper-parameter names, checked before a model is built:
a constructor given `hidden_units: [-1]` died in torch ("negative dimension"), `[0]` built a
DNN that ignores its input, and AutoInt took a `dropout` of 1.5 for its unused DNN branch.
One table, because the names mean the same thing in every model that takes them."""

from __future__ import annotations

from typing import Any, Callable

from mtkd.errors import ConfigError

_COUNTS = ("embedding_dim", "attention_dim", "attention_layers", "num_heads", "heads", "feedforward", "filters",
           "layers", "num_cross_layers")


def _count(v: Any) -> str | None:
    return None if v >= 1 else "must be 1 or more"


def _units(empty_ok: bool) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not v and not empty_ok:
            return "must list at least one layer size"
        return next((f"has {u}: every size must be 1 or more" for u in v if u < 1), None)
    return check


RANGES: dict[str, Callable[[Any], str | None]] = {
    **{name: _count for name in _COUNTS},
    "hidden_units": _units(empty_ok=True),  # none: the MLP passes its input through
    "attention_units": _units(empty_ok=False),
    "cin_layer_units": _units(empty_ok=False),
    "kernel_sizes": _units(empty_ok=False),
    "dropout": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "bi_dropout": lambda v: None if 0 <= v < 1 else "must be in [0, 1)",
    "embedding_regularizer": lambda v: None if v >= 0 else "must be 0 or more",
    "embedding_init_std": lambda v: None if v > 0 else "must be more than 0",
    "reduction_ratio": lambda v: None if v > 0 else "must be more than 0",
    "low_rank": lambda v: None if v >= 0 else "must be 0 (full rank) or more",
    "num_experts": _count,
}


def check_ranges(model: str, params: dict[str, Any]) -> None:
    """Each given value of a name in RANGES inside its range; else a ConfigError naming it."""
    for name, value in params.items():
        rule = RANGES.get(name)
        why = rule(value) if rule is not None and value is not None else None
        if why:
            raise ConfigError(f"model {model!r}: params.{name} = {value!r} {why}")


def _cin_halves(p: dict[str, Any]) -> str | None:
    units = list(p.get("cin_layer_units") or [])
    odd = [u for u in units[:-1] if u % 2]
    if p.get("split_half", True) and odd:
        return (f"params.cin_layer_units = {units}: with split_half each layer but the last passes half its "
                f"maps on, so those sizes must be even (got {odd[0]})")
    return None


def _heads_divide(p: dict[str, Any]) -> str | None:
    if "heads" in p and "embedding_dim" in p and p["embedding_dim"] % p["heads"]:
        return f"params.embedding_dim {p['embedding_dim']} must be a multiple of params.heads {p['heads']}"
    return None


def _experts_need_low_rank(p: dict[str, Any]) -> str | None:
    if "num_experts" in p["given"] and not p.get("low_rank"):
        return ("params.num_experts is for DCN-Mix, the low-rank mixture: it does nothing at low_rank 0 (full "
                "rank); give params.low_rank too (e.g. 32) or drop num_experts")
    return None


# rules over several parameters at once: the model's defaults updated with the given values, and
# `given`, the names set (a key that does nothing without another is refused, not ignored)
TOGETHER: dict[str, list[Callable[[dict[str, Any]], str | None]]] = {
    "xdeepfm": [_cin_halves],
    "text_transformer": [_heads_divide],
    "dcnv2": [_experts_need_low_rank],
}


def check_together(model: str, params: dict[str, Any], given: set[str]) -> None:
    """`params` (the model's defaults updated with the given values) consistent with each other."""
    for rule in TOGETHER.get(model, []):
        if why := rule({**params, "given": given}):
            raise ConfigError(f"model {model!r}: {why}")
