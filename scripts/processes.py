"""Run the service's own processes (gunicorn, Celery worker and beat, the fake provider) as
subprocesses that tests, drills and benchmarks start, signal and stop by pid.

Each process leads its own process group and logs to a file:

    web = start_process("web", web_command(), service_env(...), root / "web.log")
    web.wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60, what="gunicorn up")
    web.stop()          # SIGCONT + SIGTERM to the group, SIGKILL to what is left
    web.kill()          # SIGKILL to the group: a crash
    print(web.log_tail())

Only ever the processes started here are signalled (by pid / process group), never
anything found by name. Like scripts/servers.py (which serves PostgreSQL and Redis), only
the standard library is imported, so benchmarks can use it before Django is set up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from scripts.servers import ServerError
from scripts.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
if not (BIN / "celery").exists():  # e.g. a CI image with the project installed system-wide
    BIN = Path(sys.executable).parent
PYTHON = BIN / "python" if (BIN / "python").exists() else Path(sys.executable)
TEST_SECRET_KEY = "test-secret-key-not-for-production"
CLK_TCK = os.sysconf("SC_CLK_TCK")

__all__ = [
    "BIN",
    "PYTHON",
    "REPO",
    "ManagedProcess",
    "ProcessExited",
    "beat_command",
    "cpu_seconds",
    "database_url",
    "group_cpu_seconds",
    "group_pids",
    "provider_command",
    "service_env",
    "start_process",
    "stop_all",
    "web_command",
    "worker_command",
]


class ProcessExited(RuntimeError):
    """A process that should be running has exited; the message carries its log's tail."""


def _die_with_parent() -> None:
    # Between fork and exec: Linux sends the child SIGTERM if its parent dies (even -9).
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http only
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


@dataclass
class ManagedProcess:
    """One subprocess in its own process group, its output appended to `log_path`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO
    # Linux only: the child gets SIGTERM when the starting process dies, even by SIGKILL.
    # Start such processes before any thread: preexec_fn is not safe with threads.
    die_with_parent: bool = False
    popen: subprocess.Popen | None = field(default=None, repr=False)
    log_mark: int = 0

    def start(self) -> ManagedProcess:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: stop()/kill() reach its children too
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def is_running(self) -> bool:
        return self.alive

    # ------------------------------------------------------------------ signals

    def signal_group(self, sig: int) -> None:
        """Send sig to the whole process group (the leader and every child it forked)."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def pause(self) -> None:
        """SIGSTOP the group: a hang, with every socket left open."""
        self.signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal_group(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM the group if it runs (SIGCONT first: a stopped process cannot handle it)."""
        if self.alive:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGTERM)

    def stop(self, timeout: float = 10.0, *, whole_group: bool = True) -> bool:
        """Graceful stop: SIGTERM, wait up to `timeout` seconds, then SIGKILL whatever is left
        of the group. With whole_group=False only the leader gets the SIGTERM (a gunicorn
        master drains its workers, a Celery master warm-shuts its pool). True if it exited
        within `timeout`."""
        if self.popen is None:
            return True
        exited = True
        if self.alive:
            if whole_group:
                self.terminate()
            else:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                exited = False
        self.kill()
        return exited

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the whole group: a crash, nothing cleaned up on the way out."""
        if self.popen is None:
            return
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)

    # ------------------------------------------------------------------ readiness

    def check_alive(self) -> None:
        if not self.alive:
            raise ProcessExited(f"{self.name} exited ({self.returncode}):\n{self.log_tail(30)}")

    def progress(self) -> tuple[float, int]:
        """What this process has done so far: CPU seconds of its group (to 10 ms) and the
        size of its log. A process starting up on a busy machine moves these slowly but
        surely; a hung one does not move them at all."""
        return round(group_cpu_seconds(self.pid), 2), self.log_size()

    def wait_http_ok(
        self,
        url: str,
        *,
        timeout: float,
        what: str,
        interval: float = 0.2,
        probe_timeout: float = 1.0,
    ) -> None:
        """Poll url until it answers 200: ProcessExited at once if this process exits first,
        ServerError naming `what` at the deadline. `timeout` is the window of a quiet
        machine: scaled by the machine's slowness and extended while this process makes
        progress (scripts/waiting.py)."""
        wait_for(
            lambda: http_ok(url, timeout=probe_timeout),
            what=what,
            timeout=timeout,
            progress=self.progress,
            interval=interval,
            check=self.check_alive,
            error=ServerError,
        )

    # ------------------------------------------------------------------ log

    def mark_log(self) -> None:
        """Remember the log's current end: since_mark=True reads only what follows."""
        with contextlib.suppress(OSError):
            self.log_mark = self.log_path.stat().st_size

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self, *, since_mark: bool = False) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_mark if since_mark else 0)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60, *, since_mark: bool = False) -> str:
        return "\n".join(self.log_text(since_mark=since_mark).splitlines()[-lines:])


