"""Loading a config strictly: YAML (or a dict) and `--set` overrides -> a frozen `Config`.

An unknown or duplicate key, a value of the wrong type, outside its range or not among its
choices is a `ConfigError` naming the dotted key and the file (exit code 2 on the CLI).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from deepseek_tf.config.schema import RETIRED, Config, iter_settings
from deepseek_tf.errors import ConfigError

_BOUND = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")
_INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^\]\)\s]+)\s*([\])])$")
# Numbers as written in decimal: no YAML 1.1 octal (`010`), hex, sexagesimal (`1:30`) or `1_0`.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NON_FINITE = re.compile(r"[+-]?\.?(nan|inf|infinity)", re.IGNORECASE)  # parsed only to be refused
_NULL = ("", "~", "null", "Null", "NULL")  # YAML's spellings of null: unsets an `or null` key


def in_range(value: float, rule: str) -> bool:
    """Whether `value` satisfies a `setting` range rule (see `setting`)."""
    rule = rule.strip()
    m = _BOUND.match(rule)
    if m:
        op, bound = m.group(1), float(m.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
    m = _INTERVAL.match(rule)
    if not m:
        raise ValueError(f"not a range rule: {rule!r}")
    lo, hi = float(m.group(2)), float(m.group(3))
    above = value >= lo if m.group(1) == "[" else value > lo
    below = value <= hi if m.group(4) == "]" else value < hi
    return above and below


def _check_rule(value: Any, f: dataclasses.Field, key: str, source: str, written: Any = None) -> None:
    """The key's range or choices (its `setting` metadata); None (an unset Optional) passes.
    `written`: the value as the file or --set gave it, for the message."""
    written = value if written is None else written
    if value is None:
        return
    rule, choices = f.metadata.get("range"), f.metadata.get("choices")
    if isinstance(value, tuple):  # a list key: the rule holds for every item
        for item in value:
            _check_rule(item, f, key, source, written)
        return
    if rule and not in_range(value, rule):
        shown = rule if rule[0] in "<>" else f"in {rule}"
        raise ConfigError(f"{source}: '{key}' must be {shown}, got {written!r}")
    if choices and value not in choices:
        raise ConfigError(f"{source}: '{key}' must be one of {', '.join(choices)}, got {written!r}")


# Closed sets of values, from the `setting` metadata (kept as a table for callers that list them).
CHOICES: dict[str, tuple[str, ...]] = {
    key: f.metadata["choices"] for key, _, f in iter_settings() if f.metadata.get("choices")
}


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, key, source)
    if origin is tuple:  # a list of strings in YAML (`[text, image]`)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{source}: '{key}' must be a list of strings, got {value!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{source}: '{key}' names an item twice: {value!r}")
        return tuple(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        value = _number(value, float)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(f"{source}: '{key}' must be {tp.__name__}, got {value!r}")
    if tp is float:
        try:
            value = float(value)
        except OverflowError:  # an int past float's range
            value = math.inf if value > 0 else -math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
    return value


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key in fields:
            continue
        if prefix + key in RETIRED:
            if raw[key] != RETIRED[prefix + key]:
                raise ConfigError(f"{source}: '{prefix}{key}' is no longer a setting; remove it")
            continue
        raise ConfigError(f"{source}: unknown key '{prefix}{key}'")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        tp, key = hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key + ".", source)
        else:
            value = _check_type(raw[name], tp, key, source)
            _check_rule(value, f, key, source, raw[name])
            kwargs[name] = value
    return cls(**kwargs)


def _number(text: str, tp: type) -> Any:
    """`text` as a decimal int (or, for a float key, an int or a float); else `text` unchanged,
    for the type check to refuse naming it."""
    number = text.strip()
    if _INT.fullmatch(number):
        try:
            return int(number, 10)  # an int for a float key too: a range message shows `-1` as written
        except ValueError:  # past Python's 4300-digit limit: a float key reads it as a float
            pass
    if tp is float and _FLOAT.fullmatch(number):
        return float(number)
    if tp is float and _NON_FINITE.fullmatch(number):
        return float(number.replace(".", ""))
    return text


def _override_type(parts: list[str]) -> Any:
    """The declared type of the key `parts` names, or None (a section, an unknown or retired key)."""
    cls: Any = Config
    for i, part in enumerate(parts):
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        if part not in fields:
            return None
        cls = typing.get_type_hints(cls)[part]
        if i == len(parts) - 1:
            return None if dataclasses.is_dataclass(cls) else cls
    return None


def _parse_override(text: str, tp: Any) -> Any:
    """A `--set` value as written, read by its key's type `tp`: a string key takes the text itself
    (a whole-text 'quoted' or "quoted" string is unquoted, the way to write '' or 'null'), a number
    key decimal digits only, a bool key true or false; an `or null` key is unset by null, ~ or
    nothing. List keys (and keys that are not settings) are read as YAML: `[text, image]`.
    A value that is not of the type is kept as text, for `_check_type` to refuse naming it."""
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
    if optional:
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if not text.strip() or (optional and text.strip() in _NULL):
        return None  # for a key that is not optional, "must be <type>, got None"
    if tp is str:
        quoted = text.strip()
        if len(quoted) >= 2 and quoted[0] == quoted[-1] and quoted[0] in "'\"":
            try:
                unquoted = yaml.safe_load(quoted)
            except yaml.YAMLError:
                return text
            return unquoted if isinstance(unquoted, str) else text
        return text
    if tp in (int, float):
        return _number(text, tp)
    if tp is bool:
        return {"true": True, "false": False}.get(text.strip().lower(), text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"--set: expected key.sub=value, got '{override}'")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set: '{dotted}' does not name a config key")
    node[parts[-1]] = _parse_override(text, _override_type(parts))


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    return _build(Config, raw, "", source)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what would silently change a config: a key given twice (PyYAML keeps
    the last, so a second `train:` block dropped the first) and aliases (`*name`): a few lines of
    nested aliases expand to billions of nodes (an 8 MB error line, 912 MB of memory)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not accepted in a config: write the values out", mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {str(key)[:40]!r} (first at line {seen[key]}; PyYAML would keep only the last)",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config strictly and applies `key.sub=value` overrides."""
    raw: dict = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = path.read_bytes()
        try:
            raw = yaml.load(data.decode("utf-8"), Loader=_StrictLoader) or {}
        except UnicodeDecodeError as e:  # the line, so the bad byte can be found
            line = data[: e.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 (byte {e.start})") from None
        except yaml.YAMLError as e:  # PyYAML's marks are 0-based; editors count lines from 1
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = (getattr(e, "problem", None) or str(e).splitlines()[0])[:200]  # one short line, whatever the input
            raise ConfigError(f"{where}: not valid YAML ({what})") from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: expected a YAML mapping of sections (model:, data:, train:), got {type(raw).__name__}"
            )
    for override in overrides:
        _apply_override(raw, override)
        source = f"{source} (with --set)" if "--set" not in source else source
    return config_from_dict(raw, source)


def config_to_dict(config: Config) -> dict:
    """The config as plain YAML/JSON values (list keys as lists)."""
    return {
        section: {k: list(v) if isinstance(v, tuple) else v for k, v in keys.items()}
        for section, keys in dataclasses.asdict(config).items()
    }


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def add_run_arguments(p: argparse.ArgumentParser, config_help: str, set_example: str, workdir_help: str) -> None:
    """--config, --set, --workdir and --quiet: the arguments every command that trains takes."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {set_example} (repeatable)",
    )
    p.add_argument("--workdir", default=None, help=workdir_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_and_workdir(args: argparse.Namespace, suffix: str = "") -> tuple[Config, str]:
    """The config of `add_run_arguments`' arguments, and --workdir or runs/<config name><suffix>."""
    return load_config(args.config, args.overrides), args.workdir or f"runs/{Path(args.config).stem}{suffix}"
