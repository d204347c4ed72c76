"""Every `edge-fashion ...` and `classify.py ...` command the READMEs and docs/ show exists, with the
options it shows: each is read out of the Markdown (code blocks everywhere; inline code too in the
READMEs, whose prose is a user's guide, where docs/accuracy.md's prose records the options of past
experiments) and checked against the click command or the argparse parser itself.

The test reads whatever the files say, so a rewritten README is checked as it stands."""

import importlib.util
import pathlib
import re
import shlex

import click
import pytest

from conftest import REPO
from edge_fashion import cli

READMES = (REPO / "README.md", REPO / "device" / "README.md")
DOCS = tuple(sorted((REPO / "docs").glob("*.md")))
OPERATORS = {"&&", "||", ";", "|", "&"}
REDIRECTIONS = re.compile(r"^\d?(<|>|>>|<<)$")
PREFIXES = re.compile(r"^(\$|sudo|env|nice|-n|timeout|\d+|\w+=.*)$")  # Before the command: `$ `, `sudo`, `A=1`.
PYTHON = re.compile(r"^(.*/)?python[0-9.]*$")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|[<>…{}]|\.\.\.")  # DIR, <label>, …: a value the user fills in.


def load_classify():
    """device/classify.py as a module, for its parser (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("classify", REPO / "device" / "classify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLASSIFY_PARSER = load_classify().build_parser()


# Reading the commands out of Markdown.

def code_lines(text: str) -> list[str]:
    """The lines of the fenced and the indented code blocks, continued lines (ending in `\\`) joined."""
    lines, fenced, indented, previous_blank = [], False, False, True
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, indented = not fenced, False
        elif fenced:
            lines.append(line.strip())
        elif line.startswith(("    ", "\t")) and line.strip() and (previous_blank or indented):
            indented = True
            lines.append(line.strip())
        elif line.strip():
            indented = False
        previous_blank = not line.strip()
    joined = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line
        else:
            joined.append(line)
    return joined


def inline_code(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def commands(line: str) -> list[tuple[str, list[str]]]:
    """(program, arguments) for each `edge-fashion` or `classify.py` the shell line runs."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:  # Unbalanced quotes: prose, not a command.
        return []
    found, segment = [], []
    for token in [*tokens, ";"]:
        if token not in OPERATORS:
            segment.append(token)
            continue
        command = program(segment)
        if command:
            found.append(command)
        segment = []
    return found


def program(segment: list[str]) -> tuple[str, list[str]] | None:
    words = list(segment)
    while words and PREFIXES.match(words[0]):
        words.pop(0)
    if words and PYTHON.match(words[0]):
        words.pop(0)
        if words[:2] == ["-m", "edge_fashion"]:
            return "edge-fashion", without_redirections(words[2:])
        while words and words[0].startswith("-"):  # python's own options, -u, -X importtime ...
            words.pop(0)
    if words and pathlib.PurePosixPath(words[0]).name == "edge-fashion":
        return "edge-fashion", without_redirections(words[1:])
    if words and pathlib.PurePosixPath(words[0]).name == "classify.py":
        return "classify.py", without_redirections(words[1:])
    return None


def without_redirections(arguments: list[str]) -> list[str]:
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif REDIRECTIONS.match(argument):
            skip = True
        else:
            kept.append(argument)
    return kept


