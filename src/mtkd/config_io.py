"""Load YAML into pydantic models with errors that name the file and the key."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from mtkd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-5` as a float, as YAML 1.2 does: PyYAML (YAML 1.1) wants `1.0e-5`
    and returns the string "1e-5", which reached models as a str (embedding_regularizer: 1e-5
    crashed in a comparison). A key given twice in one mapping is an error, as YAML 1.2 says:
    PyYAML kept the last one, so `epochs: 1` above `epochs: 3` trained 3 epochs without a word."""

    def construct_document(self, node: yaml.Node) -> Any:
        _no_repeated_keys(node)  # on the node graph as written: merges (`<<: *base`) flatten later
        return super().construct_document(node)


def _no_repeated_keys(root: yaml.Node) -> None:
    """A key written twice in one mapping (block or flow) is an error naming both lines; keys a
    merge brings in (`<<: *base`, then `lr: 0.5`) are overrides, as YAML means them."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for key, value in node.value:
                todo += [key, value]
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                was = first.setdefault((key.tag, key.value), key)
                if was is not key:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key.value!r} is given twice (first on line {was.start_mark.line + 1}); "
                        "keep one", key.start_mark)
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """yaml.safe_load with YAML 1.2 floats (`1e-5`); every config and --set value goes through it."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _title(model: type[BaseModel]) -> str:
    """TrainConfig -> "train config": the kind of file in a message's first line."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", model.__name__).lower()


def _nested_paths(model: type[BaseModel], key: str, prefix: str = "", depth: int = 3) -> list[str]:
    """Where `key` is a field of a section below `model` ("weighting_params" -> "distill.weighting_params"),
    so a --set that forgot its section is told the full key."""
    found: list[str] = []
    if depth == 0:
        return found
    for name, field in model.model_fields.items():
        for sub in _models_in(field.annotation):
            if key in sub.model_fields:
                found.append(f"{prefix}{name}.{key}")
            found += _nested_paths(sub, key, f"{prefix}{name}.", depth - 1)
    return sorted(set(found))


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at `loc` takes (list indices and union branches walked through)."""
    models = [model]
    for part in loc:
        if isinstance(part, int):
            continue
        models = [sub for m in models if part in m.model_fields for sub in _models_in(m.model_fields[part].annotation)]
    return sorted({name for m in models for name, f in m.model_fields.items()} |
                  {f.alias for m in models for f in m.model_fields.values() if f.alias})


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in getattr(ann, "__args__", ()) for m in _models_in(a)]


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per problem: `file: key.path: what is wrong`."""
    lines = [f"{source}: invalid {_title(model)}:"]
    for e in err.errors():
        where = _loc(tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-"))))
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
            key = e["loc"][-1] if e["loc"] and isinstance(e["loc"][-1], str) else None
            paths = _nested_paths(model, key) if key and len(e["loc"]) == 1 else []
            close = difflib.get_close_matches(key, _fields_at(model, e["loc"][:-1]), n=1, cutoff=0.75) if key else []
            if paths:  # the exact key of a section (`mode` is distill.mode), before a near miss (`model`)
                msg = f"unknown key here; it belongs to a section: {' or '.join(paths)}"
            elif close:
                msg = f"unknown key; did you mean {close[0]!r}?"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r})"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{p}: file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read ({exc})") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ConfigError(f"{p}: file is empty; expected a YAML mapping")
    return data


def parse_model(model: type[M], data: Any, source: str) -> M:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, model)) from None


def load_model(model: type[M], path: str | Path) -> M:
    return parse_model(model, load_yaml(path), str(path))


def typed_params(cls: type, params: dict[str, Any], where: str) -> dict[str, Any]:
    """Each given value checked (and coerced, "3" -> 3) against its constructor annotation, so
    `params.dropout=abc` is a ConfigError naming the parameter, not a TypeError deep in a layer
    (an `Annotated[..., Field(gt=0)]` annotation checks the range too). `where` names the
    mapping in the message: "model 'dnn': params"."""
    from pydantic import TypeAdapter, ValidationError

    out = dict(params)
    for pname, value in params.items():
        ann = _annotation(cls, pname)
        if ann is None:
            continue
        try:
            out[pname] = TypeAdapter(ann).validate_python(value)
        except ValidationError as exc:
            why = "; ".join(e["msg"] for e in exc.errors())
            raise ConfigError(f"{where}.{pname} = {value!r}: {why}") from None
        except Exception:  # an annotation pydantic has no schema for: the constructor checks it
            continue
    return out


def _annotation(cls: type, pname: str) -> Any:
    """The evaluated annotation of `pname` in the first `__init__` up the hierarchy that declares it."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        p = inspect.signature(init).parameters.get(pname)
        if p is not None and p.kind is not p.VAR_KEYWORD:
            ann = p.annotation
            if ann is p.empty:
                return None
            if isinstance(ann, str):
                try:
                    ann = eval(ann, init.__globals__)  # noqa: S307 - the module's own annotation text
                except Exception:
                    return None
            return ann
    return None
