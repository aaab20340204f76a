"""docs/configuration.md, generated from the schema (`make docs`)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from deepseek_tf.config.schema import Config, iter_settings


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "list of str"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return f"{args[0].__name__} or null" if args else tp.__name__


def _yaml_value(value: Any) -> str:
    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def reference_markdown() -> str:
    """docs/configuration.md: every key with its type, default, allowed values and description."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the dataclasses in deepseek_tf/config/schema.py by `make docs`; do not edit by hand. -->",
        "",
        "A config is a YAML file of the sections below (`python -m deepseek_tf.train --config FILE`); "
        "`--set section.key=value` overrides one key with the value as written, read by the key's type: "
        "a str key takes the text itself (`#` and `: ` included; a whole-text `'quoted'` string is "
        "unquoted), numbers are decimal, a bool is `true` or `false`, a list is `[a, b]`. "
        "Every key is optional. Loading is strict: an "
        "unknown key, a value of the wrong type, outside its range or not among its choices stops "
        "the command with one line naming the key and the file, before anything is written. "
        "`null` turns off a key whose type says `or null`.",
        "",
    ]
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        lines += [
            f"## `{section.name}`: {section.metadata['doc']}",
            "",
            "| key | type | default | allowed | description |",
            "|---|---|---|---|---|",
        ]
        for key, tp, f in iter_settings(hints[section.name], f"{section.name}."):
            choices, rule = f.metadata.get("choices"), f.metadata.get("range")
            allowed = ", ".join(f"`{c}`" for c in choices) if choices else f"`{rule}`" if rule else "any"
            doc = f.metadata["doc"].replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_name(tp)} | `{_yaml_value(f.default)}` | {allowed} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def write_reference(path: str | Path = "docs/configuration.md") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reference_markdown(), encoding="utf-8")
    return path
