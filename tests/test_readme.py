"""The README's commands run as written: every `deepseek-tf X` / `python -m deepseek_tf.X` names a
subcommand that exists and only flags its `--help` lists; every `make T` names a Makefile target.
Also: the README stays a short user guide (<= 250 lines, one table) and no file a user reads talks
about work sessions."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PREFIXES = ("deepseek-tf", "make", "python -m deepseek_tf")
# `python -m deepseek_tf.MODULE` -> the deepseek-tf subcommand whose options it takes
MODULE_COMMANDS = {"train": "train", "evaluate": "evaluate", "export": "export", "search": "search", "bench": "bench"}


def _is_command(text: str) -> bool:
    return any(text == p or text.startswith(p + " ") or text.startswith(p + ".") for p in PREFIXES)


def fenced_commands(markdown: str) -> list[str]:
    """Commands in ```bash / ```sh / ``` blocks, continuation lines joined, comments kept for shlex."""
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)?[ \t]*\n(.*?)^```", markdown, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if _is_command(line):
                commands.append(line)
    return commands


def inline_commands(markdown: str) -> list[str]:
    """`...` spans outside fenced blocks that are commands (the results table's, the prose's)."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return [span.strip() for span in re.findall(r"`([^`\n]+)`", prose) if _is_command(span.strip())]


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return fenced_commands(text) + inline_commands(text)


def split(command: str) -> list[str]:
    return shlex.split(command, comments=True)


@cache
def makefile_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return frozenset(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:(?!=)", text, re.M))


@cache
def help_flags(subcommand: str) -> frozenset[str]:
    """The --flags that `deepseek-tf SUBCOMMAND --help` prints, run in-process (fast, no TensorFlow
    start-up per command)."""
    from deepseek_tf.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([subcommand, "--help"])
        except SystemExit:
            pass
    text = out.getvalue()
    assert text.strip(), f"deepseek-tf {subcommand} --help printed nothing"
    return frozenset(re.findall(r"(?<![\w-])(--[A-Za-z][\w-]*)", text))


def deepseek_invocation(tokens: list[str]) -> tuple[str | None, list[str]]:
    """(subcommand, arguments) of a deepseek-tf or python -m deepseek_tf... command line."""
    if tokens[0] == "deepseek-tf":
        args = tokens[1:]
    else:
        assert tokens[:2] == ["python", "-m"], tokens
        module = tokens[2]
        assert importlib.util.find_spec(module) is not None, f"no module {module}"
        name = module.split(".", 1)[1] if "." in module else "cli"
        if name in ("cli", "cli.main"):
            args = tokens[3:]
        else:
            assert name in MODULE_COMMANDS, f"python -m {module}: not a command module"
            return MODULE_COMMANDS[name], tokens[3:]
    if not args or args[0].startswith("-"):
        return None, args
    return args[0], args[1:]


def flags_of(args: list[str]) -> list[str]:
    """The --flags before a bare `--` (what follows it goes to another program: Beam's options)."""
    args = args[: args.index("--")] if "--" in args else args
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def check_train_config(command: str, args: list[str]) -> None:
    """`train --config FILE --set k=v ...`: the config loads strictly with those overrides."""
    from deepseek_tf.config import load_config
    from deepseek_tf.errors import UserError

    config, sets = None, []
    for flag, value in zip(args, args[1:]):
        if flag == "--config":
            config = value
        elif flag == "--set":
            sets.append(value)
    if config is None:
        return
    try:
        load_config(ROOT / config, sets)
    except UserError as e:
        raise AssertionError(f"{command!r}: {e}") from None


def check_command(command: str) -> None:
    """Raises AssertionError naming what in COMMAND does not exist."""
    tokens = split(command)
    if tokens[0] == "make":
        targets = [t for t in tokens[1:] if "=" not in t and not t.startswith("-")]
        for target in targets:
            assert target in makefile_targets(), f"{command!r}: no Makefile target {target!r}"
        return
    from deepseek_tf.cli.main import COMMANDS

    subcommand, args = deepseek_invocation(tokens)
    if subcommand is None:
        assert set(flags_of(args)) <= {"--help", "--version"}, f"{command!r}: unknown top-level flags"
        return
    assert subcommand in COMMANDS, f"{command!r}: no subcommand {subcommand!r} (have {', '.join(COMMANDS)})"
    known = help_flags(subcommand)
    unknown = [f for f in flags_of(args) if f not in known]
    assert not unknown, f"{command!r}: {unknown} not in `deepseek-tf {subcommand} --help`"
    if subcommand == "train":
        check_train_config(command, args)


def test_readme_has_commands_of_each_kind():
    commands = readme_commands()
    assert any(c.startswith("make ") for c in commands)
    assert any(c.startswith("deepseek-tf ") for c in commands)
    assert len(commands) >= 15


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps --help at the terminal width


def command_problems(commands: list[str]) -> list[str]:
    """What `check_command` finds wrong with each command, all of them (not just the first)."""
    problems = []
    for command in commands:
        try:
            check_command(command)
        except AssertionError as e:
            problems.append(str(e))
    return problems


def test_every_readme_command_exists_with_its_flags():
    problems = command_problems(readme_commands())
    assert not problems, "\n".join(problems)


def test_results_page_commands_exist_with_their_flags():
    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    problems = command_problems(fenced_commands(text) + inline_commands(text))
    assert not problems, "\n".join(problems)


def test_every_set_key_in_the_readme_is_a_config_key():
    from deepseek_tf.config import iter_settings

    keys = {key for key, _, _ in iter_settings()}
    used = re.findall(r"--set ([a-z_]+\.[a-z_]+)=", README.read_text(encoding="utf-8"))
    assert used and not sorted(set(used) - keys)


@pytest.mark.parametrize(
    "bad",
    [
        "deepseek-tf train --config configs/tiny.yaml --set train.no_such_key=1",
        "deepseek-tf evaluate --model all-MiniLM-L6-v2 --dataset d --no-such-flag",
        "deepseek-tf search --model m --corpus c --query q --rerank-fusion=0.3 --fusion 0.3",
        "deepseek-tf no-such-command --help",
        "python -m deepseek_tf.train --config c --workdir w --resume",
        "make no-such-target",
    ],
)
def test_the_check_catches_what_does_not_exist(bad):
    with pytest.raises(AssertionError):
        check_command(bad)


def test_the_check_passes_known_commands():
    for good in (
        "deepseek-tf train --config configs/tiny.yaml --set train.seed=1 --workdir w",
        "python -m deepseek_tf.evaluate --baseline bm25",
        "make evaluate MODEL=m RERANK=r",
        "deepseek-tf --help",
    ):
        check_command(good)


def test_extraction_joins_continuations_and_skips_other_lines():
    text = (
        "```bash\n. .venv/bin/activate\ndeepseek-tf search --model m \\\n    --query q   # a comment\n```\n"
        "and `make test` or `--set x=1`\n"
    )
    assert fenced_commands(text) == ["deepseek-tf search --model m      --query q   # a comment"]
    assert split(fenced_commands(text)[0]) == ["deepseek-tf", "search", "--model", "m", "--query", "q"]
    assert inline_commands(text) == ["make test"]


def test_readme_is_a_short_guide_with_one_table():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it <= 250 (reference goes to docs/)"
    separators = [l for l in lines if re.match(r"^\|\s*:?-{3,}", l)]
    assert len(separators) == 1, f"README.md should hold exactly one table (the results), found {len(separators)}"


def test_readme_links_to_files_that_exist():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to missing {target}"


def _user_facing_files():
    yield README
    yield ROOT / "Makefile"
    for folder, patterns in (("docs", ("*.md",)), ("configs", ("*.yaml", "*.yml")), ("deepseek_tf", ("*.py",))):
        for pattern in patterns:
            yield from sorted((ROOT / folder).rglob(pattern))


def test_no_work_session_wording():
    """Files describe the product, not the work periods that built it."""
    pattern = re.compile(r"\bsessions?\b", re.I)
    hits = []
    for path in _user_facing_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hits, "\n".join(hits)
