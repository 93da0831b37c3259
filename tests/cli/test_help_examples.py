"""Every leaf command's --help ends with a runnable example (issue 24), and each example parses.

The examples are parsed against the real Click commands, never run: a misspelt option, a missing
required argument or a value of the wrong type fails here, naming the command.
"""

from __future__ import annotations

import shlex
from contextlib import ExitStack
from typing import Any

import pytest
import typer

from dlsec.cli import main
from dlsec.cli._app import app
from dlsec.cli._lazy import load_all

try:  # recent Typer runs on its own copy of Click (typer._click), older Typer on Click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException  # type: ignore[assignment]


def leaf_commands() -> list[tuple[str, ...]]:
    """The path of every command that runs (not a group), e.g. ``("registry", "add")``."""
    load_all()
    paths: list[tuple[str, ...]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, (*path, name))
        else:
            paths.append(path)

    walk(typer.main.get_group(app), ())
    return paths


LEAVES = leaf_commands()


def help_examples(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> list[str]:
    """The lines of the "Example:" section of ``dlsec PATH --help``."""
    code = main([*path, "--help"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert "Example:" in lines, f"dlsec {' '.join(path)} --help has no Example: section\n{out}"
    examples: list[str] = []
    for line in lines[lines.index("Example:") + 1 :]:
        if line in ("Options:", "Arguments:") or (not line and examples):
            break  # the section ends at its first blank line
        if line:
            examples.append(line)
    return examples


def parse_example(line: str) -> tuple[str, ...]:
    """Parse one ``dlsec ...`` line down to its leaf command, as Click would, without running it.

    Returns the command path. Raises ``ClickException`` (a usage error) when the line does not
    parse: unknown command or option, missing argument, a value of the wrong type.
    """
    words = shlex.split(line)
    assert words and words[0] == "dlsec", line
    args = words[1:]
    cmd: Any = typer.main.get_command(app)
    name = "dlsec"
    path: list[str] = []
    with ExitStack() as stack:
        parent: Any = None
        while hasattr(cmd, "commands"):  # a group: resolve the sub-command as Click does
            # Parses the group's own options (--home, --device at the top) and stops at the sub-command.
            ctx = stack.enter_context(cmd.make_context(name, list(args), parent=parent))
            assert not ctx.resilient_parsing
            protected = getattr(ctx, "_protected_args", None)  # Click >= 8.2; 8.1 has protected_args
            if protected is None:
                protected = ctx.protected_args
            rest = [*protected, *ctx.args]
            if not rest:
                ctx.fail(f"{line!r}: no command after {name!r}")
            sub_name, sub, args = cmd.resolve_command(ctx, rest)
            assert sub is not None and sub_name is not None
            name, cmd, parent = sub_name, sub, ctx
            path.append(sub_name)
        stack.enter_context(cmd.make_context(name, list(args), parent=parent))
    return tuple(path)


@pytest.mark.parametrize("path", LEAVES, ids=[" ".join(p) for p in LEAVES])
def test_help_shows_a_runnable_example(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> None:
    examples = help_examples(capsys, path)
    command = "dlsec " + " ".join(path)
    assert examples, f"{command} --help: the Example: section is empty"
    for line in examples:
        assert line.startswith("dlsec "), f"{command} --help: example line {line!r} is not a dlsec command"
    resolved = []
    for line in examples:
        try:
            resolved.append(parse_example(line))
        except ClickException as exc:
            pytest.fail(f"{command} --help: example {line!r} does not parse: {exc.format_message()}")
    assert path in resolved, f"{command} --help: no example runs {command} itself: {examples}"


@pytest.mark.parametrize(
    "line",
    [
        "dlsec scan model.pt --no-such-option",  # unknown option
        "dlsec registry add runs/bc",  # missing required --name
        "dlsec audit proof first",  # not an int
        "dlsec audit consistency",  # missing required --old
        "dlsec no-such-command",
        "dlsec registry no-such-command bc",
        "dlsec --home",  # a global option without its value
        "dlsec --home /tmp/x",  # no command
        "dlsec registry --home /tmp/x list",  # global options go before the command
    ],
)
def test_the_parser_rejects_wrong_examples(line: str) -> None:
    with pytest.raises(ClickException):
        parse_example(line)


def test_the_parser_accepts_global_options() -> None:
    assert parse_example("dlsec --home ./h --device cpu registry list bc") == ("registry", "list")
    assert parse_example("dlsec eval -m zoo:digits-mlp -d builtin:digits") == ("eval",)
