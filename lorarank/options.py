"""Settings as dataclasses: one definition gives a command its flags, its library call and its config keys.

Each command that a workflow rule runs keeps its settings in a dataclass beside the code that uses them
(`train.GRPOSettings`, `evaluate.EvalSettings`, ...). A field is a flag: `prompts_per_step` is
`--prompts-per-step`, with the field's default, help and allowed values (TRL's dataclass-driven
arguments, without the machinery). The CLI builds the dataclass from the parsed flags, the library
takes the dataclass, and the workflow writes flags from config values through `to_flags`, so a flag,
its default and its config key cannot drift apart (`lorarank.workflow_config` maps the keys).

Field metadata:
  help         the flag's help text;
  type         an argparse type (default: from the annotation: int, float, str, or a comma list);
  choices      allowed values;
  required     the flag must be given (no default makes sense on the command line);
  operational  True for a setting that changes how a job runs, never what it produces (checkpoint
               cadence): not part of a run's identity, and the workflow passes it outside the
               rerun-triggering params;
  when         {other_field: allowed values}: the field is read only then (the workflow passes it only
               then, so that changing the random arm's seed does not rerun the uniform arm).

Standard library only: the Snakefile imports the settings classes.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import typing

from lorarank.argtypes import csv_list
from lorarank.errors import UserError


def opt(default, help: str, **meta):
    """A settings field: its default, its help, and the metadata above."""
    meta["help"] = help
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _base_type(hint):
    """(python type, is_list) of an annotation such as `int`, `float | None`, `list[int]`."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list:
        return args[0], True
    if args:  # Optional[X] / X | None
        return _base_type(args[0])
    return hint, False


def _list_of(item):
    def parse(text: str):
        try:
            return [item(x) for x in csv_list(text)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of {item.__name__} values") from None
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the settings class `cls`."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kw = {"help": meta.get("help"), "default": default, "dest": f.name, "required": meta.get("required", False)}
        base, is_list = _base_type(hints[f.name])
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = meta.get("type") or (_list_of(base) if is_list else base)
            if "choices" in meta:
                kw["choices"] = meta["choices"]
        parser.add_argument(flag_name(f.name), **kw)


def from_args(cls, args: argparse.Namespace):
    """The settings in parsed arguments (fields only; I/O flags stay with the command)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


class _Refusing(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(message)


def parse(cls, argv: list[str]):
    """The settings a command builds from `argv` (its flags for `cls`); a bad value is a UserError."""
    parser = _Refusing(add_help=False)
    add_arguments(parser, cls)
    return from_args(cls, parser.parse_args(argv))


def identity(settings) -> dict:
    """The settings that make a result what it is: every field but the operational ones."""
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if not f.metadata.get("operational")}


def reads(cls, name: str, values: dict) -> bool:
    """Whether field `name` is read given the other values (its `when` condition)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return all(values.get(k) in allowed for k, allowed in f.metadata.get("when", {}).items())


def to_flags(cls, values: dict, operational: bool = False) -> str:
    """Command-line flags for `values` (field -> value), the inverse of `add_arguments`: only the
    fields given, read (`when`) and of the requested kind; None is left out, lists are comma lists."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in values or bool(f.metadata.get("operational")) != operational or not reads(cls, f.name, values):
            continue
        value = values[f.name]
        base, _ = _base_type(hints[f.name])
        if base is bool:
            out.append(flag_name(f.name) if value else "--no-" + f.name.replace("_", "-"))
        elif value is None or value == []:
            continue
        else:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            out.append(f"{flag_name(f.name)} {shlex.quote(text)}")
    return " ".join(out)
