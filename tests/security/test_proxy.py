"""The reverse proxy of docker-compose, run for real in front of a real gunicorn (issue 9:
item 6, and the proxy's part of items 8 and 9).

deploy/nginx/nginx.conf, the very file docker-compose mounts, is copied byte for byte into
a private prefix beside three small env/ files of this test (listen port, upstream address,
pid/log/temp paths: what compose's deploy/nginx/compose/ sets for containers) and run with
Debian's nginx (`.ci/run` installs nginx-light). Without nginx these tests fail, unless
PROXY_TESTS=0 says that this run skips them.

Each proof has its control: the same slow clients sent straight to gunicorn do starve it,
the app does serve /metrics when asked directly, a complete request does reach gunicorn's
log, and so on, so that a check passing means the proxy did it.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml
from django.conf import settings
from django.db import connection

from scripts.processes import (
    REPO,
    ManagedProcess,
    database_url,
    service_env,
    start_process,
    web_command,
)
from scripts.servers import free_port, port_open
from tests.polling import eventually

# django_db: the test database must exist for the gunicorn started here (pytest-django
# creates it only for a session that has database tests).
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
COMPOSE_FILE = REPO / "docker-compose.yml"
PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}

# nginx.conf: client_header_timeout and client_body_timeout.
CLIENT_TIMEOUT = 10.0
SLOW_CLIENTS = 50
SLOW_LINE_EVERY = 2.0
SLOW_BODIES = 10
# Each /healthz through the proxy must answer within this: generous, and far below the
# 10 s the proxy gives a slow client.
PROBE_DEADLINE = 5.0
# Longer than CLIENT_TIMEOUT, so that every slow client is cut off at least once.
ATTACK_SECONDS = CLIENT_TIMEOUT + 4


# --------------------------------------------------------------------------- nginx


def nginx_binary() -> str:
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path:
        return path
    if os.environ.get("PROXY_TESTS") == "0":
        pytest.skip("nginx is not installed and PROXY_TESTS=0: proxy tests skipped on request")
    pytest.fail(
        "nginx not found: install it (apt-get install nginx-light; .ci/run does) or set "
        "PROXY_TESTS=0 to skip the reverse-proxy tests explicitly.",
        pytrace=False,
    )


# What the environment-specific includes may contain: where nginx runs, never how it
# treats requests (that is nginx.conf's job, shared with compose).
_ENV_DIRECTIVES = {
    "user",
    "pid",
    "error_log",
    "access_log",
    "listen",
    "upstream",
    "server",
    "zone",
    "resolver",
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
}


def env_directives(text: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {line.split()[0].rstrip("{};") for line in lines if line and line != "}"}


@dataclass
class Nginx:
    process: ManagedProcess
    prefix: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop(timeout=10)
        shutil.rmtree(self.prefix, ignore_errors=True)

    def error_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.prefix / "error.log").read_text(errors="replace")
        return ""


def start_nginx(upstream: str) -> Nginx:
    """The shared nginx.conf, unchanged, in front of `upstream` (host:port)."""
    binary = nginx_binary()
    # Not pytest's tmp_path: as root, nginx's workers run as nobody, and pytest's
    # directories (mode 0700) would keep them from their temp files.
    prefix = Path(tempfile.mkdtemp(prefix="nginx-proxy-test-"))
    prefix.chmod(0o755)
    (prefix / "temp").mkdir(mode=0o755)
    shutil.copyfile(NGINX_CONF, prefix / "nginx.conf")
    assert (prefix / "nginx.conf").read_bytes() == NGINX_CONF.read_bytes()
    port = free_port()
    env_dir = prefix / "env"
    env_dir.mkdir()
    (env_dir / "main.conf").write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
    )
    temp_paths = "".join(
        f"{kind}_temp_path {prefix}/temp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (env_dir / "http.conf").write_text(
        f"upstream app {{\n    server {upstream};\n}}\n"
        f"access_log {prefix}/access.log json;\n{temp_paths}"
    )
    (env_dir / "server.conf").write_text(f"listen 127.0.0.1:{port};\n")
    process = start_process(
        "nginx",
        [binary, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        dict(os.environ),
        prefix / "nginx.out",
        die_with_parent=True,
    )
    proxy = Nginx(process, prefix, port)

    def listening() -> bool:
        process.check_alive()
        return port_open("127.0.0.1", port)

    try:
        eventually(listening, timeout=20, what="nginx listening")
    except BaseException:
        print(process.log_tail(), proxy.error_log())
        proxy.stop()
        raise
    return proxy


# --------------------------------------------------------------------------- HTTP helpers


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict:
        assert self.headers.get("content-type") == PROBLEM, (self.status, self.headers, self.body)
        body = json.loads(self.body)
        assert set(body) >= PROBLEM_KEYS, body
        assert body["status"] == self.status, body
        assert body["type"] == f"/problems/{body['code']}", body
        return body

    @property
    def from_app(self) -> bool:
        # The app's outermost middleware stamps every response; nginx's own never are.
        return "x-request-id" in self.headers


def exchange(
    port: int,
    method: str,
    path: str,
    *,
    headers=(),
    body: bytes = b"",
    timeout: float = 10,
) -> Answer:
    """One request exactly as written (no client-side URL normalisation), its answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        own_host = any(name.lower() == "host" for name, _ in headers)
        conn.putrequest(method, path, skip_host=own_host, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body or method == "POST":
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return Answer(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


# --------------------------------------------------------------------------- slow clients


@dataclass
class SlowClients:
    """`count` connections that each send `opening(index)`, then one more header line every
    `line_every` seconds (never, if None). A connection the server closes is counted, with
    how long it lived and what it received, and replaced when `reopen`."""

    port: int
    count: int
    opening: Callable[[int], bytes]
    line_every: float | None
    reopen: bool
    opened: int = 0
    lifetimes: list[float] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SlowClients:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    @property
    def cut_off(self) -> int:
        return len(self.lifetimes)

    def _open(self, index: int) -> tuple[socket.socket, float, bytearray]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(self.opening(index))
        self.opened += 1
        return sock, time.monotonic(), bytearray()

    def _run(self) -> None:
        live = {index: self._open(index) for index in range(self.count)}
        next_line = time.monotonic() + (self.line_every or 0)
        sent = 0
        try:
            while not self._stop.is_set() and live:
                readable, _, _ = select.select([entry[0] for entry in live.values()], [], [], 0.1)
                for index, (sock, opened, data) in list(live.items()):
                    if sock not in readable:
                        continue
                    try:
                        chunk = sock.recv(65536)
                    except OSError:  # reset: nginx drops timed-out clients with RST
                        chunk = b""
                    if chunk:
                        data.extend(chunk)
                        continue
                    self.lifetimes.append(time.monotonic() - opened)
                    self.received.append(bytes(data))
                    sock.close()
                    del live[index]
                    if self.reopen:
                        live[index] = self._open(index)
                if self.line_every is not None and time.monotonic() >= next_line:
                    sent += 1
                    for sock, _, _ in live.values():
                        with contextlib.suppress(OSError):  # closed: seen on the next pass
                            sock.sendall(b"X-Slow-%d: %d\r\n" % (sent, sent))
                    next_line += self.line_every
        finally:
            for sock, _, _ in live.values():
                sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


def slow_header(index: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def probe_healthz(url: str, seconds: float) -> tuple[list[float], list[str]]:
    """GET /healthz one after another for `seconds`: latencies, and every failure."""
    latencies: list[float] = []
    failures: list[str] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            response = requests.get(f"{url}/healthz", timeout=PROBE_DEADLINE)
            if response.status_code != 200 or response.json() != {"status": "ok"}:
                failures.append(f"{response.status_code} {response.text[:100]}")
        except requests.RequestException as exc:
            failures.append(type(exc).__name__)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.1)
    return latencies, failures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --------------------------------------------------------------------------- fixtures


@dataclass
class Web:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def web(django_db_setup, tmp_path_factory):
    """gunicorn as docker-compose runs it (two sync workers, NUM_PROXIES=1), logging one
    access line per request that reaches the app."""
    nginx_binary()  # fail or skip before starting anything
    root = tmp_path_factory.mktemp("proxy-web")
    port = free_port()
    env = service_env(
        database_url=database_url(connection.settings_dict),
        redis_url=settings.REDIS_URL,
        names=f"proxy-{uuid.uuid4().hex[:8]}",
        log_level="INFO",
        PORT=port,
        WEB_CONCURRENCY=2,
        NUM_PROXIES=1,
    )
    process = start_process("web", web_command(), env, root / "web.log", die_with_parent=True)
    try:
        process.wait_http_ok(f"http://127.0.0.1:{port}/healthz", timeout=60, what="gunicorn up")
        yield Web(process, port)
    finally:
        process.stop(timeout=15)
        print(f"----- web (exit {process.returncode})\n{process.log_tail(30)}")


@pytest.fixture(scope="module")
def proxy(web):
    proxy = start_nginx(f"127.0.0.1:{web.port}")
    try:
        yield proxy
    finally:
        proxy.stop()
        print(f"----- nginx error log (tail)\n{proxy.error_log()[-3000:]}")


# --------------------------------------------------------------------------- tests


def test_the_tested_config_is_the_one_compose_mounts():
    # given docker-compose.yml's nginx service
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    nginx = compose["services"]["nginx"]
    # then it mounts deploy/nginx/nginx.conf (the file start_nginx copies byte for byte) ...
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert "./deploy/nginx/compose:/etc/nginx/env:ro" in nginx["volumes"]
    # ... it is the only service publishing a port for HTTP (the provider is dev-only,
    # on the loopback interface) ...
    published = {name for name, service in compose["services"].items() if service.get("ports")}
    assert published == {"nginx", "provider"}, published
    assert compose["services"]["provider"]["profiles"] == ["dev"]
    assert all(p.startswith("127.0.0.1:") for p in compose["services"]["provider"]["ports"])
    # ... and compose's environment-specific includes decide nothing about requests
    for include in (REPO / "deploy" / "nginx" / "compose").glob("*.conf"):
        assert env_directives(include.read_text()) <= _ENV_DIRECTIVES, include


def slow_body_factory(marker: str) -> Callable[[int], bytes]:
    """A POST that declares 100000 bytes and sends 10. /admin/logout/ with a CSRF cookie:
    Django's CSRF check reads the form body, so straight to gunicorn this holds a sync
    worker until the body arrives. X-Request-ID marks it in the app's access log."""

    def opening(index: int) -> bytes:
        return (
            f"POST /admin/logout/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"X-Request-ID: slow-body-{marker}-{index}\r\n"
            "Cookie: csrftoken=abcdefghijklmnopqrstuvwxyzABCDEF\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            "Content-Length: 100000\r\n\r\nabcdefghij"
        ).encode()

    return opening


def test_slow_clients_through_the_proxy_never_starve_gunicorn(web, proxy):
    marker = uuid.uuid4().hex
    # given the attacks work on gunicorn alone: with 50 slow header sockets, or 10 slow
    # bodies, straight to it, /healthz does not answer within the deadline
    controls = {}
    for name, clients in (
        ("slow headers", SlowClients(web.port, SLOW_CLIENTS, slow_header, SLOW_LINE_EVERY, False)),
        (
            "slow bodies",
            SlowClients(web.port, SLOW_BODIES, slow_body_factory("control"), None, False),
        ),
    ):
        clients.start()
        try:
            time.sleep(0.5)  # let them connect: the two sync workers each read one
            _, controls[name] = probe_healthz(web.url, 1)
        finally:
            clients.stop()
        web.process.wait_http_ok(f"{web.url}/healthz", timeout=60, what="gunicorn recovered")
    print(f"control, straight to gunicorn: /healthz failures {controls}")
    assert all(controls.values()), f"gunicorn alone answered under an attack: {controls}"

    # when 50 slow sockets send a header line every 2 s through nginx, and 10 requests
    # declare Content-Length: 100000 and send 10 bytes, while /healthz is polled
    slow_heads = SlowClients(proxy.port, SLOW_CLIENTS, slow_header, SLOW_LINE_EVERY, True)
    slow_bodies = SlowClients(proxy.port, SLOW_BODIES, slow_body_factory(marker), None, False)
    slow_heads.start()
    slow_bodies.start()
    try:
        latencies, failures = probe_healthz(proxy.url, ATTACK_SECONDS)
    finally:
        slow_heads.stop()
        slow_bodies.stop()

    # then every /healthz through the proxy answered, each within the deadline
    print(
        f"through nginx, {SLOW_CLIENTS} slow header clients + {SLOW_BODIES} slow bodies for "
        f"{ATTACK_SECONDS:.0f}s: {len(latencies)} /healthz probes, {len(failures)} failed; "
        f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    print(
        f"slow header sockets: {slow_heads.opened} opened, {slow_heads.cut_off} cut off by "
        f"nginx after {min(slow_heads.lifetimes, default=0):.1f}-"
        f"{max(slow_heads.lifetimes, default=0):.1f}s, bytes received "
        f"{sum(len(r) for r in slow_heads.received)}"
    )
    print(
        f"slow bodies: {slow_bodies.cut_off}/{SLOW_BODIES} cut off after "
        f"{min(slow_bodies.lifetimes, default=0):.1f}-{max(slow_bodies.lifetimes, default=0):.1f}s,"
        f" bytes received {sum(len(r) for r in slow_bodies.received)}"
    )
    assert failures == []
    assert len(latencies) >= 40
    assert max(latencies) < PROBE_DEADLINE
    # ... the slow header clients were held open, then dropped at the header timeout
    # (without a response: nginx just closes a client that timed out) ...
    assert slow_heads.cut_off >= SLOW_CLIENTS
    assert min(slow_heads.lifetimes) >= CLIENT_TIMEOUT - 1
    assert max(slow_heads.lifetimes) <= CLIENT_TIMEOUT + 5
    assert set(slow_heads.received) == {b""}
    # ... the slow bodies were dropped at the body timeout, also without a response ...
    assert slow_bodies.cut_off == SLOW_BODIES
    assert all(CLIENT_TIMEOUT - 1 <= t <= CLIENT_TIMEOUT + 5 for t in slow_bodies.lifetimes)
    assert set(slow_bodies.received) == {b""}
    # ... nginx logged them as 408 without ever contacting the upstream ...
    logged = [
        json.loads(line)
        for line in (proxy.prefix / "access.log").read_text().splitlines()
        if f"slow-body-{marker}" in line
    ]
    statuses = [(entry["status"], entry["upstream_status"]) for entry in logged]
    print(f"nginx access log of the slow bodies (status, upstream status): {statuses}")
    assert len(logged) == SLOW_BODIES
    assert all(entry["status"] == 408 and entry["upstream_status"] == "" for entry in logged)
    # ... and gunicorn never saw them, while its log does show a complete request
    complete = exchange(
        proxy.port, "GET", "/healthz", headers=[("X-Request-ID", f"complete-{marker}")]
    )
    assert complete.status == 200 and complete.from_app
    eventually(
        lambda: f"complete-{marker}" in web.process.log_text(),
        timeout=10,
        what="the complete request in gunicorn's access log",
    )
    assert f"slow-body-{marker}" not in web.process.log_text()


def test_oversized_body_is_refused_by_the_proxy_as_problem_json(web, proxy):
    # when a body one byte over the app's 1 MiB limit is announced
    too_large = exchange(
        proxy.port,
        "POST",
        "/api/v1/orders/",
        headers=[("Content-Type", "application/json")],
        body=b" " * (settings.MAX_REQUEST_BODY_BYTES + 1),
    )
    # then nginx answers 413 problem+json itself
    assert too_large.status == 413 and not too_large.from_app
    assert too_large.problem()["code"] == "payload_too_large"
    # while exactly 1 MiB still reaches the app, which answers for itself: here 401 (no API
    # key) without reading the body. Sent 20 times: before the app drained unread bodies,
    # gunicorn closed such a socket with data unread, the kernel reset it, and nginx (still
    # sending the body) answered 502 for several of them on a loaded machine.
    for _ in range(20):
        at_limit = exchange(
            proxy.port,
            "POST",
            "/api/v1/orders/",
            headers=[("Content-Type", "application/json")],
            body=b" " * settings.MAX_REQUEST_BODY_BYTES,
        )
        assert at_limit.from_app and at_limit.status == 401, at_limit


def test_the_proxys_own_problem_types_resolve_through_the_proxy(web, proxy):
    # given every problem body nginx writes itself (its `type` a relative URI)
    types = re.findall(r'"type":"([^"]+)"', NGINX_CONF.read_text())
    assert len(set(types)) >= 9, types
    for problem_type in sorted(set(types)):
        # when a client follows the type through the proxy
        page = exchange(proxy.port, "GET", problem_type, headers=[("Accept", "text/html")])
        # then the app serves its page
        assert page.status == 200 and page.from_app, (problem_type, page.status)
        assert f'<link rel="canonical" href="{problem_type}">' in page.body.decode()


@pytest.mark.parametrize("path", ["/metrics", "//metrics", "/%6detrics", "/metrics?format=x"])
def test_metrics_are_denied_through_the_proxy(web, proxy, path):
    # given the app serves /metrics to whoever asks it directly (no allow-list here)
    assert exchange(web.port, "GET", "/metrics").status == 200
    # when /metrics is asked through the proxy, in any spelling nginx normalises
    answer = exchange(proxy.port, "GET", path)
    # then nginx refuses it with problem+json, and the app never sees the request
    assert answer.status == 403 and not answer.from_app
    assert answer.problem()["code"] == "permission_denied"


def test_admin_login_posts_are_limited_per_address_and_paced_for_everyone(web, proxy):
    # when one address sends 12 login POSTs at once
    results: list[tuple[float, Answer]] = []
    started = time.monotonic()

    def post() -> None:
        answer = exchange(
            proxy.port,
            "POST",
            "/admin/login/",
            headers=[("Content-Type", "application/x-www-form-urlencoded")],
            body=b"username=staff&password=guess",
            timeout=60,  # the last one waits ~10 s in nginx's queue
        )
        results.append((time.monotonic() - started, answer))

    threads = [threading.Thread(target=post) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    passed = sorted(at for at, answer in results if answer.from_app)
    refused = [(at, answer) for at, answer in results if answer.status == 429]
    print(
        f"12 concurrent login POSTs: {len(passed)} reached the app at "
        f"{', '.join(f'{at:.1f}' for at in passed)} s; {len(refused)} refused with 429"
    )
    # then 6 (the per-address burst) reach the app and the rest get 429 problem+json at once
    assert len(results) == 12
    assert len(passed) == 6 and len(refused) == 6
    for at, answer in refused:
        assert at < 2 and not answer.from_app
        assert answer.problem()["code"] == "rate_limited"
        assert answer.headers["retry-after"] == "10"
    # ... and the global pace lets them into the app one every ~2 s, not all at once
    gaps = [later - earlier for earlier, later in itertools.pairwise(passed)]
    assert min(gaps) >= 1.5, gaps
    # while the login page itself (GET, no hashing) and the API stay available
    assert exchange(proxy.port, "GET", "/admin/login/").status == 200
    assert exchange(proxy.port, "GET", "/healthz").status == 200


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers with the request's headers as JSON: what nginx forwards upstream."""

    def do_GET(self) -> None:
        body = json.dumps(list(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def echo_proxy():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = start_nginx(f"127.0.0.1:{server.server_address[1]}")
    try:
        yield proxy
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()


def test_forwarded_headers_are_set_by_the_proxy_not_the_client(echo_proxy):
    # when a client claims https, an address, a host and a proxy chain of its own
    answer = exchange(
        echo_proxy.port,
        "GET",
        "/anything",
        headers=[
            ("Host", "shop.example:8000"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X_Forwarded_For", "198.51.100.7"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Real-IP", "198.51.100.8"),
            ("Forwarded", "for=198.51.100.9;proto=https"),
        ],
    )
    forwarded: dict[str, list[str]] = {}
    for name, value in json.loads(answer.body):
        forwarded.setdefault(name.lower(), []).append(value)
    # then upstream sees the scheme nginx received (its value, not the client's) ...
    assert forwarded["x-forwarded-proto"] == ["http"]
    # ... the client's X-Forwarded-For with the address nginx saw appended last (the one
    # entry the app trusts with NUM_PROXIES=1) ...
    assert forwarded["x-forwarded-for"] == ["203.0.113.9, 127.0.0.1"]
    # ... the Host the client asked for, and none of the other claims
    assert forwarded["host"] == ["shop.example:8000"]
    for name in ("x_forwarded_for", "x-forwarded-host", "x-real-ip", "forwarded"):
        assert name not in forwarded, forwarded


def test_upstream_down_is_a_problem_json_502():
    # given the proxy in front of a port nobody listens on
    proxy = start_nginx(f"127.0.0.1:{free_port()}")
    try:
        # when a request arrives
        answer = exchange(proxy.port, "GET", "/healthz")
        # then nginx answers 502 problem+json, with a hint when to retry
        assert answer.status == 502 and not answer.from_app
        assert answer.problem()["code"] == "bad_gateway"
        assert answer.headers["retry-after"] == "5"
    finally:
        proxy.stop()


def test_compose_healthcheck_of_the_proxy_runs_here(web, proxy):
    # given the nginx service's HEALTHCHECK command from docker-compose.yml
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    command = compose["services"]["nginx"]["healthcheck"]["test"]
    assert command[0] == "CMD"
    if shutil.which(command[1]) is None:
        pytest.skip(f"{command[1]} is not installed here (the nginx image has it)")
    argv = [re.sub(r"127\.0\.0\.1:8080", f"127.0.0.1:{proxy.port}", part) for part in command[1:]]
    assert argv != command[1:], "the healthcheck no longer targets 127.0.0.1:8080"
    # then it succeeds against the proxy and fails against a port with nothing behind it
    assert subprocess.run(argv, timeout=30, check=False).returncode == 0
    dead = [part.replace(str(proxy.port), str(free_port())) for part in argv]
    assert subprocess.run(dead, timeout=30, check=False).returncode != 0


def _compose_config(*args: str, **env: str) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed here (apt-get install docker-compose)")
    clean = {k: v for k, v in os.environ.items() if k not in _COMPOSE_VARIABLES}
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args, "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_COMPOSE_VARIABLES = {
    "SECRET_KEY",
    "POSTGRES_PASSWORD",
    "PAYMENT_WEBHOOK_SECRETS",
    "FAKE_PROVIDER_TOKEN",
    "ALLOW_PLAIN_HTTP",
    "PAYMENT_PROVIDER_URL",
}
_SECRETS = {
    "SECRET_KEY": "k" * 50,
    "PAYMENT_WEBHOOK_SECRETS": "whsec_" + "A" * 44,
    "POSTGRES_PASSWORD": "p" * 32,
}


def test_compose_requires_the_webhook_secret_and_keeps_the_provider_in_dev():
    # when the webhook secret is missing, compose refuses to start anything
    missing = _compose_config(SECRET_KEY="k" * 50, POSTGRES_PASSWORD="p" * 32)
    assert missing.returncode != 0 and "PAYMENT_WEBHOOK_SECRETS" in missing.stderr
    # and so it does without a database password (no default one to guess)
    no_password = _compose_config(**{**_SECRETS, "POSTGRES_PASSWORD": ""})
    assert no_password.returncode != 0 and "POSTGRES_PASSWORD" in no_password.stderr
    # given the required variables (and no dev-profile variable), the production path
    # validates; nginx publishes the only HTTP port, web trusts one proxy, the Celery
    # processes export their counters on the internal network only
    production = _compose_config(**_SECRETS)
    assert production.returncode == 0, production.stderr
    services = yaml.safe_load(production.stdout)["services"]
    assert services["provider"]["profiles"] == ["dev"]
    assert [p["published"] for p in services["nginx"]["ports"]] == [8000]
    assert "ports" not in services["web"]
    assert services["web"]["environment"]["NUM_PROXIES"] == "1"
    assert services["web"]["environment"]["ALLOW_PLAIN_HTTP"] == "false"
    for name in ("worker", "beat"):
        assert services[name]["environment"]["METRICS_PORT"] == "9100"
        assert services[name]["expose"] == ["9100"] and "ports" not in services[name]
    # and the dev profile validates too
    dev = _compose_config("--profile", "dev", **_SECRETS, FAKE_PROVIDER_TOKEN="t" * 32)
    assert dev.returncode == 0, dev.stderr
