"""YAML in, frozen typed dataclasses out.

Loading is strict: an unknown key, a value of the wrong type, outside its range or not among
its choices is a `ConfigError` naming the dotted key and the file (exit code 2 on the CLI).
`--set section.key=value` overrides are read by the key's declared type (a string key takes the
text as written; numbers are decimal) and checked the same way.
Each key's default, description and rule live in one place, its `setting(...)` in `schema`;
the load-time checks (`loading`) and docs/configuration.md (`reference`, `make docs`) are both
derived from them.
"""

from deepseek_tf.config.loading import (
    add_run_arguments,
    config_and_workdir,
    config_from_dict,
    config_to_dict,
    in_range,
    load_config,
    save_config,
)
from deepseek_tf.config.reference import reference_markdown, write_reference
from deepseek_tf.config.schema import (
    QUANT_MODES,
    RETIRED,
    Config,
    DataConfig,
    EvalConfig,
    ExportConfig,
    ModelConfig,
    TrainConfig,
    iter_settings,
    setting,
)

__all__ = [
    "QUANT_MODES",
    "RETIRED",
    "Config",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "ModelConfig",
    "TrainConfig",
    "add_run_arguments",
    "config_and_workdir",
    "config_from_dict",
    "config_to_dict",
    "in_range",
    "iter_settings",
    "load_config",
    "reference_markdown",
    "save_config",
    "setting",
    "write_reference",
]
