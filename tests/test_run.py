"""`make run` (scripts/run.py): every line of its children's output carries the process's
name, gunicorn's own lines are JSON, and the banner shows where the processes really are."""

from __future__ import annotations

import io
import json
import re
import signal
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection

from payments.management.commands.run_fake_provider import Command as RunFakeProvider
from scripts.processes import database_url, service_env, web_command
from scripts.run import PrefixedOutput, Process, Supervisor, banner_lines, fake_provider_url
from scripts.servers import free_port

# A child that writes to both streams, a last line without its newline, then waits to be
# stopped (SIGTERM) like the service's processes.
_CHATTY = (
    "import sys, time; print('to stdout', flush=True); "
    "print('to stderr', file=sys.stderr, flush=True); "
    "sys.stdout.write('no newline at the end'); sys.stdout.flush(); time.sleep(3600)"
)
# Far beyond a slow start on a loaded machine; only stops a broken run from hanging forever.
_GIVE_UP_AFTER = 300


def _run_supervisor(processes: list[Process], env: dict, until) -> str:
    """Run the supervisor of `make run` over `processes` until `until()` is true, then stop
    it as Ctrl-C would; the whole output it printed."""
    out = io.StringIO()
    supervisor = Supervisor(processes, env, PrefixedOutput([p.name for p in processes], out))
    give_up_at = time.monotonic() + _GIVE_UP_AFTER

    def on_ready() -> bool:
        if until() or time.monotonic() > give_up_at:
            supervisor.stop_signals += 1  # what a Ctrl-C does
            return True
        return False

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        supervisor.run(on_ready)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return out.getvalue()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local test URL
            return response.status == 200
    except OSError:
        return False


def test_every_line_carries_its_process_name_and_gunicorns_lines_are_json():
    # given gunicorn as make run starts it, and a child writing to stdout and stderr
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        names=f"runtest-{uuid.uuid4().hex[:8]}",
        PORT=port,
        WEB_CONCURRENCY=1,
        LOG_LEVEL="INFO",
    )
    processes = [Process("web", web_command()), Process("chatty", [sys.executable, "-c", _CHATTY])]

    # when the supervisor runs them until the web answers, then stops them
    output = _run_supervisor(processes, env, lambda: _answers(f"http://127.0.0.1:{port}/healthz"))

    # then every line is `<name padded> | <text>`
    lines = output.splitlines()
    prefix = re.compile(r"^(web|chatty|run)\s* \| (.*)$")
    assert lines
    assert all(prefix.match(line) for line in lines), output
    assert len({line.index("|") for line in lines}) == 1, "prefixes are aligned"
    by_process: dict[str, list[str]] = {}
    for line in lines:
        match = prefix.match(line)
        assert match
        by_process.setdefault(match[1], []).append(match[2])
    # both streams of a child, and its last partial line
    assert {"to stdout", "to stderr", "no newline at the end"} <= set(by_process["chatty"])
    # every line of the web process is one JSON object, gunicorn's own included
    records = [json.loads(text) for text in by_process["web"]]
    gunicorn_messages = [r["message"] for r in records if r["logger"].startswith("gunicorn.")]
    assert any(m.startswith("Listening at") for m in gunicorn_messages), output
    assert any(m.startswith("Booting worker") for m in gunicorn_messages), output
    # and no colour codes when the output is not a terminal
    assert "\033[" not in output


def test_prefixed_output_colours_only_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, plain = Terminal(), io.StringIO()
    PrefixedOutput(["web", "provider"], terminal).line("web", "hello")
    PrefixedOutput(["web", "provider"], plain).line("web", "hello")
    assert plain.getvalue() == "web      | hello\n"
    assert terminal.getvalue() == "\033[33mweb      |\033[0m hello\n"


def test_the_banner_shows_the_provider_where_run_fake_provider_listens(monkeypatch):
    # given the provider's port set as make run's users set it
    monkeypatch.setenv("FAKE_PROVIDER_PORT", "9123")
    # when the fake provider's command reads its defaults and the banner is built
    options = RunFakeProvider().create_parser("manage.py", "run_fake_provider").parse_args([])
    provider = fake_provider_url({"FAKE_PROVIDER_PORT": "9123"})
    banner = "\n".join(banner_lines(base="http://127.0.0.1:8000", provider=provider, demo=""))
    # then both say the same port
    assert options.port == 9123
    assert "fake payment provider on http://127.0.0.1:9123 " in banner
    assert "8100" not in banner


def test_the_banners_provider_url_defaults_to_the_commands_default(monkeypatch):
    monkeypatch.delenv("FAKE_PROVIDER_PORT", raising=False)
    monkeypatch.delenv("FAKE_PROVIDER_HOST", raising=False)
    options = RunFakeProvider().create_parser("manage.py", "run_fake_provider").parse_args([])
    assert fake_provider_url({}) == f"http://{options.host}:{options.port}"


def test_the_readmes_banner_is_the_one_make_run_prints_with_its_defaults():
    # given the banner block of the README (the one whose lines start with "run      |")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = [line for line in readme.splitlines() if line.startswith("run      |")]
    # when make run's banner is printed with the default port, provider and seed lines
    demo = "\n".join(line.removeprefix("run      |   ") for line in shown if ":  " in line)
    output = io.StringIO()
    printer = PrefixedOutput(["web", "worker", "beat", "provider"], output)
    for line in banner_lines(
        base="http://127.0.0.1:8000", provider=fake_provider_url({}), demo=demo
    ):
        printer.say(line)
    # then the README shows exactly those lines (it leaves out the last, empty one)
    printed = [line.rstrip() for line in output.getvalue().splitlines()]
    assert printed[-1] == "run      |"
    assert shown == printed[:-1]


def test_a_child_that_exits_on_its_own_has_its_last_words_printed_before_the_stop():
    # given a child that says something and fails at once
    child = Process("quick", [sys.executable, "-c", "print('bye'); raise SystemExit(3)"])
    out = io.StringIO()
    supervisor = Supervisor([child], {}, PrefixedOutput([child.name], out))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        # when the supervisor watches it
        code = supervisor.run(lambda: False)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    # then its output comes first, then why everything stops, and the exit code is kept
    lines = out.getvalue().splitlines()
    assert code == 3
    assert lines.index("quick | bye") < lines.index(
        "run   | quick exited with code 3: stopping the others"
    )
