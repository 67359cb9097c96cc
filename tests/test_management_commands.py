"""Every option of the project's own management commands explains itself in `--help`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import get_commands, load_command_class
from django.core.management.base import BaseCommand

REPO = Path(__file__).resolve().parents[1]


def _project_commands() -> list[tuple[str, str]]:
    """(app name, command) of every command whose app lives in this repository."""
    inside = []
    for command, app_name in get_commands().items():
        if app_name == "django.core":
            continue
        path = Path(apps.get_app_config(app_name.rsplit(".", 1)[-1]).path)
        if REPO in path.parents and ".venv" not in path.parts:
            inside.append((app_name, command))
    return sorted(inside)


def _options_without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not action.help or action.help == argparse.SUPPRESS
    ]


# Django's own options (--verbosity, --settings, ...): documented by Django.
_DJANGO_DEFAULTS = {
    "/".join(a.option_strings) or a.dest
    for a in BaseCommand().create_parser("manage.py", "base")._actions
}
PROJECT_COMMANDS = _project_commands()


def test_the_project_has_commands_to_check():
    names = {command for _, command in PROJECT_COMMANDS}
    assert {"run_fake_provider", "seed_demo", "tail_events", "create_api_client"} <= names


@pytest.mark.parametrize(("app_name", "command"), PROJECT_COMMANDS)
def test_every_option_has_help(app_name: str, command: str):
    parser = load_command_class(app_name, command).create_parser("manage.py", command)
    missing = [o for o in _options_without_help(parser) if o not in _DJANGO_DEFAULTS]
    assert not missing, f"{command}: no help for {missing}"
    # and printing the help works (a stray % in a help string would raise here)
    assert parser.format_help()
