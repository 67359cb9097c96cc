"""`make run`: the whole service on this machine, in the foreground, until Ctrl-C.

Finds or starts PostgreSQL and Redis (scripts/services.py), migrates, collects static
files, loads demo data, then runs the processes of PROCESSES and watches them:

- Ctrl-C / SIGTERM / SIGHUP: every child gets SIGTERM (graceful: gunicorn drains requests,
  celery finishes tasks), up to STOP_TIMEOUT seconds, then SIGKILL for what is left. A second
  Ctrl-C skips the wait.
- A child that exits on its own stops the others, and run exits non-zero.

Every line a child writes (stdout and stderr) is printed as `name     | line`, as honcho and
foreman do, coloured per process when stdout is a terminal; the supervisor's own lines carry
`run`. Reading the pipes happens in the watch loop itself (selectors, no threads), because
the children are started with a preexec_fn.

The children run in their own sessions, so a terminal's Ctrl-C reaches only this supervisor
and each child is stopped in the order and with the signal it expects; on Linux they also get
SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from scripts import servers, services
from scripts.services import LOCAL_DIR, ROOT, say

BIN = Path(sys.executable).parent
SECRET_KEY_FILE = LOCAL_DIR / "secret_key"
PROVIDER_TOKEN_FILE = LOCAL_DIR / "fake_provider_token"
PROMETHEUS_DIR = LOCAL_DIR / "prometheus"
# Longer than gunicorn's graceful_timeout (30 s) so a graceful drain can complete.
STOP_TIMEOUT = float(os.environ.get("STOP_TIMEOUT", "35"))


@dataclass(frozen=True)
class Process:
    name: str
    argv: list[str]


# The service's long-running processes. Add a line here and it is started, watched and
# stopped with the others.
PROCESSES = [
    # gunicorn 25+ opens a control socket at one per-user path (~/.gunicorn/gunicorn.ctl), so
    # two checkouts running at once would take it from each other; nothing here uses it.
    Process("web", [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--no-control-socket"]),
    Process("worker", [str(BIN / "celery"), "-A", "orders_project", "worker", "-l", "INFO"]),
    Process("beat", [str(BIN / "celery"), "-A", "orders_project", "beat", "-l", "INFO"]),
    Process("provider", [sys.executable, "manage.py", "run_fake_provider"]),
]


# --------------------------------------------------------------------------- set-up


def _local_secret(*, env_name: str, path: Path, nbytes: int, what: str) -> str:
    """`env_name` from the environment, else a random value generated once into `path`
    (mode 0600, kept for later runs; the value itself is never printed)."""
    if os.environ.get(env_name):
        return os.environ[env_name]
    if path.exists():
        return path.read_text().strip()
    LOCAL_DIR.mkdir(exist_ok=True)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    say(f"generated {what} in {path.relative_to(ROOT)} (kept for later runs)")
    return value


def local_secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in .local/."""
    return _local_secret(
        env_name="SECRET_KEY", path=SECRET_KEY_FILE, nbytes=50, what="a SECRET_KEY"
    )


def local_provider_token() -> str:
    """FAKE_PROVIDER_TOKEN from the environment, else one generated once and kept in .local/
    (the bearer token of the fake provider's reads and /_chaos)."""
    return _local_secret(
        env_name="FAKE_PROVIDER_TOKEN",
        path=PROVIDER_TOKEN_FILE,
        nbytes=32,
        what="a fake provider token",
    )


def manage(env: dict, *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"error: manage.py {' '.join(args)} failed ({result.returncode})")
    return result.stdout or ""


def web_address() -> tuple[str, int] | None:
    """(host to browse, port) of gunicorn's bind, as gunicorn.conf.py computes it."""
    bind = os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
    if bind.startswith(("unix:", "fd://")):
        return None
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - translating a bind address for a browser
        host = "127.0.0.1"
    return host, int(port)


def fresh_prometheus_dir() -> Path:
    # Samples of a previous run's (dead) processes must not be summed into this run's.
    shutil.rmtree(PROMETHEUS_DIR, ignore_errors=True)
    PROMETHEUS_DIR.mkdir(parents=True)
    return PROMETHEUS_DIR


# --------------------------------------------------------------------------- output

