"""The fault drill (bench/fault_drill.py) in CI, with a short load: crash and restart every
part of the system under load; afterwards nothing is lost, duplicated or stuck."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.polling import eventually

REPO = Path(__file__).resolve().parents[2]
DRILL = REPO / "bench" / "fault_drill.py"

pytestmark = pytest.mark.slow

EXPECTED_FAULTS = {
    "SIGKILL a gunicorn worker",
    "SIGKILL the Celery worker",
    "SIGKILL beat",
    "restart PostgreSQL",
    "restart Redis",
    "provider hangs",
}


def test_fault_drill_passes(tmp_path):
    # given the drill with a short load (its own PostgreSQL, Redis and processes)
    report_path = tmp_path / "report.json"
    output_path = tmp_path / "drill.log"
    with output_path.open("wb") as out:
        drill = subprocess.Popen(
            [sys.executable, str(DRILL), "--duration", "30", "--json", str(report_path)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def output() -> str:
        return output_path.read_text(errors="replace")

    # when it runs to the end: its own waits are bounded, and it logs what it is doing (and
    # what a long wait of its sees moving), so its output growing is its progress; only a
    # drill silent for longer than any wait of its own (its start-up's ceiling is 5 x 60 s,
    # scaled alike) is hung (SIGTERM, not SIGKILL: it cleans up on it)
    try:
        eventually(
            lambda: drill.poll() is not None,
            timeout=300,
            what="the drill to finish",
            interval=1.0,
            progress=lambda: output_path.stat().st_size,
            ceiling=10,
        )
    except AssertionError as exc:
        drill.send_signal(signal.SIGTERM)
        drill.wait(timeout=120)
        pytest.fail(f"{exc}\n{output()[-6000:]}")
    print(output())

    # then every check passed, and the drill did what it says
    assert drill.returncode == 0, output()[-6000:]
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    failed = {name: c["detail"] for name, c in report["checks"].items() if not c["ok"]}
    assert not failed, failed
    assert {fault["fault"] for fault in report["faults"]} == EXPECTED_FAULTS
    assert all(fault["ok"] for fault in report["faults"])
    client = report["client"]
    assert client["orders_created"] >= 50, client
    assert client["unresolved_keys"] == 0
    events = report["events"]
    assert events["outbox_rows"] == events["stream_entries"] > 0
    assert events["duplicates"] == events["missing_from_stream"] == 0
    statuses = [status for _, status, _ in report["readyz_transitions"]]
    assert "503" in statuses
    assert statuses[-1] == "200"