def start_process(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    cwd: Path = REPO,
    die_with_parent: bool = False,
) -> ManagedProcess:
    """Start argv in its own process group, appending its output to log_path."""
    return ManagedProcess(name, argv, env, log_path, cwd, die_with_parent).start()


def stop_all(processes: Iterable[ManagedProcess], timeout: float = 10.0) -> None:
    """SIGTERM every process first, so that they drain in parallel; then stop() each
    (up to `timeout` seconds each, SIGKILL after that)."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop(timeout)


# --------------------------------------------------------------------------- command lines


def web_command(*options: str) -> list[str]:
    """gunicorn as `make run` starts it (PORT, WEB_CONCURRENCY, ... come from the env)."""
    return [str(BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py"), *options]


def worker_command(
    *,
    hostname: str,
    concurrency: int | None = None,
    pool: str | None = None,
    queue: str | None = None,
    loglevel: str = "WARNING",
    heartbeat: bool = True,
) -> list[str]:
    """A Celery worker; the queue defaults to CELERY_QUEUE of its env. No mingle or gossip:
    no broadcast chatter with other workers on the same Redis."""
    argv = [str(BIN / "celery"), "-A", "orders_project", "worker"]
    if pool:
        argv.append(f"--pool={pool}")
    if concurrency:
        argv.append(f"--concurrency={concurrency}")
    if queue:
        argv.append(f"--queues={queue}")
    argv += [f"--hostname={hostname}", "--without-mingle", "--without-gossip"]
    if not heartbeat:
        argv.append("--without-heartbeat")
    return [*argv, f"--loglevel={loglevel}"]


def beat_command(
    *, loglevel: str = "WARNING", pidfile: Path | None = None, schedule: Path | None = None
) -> list[str]:
    argv = [str(BIN / "celery"), "-A", "orders_project", "beat", f"--loglevel={loglevel}"]
    if pidfile:
        argv.append(f"--pidfile={pidfile}")
    if schedule:
        argv.append(f"--schedule={schedule}")
    return argv


def provider_command(
    *, port: int, webhook_url: str, state_file: Path, **options: object
) -> list[str]:
    """The fake payment provider; options as keywords: webhook_delay=0.5 → --webhook-delay=0.5.

    Its bearer token (reads and /_chaos) goes in the environment as FAKE_PROVIDER_TOKEN,
    not here: argv is visible to every user in `ps`. Without one those endpoints are 403."""
    argv = [
        str(PYTHON),
        str(REPO / "manage.py"),
        "run_fake_provider",
        f"--port={port}",
        f"--webhook-url={webhook_url}",
        f"--state-file={state_file}",
    ]
    return argv + [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]


# --------------------------------------------------------------------------- environment


def database_url(settings_dict: dict) -> str:
    """postgres:// URL of a Django DATABASES entry (e.g. pytest's test database)."""
    db = settings_dict
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}{port}/{quote(db['NAME'])}"


def service_env(
    *,
    database_url: str,
    redis_url: str,
    names: str | None = None,
    metrics_dir: Path | None = None,
    secret_key: str = TEST_SECRET_KEY,
    log_level: str = "WARNING",
    drop_prefixes: tuple[str, ...] = (),
    **overrides: object,
) -> dict[str, str]:
    """The environment of a service process: this one's (less variables starting with
    drop_prefixes), the real settings module, one database and one Redis for everything
    (broker, event stream, cache, rate limits) and, given `names`, the stream, queue and
    key prefixes `<names>:events`, `<names>:celery`, ... so that no one else's processes
    on that Redis see its events or tasks. Overrides last, as strings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
    env.update(
        DJANGO_SETTINGS_MODULE="orders_project.settings",
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        SECRET_KEY=secret_key,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        EVENT_STREAM_REDIS_URL=redis_url,
        LOG_LEVEL=log_level,
    )
    if names:
        env.update(
            EVENT_STREAM=f"{names}:events",
            CELERY_QUEUE=f"{names}:celery",
            REDBEAT_KEY_PREFIX=f"{names}:redbeat",
            CACHE_KEY_PREFIX=f"{names}:cache",
            RATE_LIMIT_KEY_PREFIX=f"{names}:rl",
        )
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int | str) -> list[str]:
    # "pid (comm) S ppid pgrp ..." -- comm may contain spaces and parentheses.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def group_pids(pgid: int) -> list[int]:
    """Live processes of one process group (e.g. a Celery master and its pool)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat_fields(entry.name)[2]) == pgid:
                    found.append(int(entry.name))
    return found


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds used by the live processes of one process group (e.g. a gunicorn master
    and its workers), as cpu_seconds() sums them."""
    return sum(cpu_seconds(pid) for pid in group_pids(pgid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used; 0 once it is gone (Linux)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