SUPERVISOR_NAME = "run"
# One colour per process, in order, as honcho does.
_COLOURS = ("36", "33", "32", "35", "34", "31")


class PrefixedOutput:
    """Copies each child's output to `out` line by line, each line prefixed with the child's
    name padded to the longest name (`web      | ...`). Partial lines wait for their newline;
    what is left at EOF is flushed as a line of its own."""

    def __init__(self, names: list[str], out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.width = max(len(name) for name in [*names, SUPERVISOR_NAME])
        colour = hasattr(self.out, "isatty") and self.out.isatty() and "NO_COLOR" not in os.environ
        self.colours = {
            name: _COLOURS[i % len(_COLOURS)] if colour else None
            for i, name in enumerate([SUPERVISOR_NAME, *names])
        }
        self.selector = selectors.DefaultSelector()
        self.pending: dict[int, bytes] = {}

    def prefix(self, name: str) -> str:
        label = f"{name:<{self.width}} |"
        code = self.colours.get(name)
        return f"\033[{code}m{label}\033[0m" if code else label

    def line(self, name: str, text: str) -> None:
        self.out.write(f"{self.prefix(name)} {text}\n")
        self.out.flush()

    def say(self, message: str) -> None:
        self.line(SUPERVISOR_NAME, message)

    def add(self, name: str, stream: IO[bytes]) -> None:
        fd = stream.fileno()
        os.set_blocking(fd, False)
        self.pending[fd] = b""
        # The stream object, not only its fd: closing it at EOF must close it once, through it.
        self.selector.register(fd, selectors.EVENT_READ, (name, stream))

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for output and print the complete lines that came."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            fd, (name, stream) = key.fd, key.data
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:  # EOF: the child closed its end (exited)
                self._emit(name, self.pending.pop(fd), final=True)
                self.selector.unregister(fd)
                stream.close()
                continue
            self.pending[fd] = self._emit(name, self.pending[fd] + chunk, final=False)

    def drain(self, deadline: float) -> None:
        """Print what the children still have to say, until every pipe closed or `deadline`."""
        while self.selector.get_map() and time.monotonic() < deadline:
            self.pump(0.1)

    def _emit(self, name: str, data: bytes, *, final: bool) -> bytes:
        *lines, rest = data.split(b"\n")
        if final and rest:
            lines.append(rest)
            rest = b""
        for raw in lines:
            self.line(name, raw.decode(errors="replace").rstrip("\r"))
        return rest


# --------------------------------------------------------------------------- supervisor


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask Linux to SIGTERM it when we die.
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Supervisor:
    def __init__(
        self, processes: list[Process], env: dict, output: PrefixedOutput | None = None
    ) -> None:
        self.processes = processes
        self.env = env
        self.children: dict[str, subprocess.Popen] = {}
        self.stop_signals = 0
        self.output = output or PrefixedOutput([p.name for p in processes])
        self.say = self.output.say

    def _on_signal(self, signum: int, frame) -> None:
        self.stop_signals += 1
        if self.stop_signals == 1:
            self.say(f"{signal.Signals(signum).name}: stopping (again to kill at once)")

    def run(self, on_ready) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            for process in self.processes:
                child = subprocess.Popen(
                    process.argv,
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # safe: this process starts no threads
                )
                self.children[process.name] = child
                assert child.stdout is not None
                self.output.add(process.name, child.stdout)
                self.say(f"started {process.name} (pid {self.children[process.name].pid})")
            return self._watch(on_ready)
        finally:
            self._stop_all()

    def _watch(self, on_ready) -> int:
        ready = False
        warn_at = time.monotonic() + 60
        while not self.stop_signals:
            for name, child in self.children.items():
                code = child.poll()
                if code is not None:
                    self.output.drain(time.monotonic() + 1)  # its last words
                    self.say(f"{name} exited with code {code}: stopping the others")
                    return code or 1
            if not ready:
                ready = on_ready()
                if not ready and time.monotonic() > warn_at:
                    self.say("web has not answered /healthz for 60s; still waiting (see its log)")
                    warn_at = float("inf")
            self.output.pump(0.25)
        return 0

    def _stop_all(self) -> None:
        running = {name: c for name, c in self.children.items() if c.poll() is None}
        if running:
            self.say(f"stopping {', '.join(running)} (SIGTERM, up to {STOP_TIMEOUT:.0f}s)")
        # Only the main process of each child: gunicorn and celery stop their own workers
        # gracefully; signalling the workers directly would cut in-flight requests/tasks.
        for child in running.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        noted = self.stop_signals
        while any(c.poll() is None for c in running.values()):
            if time.monotonic() >= deadline or self.stop_signals > noted:
                break
            self.output.pump(0.1)
        for name, child in self.children.items():
            if child.poll() is None:
                self.say(f"{name} did not stop in time: SIGKILL")
            # Each child leads its own process group: this also takes any worker that
            # outlived its master.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        self.output.drain(time.monotonic() + 2)
        if running:
            self.say("all processes stopped")


# --------------------------------------------------------------------------- main


def main() -> int:
    os.chdir(ROOT)
    try:
        services.up()
    except servers.ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    env = dict(os.environ)
    env["SECRET_KEY"] = local_secret_key()
    # The project's real settings, whatever a shell exported for the tests.
    env["DJANGO_SETTINGS_MODULE"] = "orders_project.settings"
    env["PYTHONUNBUFFERED"] = "1"

    say("migrating")
    manage(env, "migrate", "--noinput")
    say("collecting static files")
    manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    say("loading demo data")
    demo = manage(env, "seed_demo", capture=True)

    address = web_address()
    if address and servers.port_open(*address):
        print(
            f"error: {address[0]}:{address[1]} is already in use; "
            "set PORT (or BIND) to another port, e.g. make run PORT=8001",
            file=sys.stderr,
        )
        return 1

    env["PROMETHEUS_MULTIPROC_DIR"] = str(fresh_prometheus_dir())
    base = f"http://{address[0]}:{address[1]}" if address else os.environ["BIND"]
    # The fake provider calls the web process back; follow PORT/BIND unless told otherwise.
    env.setdefault("PAYMENT_WEBHOOK_URL", f"{base}/api/v1/payments/webhook/")
    env.setdefault("FAKE_PROVIDER_STATE_FILE", str(LOCAL_DIR / "fake_provider_state.json"))
    env["FAKE_PROVIDER_TOKEN"] = local_provider_token()
    provider = fake_provider_url(env)
    # The web process calls the fake provider where run_fake_provider listens.
    env.setdefault("PAYMENT_PROVIDER_URL", provider)

    supervisor = Supervisor(PROCESSES, env)

    def on_ready() -> bool:
        if address:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:  # noqa: S310
                    if response.status != 200:
                        return False
            except OSError:
                return False
        for line in banner_lines(base=base, provider=provider, demo=demo):
            supervisor.say(line)
        return True

    return supervisor.run(on_ready)


def fake_provider_url(env: dict) -> str:
    """Where `run_fake_provider` listens: its --host/--port defaults read these variables."""
    host = env.get("FAKE_PROVIDER_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # noqa: S104 - translating a bind address for a browser
        host = "127.0.0.1"
    port = env.get("FAKE_PROVIDER_PORT") or "8100"
    return f"http://{host}:{port}"


def banner_lines(*, base: str, provider: str, demo: str) -> list[str]:
    return [
        "",
        "orders service is up (DEBUG off). Ctrl-C stops web, worker, beat and the provider.",
        "",
        f"  admin        {base}/admin/",
        f"  API docs     {base}/api/docs/",
        f"  products     {base}/api/v1/products/",
        f"  health       {base}/healthz   {base}/readyz",
        f"  metrics      {base}/metrics",
        "  events       .venv/bin/python manage.py tail_events   (stream: EVENT_STREAM)",
        f"               their contract: {base}/api/events/",
        f"  provider     fake payment provider on {provider} (FAKE_PROVIDER_PORT)",
        "               its reads and /_chaos take Authorization: Bearer "
        f"$(cat {PROVIDER_TOKEN_FILE.relative_to(ROOT)})",
        "",
        *(f"  {line}" for line in demo.strip().splitlines()),
        "  (send the key as X-API-Key; embedded servers, if any, stay up: make stop-services)",
        "",
    ]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C during set-up, before the supervisor took over
        sys.exit(130)
