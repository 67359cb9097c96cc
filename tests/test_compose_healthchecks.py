"""The image's HEALTHCHECK and docker-compose's healthchecks, run here for real (issue 12).

No Docker engine runs here, so each check's command, read from the Dockerfile and from
docker-compose.yml, runs against the process it checks started locally as the scripts
start it (gunicorn, a Celery worker and beat, the fake provider): it must pass while the
process serves and fail when it does not. Only the fixed addresses of the containers (ports
8000, 9100, 8100 and the worker's heartbeat file) are replaced by this test's own, and
`python` by this interpreter (the commands use the standard library only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from django.db import connection

from scripts.processes import (
    REPO,
    beat_command,
    database_url,
    provider_command,
    service_env,
    start_process,
    stop_all,
    web_command,
    worker_command,
)
from scripts.servers import free_port, start_redis
from tests.event_contract import stop_after_checking_streams
from tests.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _compose_check(service: str) -> list[str]:
    test = COMPOSE["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python", test
    return test[1:]


def _image_check() -> list[str]:
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])$", dockerfile, re.M)
    assert match, "no HEALTHCHECK ... CMD [...] in the Dockerfile"
    return json.loads(match.group(1))


def _run(argv: list[str], *, replace: dict[str, str] = {}, **env: str) -> int:  # noqa: B006
    local = [sys.executable if part == "python" else part for part in argv]
    for old, new in replace.items():
        changed = [part.replace(old, new) for part in local]
        assert changed != local, f"the healthcheck no longer names {old}: {argv}"
        local = changed
    return subprocess.run(
        local, env={**os.environ, **env}, capture_output=True, timeout=30, check=False
    ).returncode


def test_the_image_and_compose_checks_run_against_local_processes(tmp_path):
    # given web, a worker, beat and the fake provider, started as the scripts start them,
    # with the container settings the checks rely on (METRICS_PORT, WORKER_HEARTBEAT_FILE)
    redis_server = start_redis(tmp_path / "redis", free_port())
    web_port, beat_port, provider_port = free_port(), free_port(), free_port()
    heartbeat = tmp_path / "worker.heartbeat"
    names = f"healthchecks-{uuid.uuid4().hex[:8]}"

    def env(**overrides: object) -> dict[str, str]:
        return service_env(
            database_url=database_url(connection.settings_dict),
            redis_url=redis_server.url,
            names=names,
            **overrides,
        )

    processes = []
    try:

        def start(name: str, argv: list[str], process_env: dict[str, str]):
            process = start_process(
                name, argv, process_env, tmp_path / f"{name}.log", die_with_parent=True
            )
            processes.append(process)
            return process

        web = start("web", web_command(), env(PORT=web_port, WEB_CONCURRENCY=1))
        worker = start(
            "worker",
            worker_command(hostname=f"{names}@%h", pool="solo"),
            env(WORKER_HEARTBEAT_FILE=heartbeat),
        )
        beat = start(
            "beat",
            beat_command(pidfile=tmp_path / "beat.pid", schedule=tmp_path / "beat-schedule"),
            env(METRICS_PORT=beat_port, METRICS_BIND="127.0.0.1"),
        )
        provider = start(
            "provider",
            provider_command(
                port=provider_port,
                webhook_url=f"http://127.0.0.1:{web_port}/api/v1/payments/webhook/",
                state_file=tmp_path / "provider-state.json",
            ),
            env(),
        )
        web.wait_http_ok(f"http://127.0.0.1:{web_port}/healthz", timeout=60, what="gunicorn up")
        provider.wait_http_ok(
            f"http://127.0.0.1:{provider_port}/healthz", timeout=30, what="provider up"
        )
        eventually(heartbeat.exists, timeout=30, what="worker heartbeat file", alive=[worker])

        # then every check passes while its process serves ...
        web_check, image_check = _compose_check("web"), _image_check()
        beat_check, provider_check = _compose_check("beat"), _compose_check("provider")
        worker_check = _compose_check("worker")
        to_web = {"127.0.0.1:8000": f"127.0.0.1:{web_port}"}
        to_beat = {"127.0.0.1:9100": f"127.0.0.1:{beat_port}"}
        to_provider = {"127.0.0.1:8100": f"127.0.0.1:{provider_port}"}
        to_heartbeat = {"/run/celery/heartbeat": str(heartbeat)}
        assert _run(web_check, replace=to_web) == 0
        assert _run(image_check, BIND=f"127.0.0.1:{web_port}") == 0
        assert _run(provider_check, replace=to_provider) == 0
        eventually(
            lambda: _run(beat_check, replace=to_beat) == 0,
            timeout=30,
            what="beat's exporter answering the compose check",
            alive=[beat],
        )
        assert _run(worker_check, replace=to_heartbeat) == 0

        # ... and fails where nothing serves
        nobody = str(free_port())
        assert _run(web_check, replace={"127.0.0.1:8000": f"127.0.0.1:{nobody}"}) != 0
        assert _run(image_check, BIND=f"0.0.0.0:{nobody}") != 0
        assert _run(beat_check, replace={"127.0.0.1:9100": f"127.0.0.1:{nobody}"}) != 0
        assert _run(provider_check, replace={"127.0.0.1:8100": f"127.0.0.1:{nobody}"}) != 0
        assert _run(worker_check, replace={"/run/celery/heartbeat": str(tmp_path / "none")}) != 0

        # and the worker's check fails on a heartbeat older than 30 s (a copy the worker does
        # not touch: the live file may be touched again before the check reads it) ...
        stale = tmp_path / "stale.heartbeat"
        shutil.copyfile(heartbeat, stale)
        os.utime(stale, (time.time() - 60, time.time() - 60))
        assert _run(worker_check, replace={"/run/celery/heartbeat": str(stale)}) != 0
        # ... while the running worker keeps its own file fresh (touched every 2 s)
        os.utime(heartbeat, (time.time() - 60, time.time() - 60))
        eventually(
            lambda: _run(worker_check, replace=to_heartbeat) == 0,
            timeout=15,
            what="worker touching its heartbeat file again",
            alive=[worker],
        )
    finally:
        stop_all(processes)
        # The logs first: a stream entry off the contract fails the test in what follows.
        for path in sorted(Path(tmp_path).glob("*.log")):
            print(f"----- {path.name}\n{path.read_text()[-2000:]}")
        stop_after_checking_streams(redis_server)


def test_the_image_installs_the_uv_the_makefile_pins():
    # given the uv version the Makefile installs and the one the Dockerfile's build stage does
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    (pinned,) = re.findall(r"^UV_VERSION\s*:?=\s*(\S+)\s*$", makefile, re.MULTILINE)
    (built,) = re.findall(r"^ARG UV_VERSION=(\S+)\s*$", dockerfile, re.MULTILINE)
    # then they are one version: the lock is exported and checked by the one, installed by
    # the other
    assert built == pinned
