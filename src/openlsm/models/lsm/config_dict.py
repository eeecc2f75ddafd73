"""(Nested) config dataclasses <-> JSON-ready dicts, validated against the type hints.

    d = config_to_dict(LSMConfig.small())            # plain dicts, lists for tuples: json.dumps(d) works
    cfg = config_from_dict(LSMConfig, json.loads(s))  # tuples restored, nested dataclasses rebuilt

`config_from_dict` accepts only the declared fields (an unknown key raises OpenLSMError naming its path,
e.g. `point_transformer.enc_depth`), checks every value's type (int, float, bool, str, Literal, tuple, list,
optional, nested dataclass) and leaves absent fields at their defaults; the dataclasses' own `__post_init__`
checks then run as usual.
"""

from __future__ import annotations

import dataclasses
import types
import typing

from openlsm.errors import OpenLSMError


def config_to_dict(config) -> dict:
    """A dataclass instance -> nested dict of JSON types (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise OpenLSMError(f"expected a config dataclass instance, got {type(config).__name__}")
    return _plain(dataclasses.asdict(config))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_from_dict(cls: type, data, where: str = ""):
    """Rebuild dataclass `cls` from `data` (a dict as written by `config_to_dict`)."""
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise OpenLSMError(f"config {name} must be a dict, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise OpenLSMError(f"unknown {cls.__name__} field(s): {keys}")
    hints = typing.get_type_hints(cls)
    values = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise OpenLSMError(f"invalid {cls.__name__} config{f' at {where}' if where else ''}: {e}") from None


def _convert(tp, value, path: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, path)
            except OpenLSMError as e:
                errors.append(str(e))
        raise OpenLSMError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise OpenLSMError(f"{path} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise OpenLSMError(f"{path} must be a list, got {type(value).__name__}")
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length
            if len(value) != len(args):
                raise OpenLSMError(f"{path} must have {len(args)} entries, got {len(value)}")
            items = [_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            inner = args[0] if args else typing.Any
            items = [_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is typing.Any:
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        raise OpenLSMError(f"{path}: unsupported config type {tp}")
    if not ok:
        raise OpenLSMError(f"{path} must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value
