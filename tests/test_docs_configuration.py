"""docs/configuration.md and the code agree on each variable and its default.

The code's default is read from the source, not from a running process: the second argument
of every `os.environ.get("NAME", default)`-like call (`env_int`, `env_bool`, `env_list`,
`_env_float` ...) whose default is a literal or arithmetic on literals, `NAME ?= value` in the
Makefile and `${NAME:-value}` in shell scripts. A table row whose default cell starts with a
literal (`` `5/60s` ``, possibly followed by a note) must equal one of them; a row with a
computed or conditional default (`$REDIS_URL`, "production `true`") is only checked for
existing in the code. Every variable the settings and gunicorn read must have a row.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "configuration.md"
SETTINGS_FILES = [ROOT / "orders_project" / "settings.py", ROOT / "gunicorn.conf.py"]
PYTHON_SOURCES = [
    *SETTINGS_FILES,
    *sorted((ROOT / "scripts").glob("*.py")),
    *sorted(ROOT.glob("*/management/commands/*.py")),
    *sorted((ROOT / "core").glob("*.py")),
]
SHELL_SOURCES = [ROOT / "Makefile", ROOT / ".ci" / "run"]

NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")
LITERAL = re.compile(r"`([^`]*)`")
SAFE_NODES = (ast.Expression, ast.Constant, ast.BinOp, ast.UnaryOp, ast.List, ast.Tuple)
SAFE_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.USub, ast.Load)


def _literal(node: ast.expr) -> object:
    """The value of a literal or arithmetic on literals; LookupError for anything else."""
    tree = ast.Expression(node)
    for part in ast.walk(tree):
        if not isinstance(part, (*SAFE_NODES, *SAFE_OPERATORS)):
            raise LookupError(ast.dump(part))
    return eval(compile(tree, "<default>", "eval"), {"__builtins__": {}})  # noqa: S307 - literals only


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_as_text(item) for item in value)
    return str(value)


def _same(documented: str, code: str) -> bool:
    try:
        return float(documented) == float(code)
    except ValueError:
        return documented == code


def code_defaults() -> dict[str, set[str]]:
    """Variable name -> the literal defaults the code gives it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in PYTHON_SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and len(node.args) >= 2):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                with contextlib.suppress(LookupError):  # a computed default: not compared
                    found[first.value].add(_as_text(_literal(node.args[1])))
    for path in SHELL_SOURCES:
        text = path.read_text()
        for name, value in re.findall(r"(?m)^([A-Z][A-Z0-9_]*) \?= ?(.*)$", text):
            found[name].add(value.strip())
        for name, value in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", text):
            found[name].add(value)
    return found


def documented_rows(table: Path = TABLE) -> list[tuple[int, list[str], str]]:
    """(line, variable names, default cell) of each table row of configuration.md."""
    rows = []
    for number, line in enumerate(table.read_text().splitlines(), start=1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and (names := NAME.findall(cells[0])):
            rows.append((number, names, cells[1]))
    return rows


def _pairs(names: list[str], default: str) -> list[tuple[str, str]]:
    """(name, documented literal) for a default cell that starts with literals."""
    if not default.startswith("`"):
        return []
    literals = LITERAL.findall(default)
    if len(names) > 1:
        # `A`, `B` | `1`, `2`: one literal each, and nothing else in the cell
        only_literals = re.fullmatch(r"`[^`]*`(, `[^`]*`)*", default)
        return list(zip(names, literals, strict=True)) if only_literals else []
    return [(names[0], literals[0])] if not literals[0].startswith("$") else []


def wrong_defaults(table: Path) -> list[str]:
    """Each documented literal default the code does not give its variable."""
    code = code_defaults()
    return [
        f"{table.name}:{line}: {name} documented {value!r}, the code says {sorted(code[name])}"
        for line, names, default in documented_rows(table)
        for name, value in _pairs(names, default)
        if code.get(name) and not any(_same(value, candidate) for candidate in code[name])
    ]


def test_every_documented_default_is_the_codes():
    # given the defaults in the code and the documented ones
    # when each documented literal default is compared with the code's
    wrong = wrong_defaults(TABLE)
    # then they agree
    assert not wrong, "\n".join(wrong)


def test_every_documented_variable_is_read_somewhere():
    # given every source that may read a variable
    sources = "\n".join(
        path.read_text()
        for path in [*PYTHON_SOURCES, *SHELL_SOURCES, *ROOT.glob("*/*.py"), ROOT / "Makefile"]
    )
    # then each documented name occurs in them
    missing = [
        f"configuration.md:{line}: {name}"
        for line, names, _ in documented_rows()
        for name in names
        if name not in sources
    ]
    assert not missing, "documented but never read:\n" + "\n".join(missing)


def test_every_variable_the_settings_read_is_documented():
    # given the variables read by settings.py and gunicorn.conf.py with a default
    read = {
        node.args[0].value
        for path in SETTINGS_FILES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.args[0].value)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "get")
            or (isinstance(node.func, ast.Name) and node.func.id.startswith("env_"))
        )
    }
    documented = {name for _, names, _ in documented_rows() for name in names}
    # then each has a row
    assert read - documented == set(), f"not in configuration.md: {sorted(read - documented)}"


def test_a_wrong_default_is_reported(tmp_path):
    # given a table that documents a default the code does not have
    table = tmp_path / "configuration.md"
    table.write_text(
        "| variable | default | meaning |\n|---|---|---|\n| `ORDER_RATE_LIMIT` | `6/60s` | x |\n"
    )
    # when the comparison runs, then it names the variable and both values
    assert wrong_defaults(table) == [
        "configuration.md:3: ORDER_RATE_LIMIT documented '6/60s', the code says ['5/60s']"
    ]