def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(where, program, arguments) of every command shown in the READMEs and docs/, once each."""
    found = {}
    for path in READMES + DOCS:
        text = path.read_text()
        lines = code_lines(text) + (inline_code(text) if path in READMES else [])
        for line in lines:
            for name, arguments in commands(line):
                found.setdefault(f"{path.relative_to(REPO)}: {line}", (name, arguments))
    return [(where, name, arguments) for where, (name, arguments) in found.items()]


# Checking them against the parsers.

def check_options(arguments: list[str], options: dict, takes_value, choices, positionals: int | None) -> list[str]:
    """What is wrong with `arguments` for a parser with `options` {option string: parameter}."""
    problems, given, index = [], 0, 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if argument == "--":
            given += len(arguments) - index
            break
        if not argument.startswith("-") or argument == "-":
            given += 1
            continue
        name, equals, value = argument.partition("=")
        if name not in options:
            problems.append(f"no option {name}")
            continue
        if takes_value(options[name]) and not equals:
            value = arguments[index] if index < len(arguments) else None
            index += 1
        allowed = choices(options[name])
        if allowed and value and not PLACEHOLDER.search(value) and value not in allowed:
            problems.append(f"{name} {value}: not one of {', '.join(map(str, allowed))}")
    if positionals is not None and given > positionals:
        problems.append(f"{given} arguments, at most {positionals} taken")
    return problems


def check_edge_fashion(arguments: list[str]) -> list[str]:
    if not arguments or arguments[0] in ("--help", "-h", "--version"):
        return []
    command = cli.cli.commands.get(arguments[0])
    if command is None:
        return [f"no command {arguments[0]!r} (there are {', '.join(sorted(cli.cli.commands))})"]
    options = {"--help": None, "-h": None}
    for param in command.params:
        if isinstance(param, click.Option):
            options.update({name: param for name in param.opts + param.secondary_opts})
    arguments_taken = [param.nargs for param in command.params if isinstance(param, click.Argument)]
    return check_options(
        arguments[1:], options,
        takes_value=lambda param: param is not None and not param.is_flag and not param.count,
        choices=lambda param: param.type.choices if param is not None and isinstance(param.type, click.Choice) else None,
        positionals=None if -1 in arguments_taken else sum(arguments_taken))


def check_classify(arguments: list[str]) -> list[str]:
    # argparse keeps its option strings and their actions in this map and offers no public one.
    options = CLASSIFY_PARSER._option_string_actions
    return check_options(arguments, options, takes_value=lambda action: action.nargs != 0,
                         choices=lambda action: action.choices, positionals=None)


CHECKS = {"edge-fashion": check_edge_fashion, "classify.py": check_classify}
DOCUMENTED = documented_commands()


def test_the_documents_show_commands_of_both_programs():
    programs = [name for _, name, _ in DOCUMENTED]
    assert programs.count("edge-fashion") >= 10 and programs.count("classify.py") >= 10, programs


@pytest.mark.parametrize("where, name, arguments", DOCUMENTED, ids=[where[:90] for where, _, _ in DOCUMENTED])
def test_a_documented_command_exists_with_its_options(where, name, arguments):
    assert not CHECKS[name](arguments), (where, CHECKS[name](arguments))


@pytest.mark.parametrize("line, problem", [
    ("edge-fashion evaluate --out artifacts --epochs 5", "no option --epochs"),
    ("edge-fashion build --preset camera", "--preset camera: not one of"),
    ("$ edge-fashion frobnicate", "no command 'frobnicate'"),
    ("edge-fashion pull pi@board:frames mine extra", "3 arguments, at most 2 taken"),
    ("cd fashion && .venv/bin/python current/classify.py photo.jpg --no-such-option", "no option --no-such-option"),
    ("python3 classify.py --runtime tflite-runtime", "--runtime tflite-runtime: not one of"),
])
def test_the_check_finds_what_is_wrong(line, problem):
    (name, arguments), = commands(line)
    assert any(problem in found for found in CHECKS[name](arguments)), CHECKS[name](arguments)


def test_the_reader_finds_commands_where_a_shell_would():
    assert commands("cd fashion && .venv/bin/python current/classify.py - < photo.jpg  # one image") == [
        ("classify.py", ["-"])]
    assert commands("python -m edge_fashion build --preset fast | tee log") == [
        ("edge-fashion", ["build", "--preset", "fast"])]
    assert commands("artifacts/device/   the bundle: model_int8.tflite, classify.py,") == []
    assert code_lines("text\n\n    edge-fashion build \\\n        --preset fast\n\nmore\n") == [
        "edge-fashion build  --preset fast"]
