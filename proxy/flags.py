"""Command-line flags generated from a pydantic settings model, so the flags and the settings cannot drift.

Every field of the model becomes ``--field-name`` (a nested model's fields
``--outer-inner``, e.g. ``--embedder-backend``), typed from its annotation:
``Literal`` values are choices, ``bool`` gives ``--x/--no-x``, ``bool |
Literal[...]`` takes ``true``, ``false`` or the literals, lists repeat the
flag, anything else that is not a scalar takes JSON. Help is the field's
description, followed by its default and its environment variable. A field's
``json_schema_extra`` may name the ``flag`` (``--upstream`` for
``upstreams``), a ``metavar`` and the ``shown_default``.

Every flag defaults to ``None`` (absent), so :func:`settings_overrides`
passes only what was given and environment variables and the config file
still apply to the rest.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

NESTED = "__"  # separates a nested field in a flag's dest, as in the environment variable


def _members(annotation: Any) -> tuple[list[Any], bool]:
    """The union members of ``annotation`` other than None, and whether None was one."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], False


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    members, _ = _members(annotation)
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return None


def _true_false_or(literals: list[str]):
    def parse(text: str) -> bool | str:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if text in literals:
            return text
        raise argparse.ArgumentTypeError(f"expected true, false or {', '.join(literals)}")

    parse.__name__ = "true/false/" + "/".join(literals)  # argparse names it in its error
    return parse


_SCALARS: dict[Any, tuple[Any, str]] = {int: (int, "N"), float: (float, "X"), str: (str, "TEXT"),
                                       SecretStr: (str, "SECRET"), Path: (Path, "PATH")}


def _kind(annotation: Any) -> dict[str, Any]:
    """argparse keywords (type, choices, action, metavar) for one field's annotation."""
    members, _ = _members(annotation)
    literals = [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    others = [m for m in members if typing.get_origin(m) is not Literal]
    if literals and not others:
        return {"choices": literals, "metavar": "{" + ",".join(map(str, literals)) + "}"}
    if others == [bool] and literals:
        return {"type": _true_false_or([str(v) for v in literals]),
                "metavar": "{" + ",".join(["true", "false", *map(str, literals)]) + "}"}
    if others == [bool]:
        return {"action": argparse.BooleanOptionalAction}
    if len(others) == 1 and others[0] in _SCALARS:
        typ, metavar = _SCALARS[others[0]]
        return {"type": typ, "metavar": metavar}
    if len(others) == 1 and typing.get_origin(others[0]) is list:
        (item,) = typing.get_args(others[0]) or (str,)
        typ, metavar = _SCALARS.get(item, (json.loads, "JSON"))
        return {"type": typ, "metavar": metavar, "action": "append"}
    return {"type": json.loads, "metavar": "JSON"}


def _shown_default(field: FieldInfo, extra: dict[str, Any]) -> str:
    if "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == "":
        return '""'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def add_settings_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel], *,
                       env_prefix: str, only: Iterable[str] | None = None, _dest: str = "",
                       _flag: str = "--") -> None:
    """Add one flag per field of ``model`` (or of the fields named in ``only``) to ``parser``."""
    wanted = set(only) if only is not None else None
    for name, field in model.model_fields.items():
        if wanted is not None and name not in wanted:
            continue
        dest, flag = _dest + name, _flag + name.replace("_", "-")
        env = (env_prefix + dest).upper()
        nested = _nested_model(field.annotation)
        if nested is not None:
            group = parser.add_argument_group(f"{name} ({field.description or nested.__doc__ or name})")
            add_settings_flags(group, nested, env_prefix=env_prefix, _dest=dest + NESTED, _flag=flag + "-")
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        kwargs = _kind(field.annotation)
        if "metavar" in extra:
            kwargs["metavar"] = extra["metavar"]
        what = (field.description or name.replace("_", " ")).replace("%", "%%")
        default = _shown_default(field, extra).replace("%", "%%")
        parser.add_argument(str(extra.get("flag", flag)), dest=dest, default=None,
                            help=f"{what} [default: {default}; env {env}]", **kwargs)


def settings_overrides(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The settings given as flags, nested like the model (absent flags are left out)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if value is None:
            continue
        *outer, name = dest.split(NESTED)
        if (outer[0] if outer else name) not in model.model_fields:
            continue  # not a settings flag (--config, --local-llm-port, ...)
        target = out
        for part in outer:
            target = target.setdefault(part, {})
        target[name] = value
    return out
