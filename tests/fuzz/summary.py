"""Prints the schemathesis run's summary at the end of pytest's output (and saves it).

Each process that ran the fuzz tests (one per pytest-xdist worker) leaves its counts in
test-artifacts/schemathesis/stats-<worker>.json; the process that prints the terminal
summary merges those written during this run. Imported by tests/conftest.py.
"""

from __future__ import annotations

from collections import Counter

from tests.run_artifacts import artifacts_dir, this_runs_files

ARTIFACTS = artifacts_dir("schemathesis")


def merged_stats() -> dict[str, Counter]:
    merged: dict[str, Counter] = {}
    for stats in this_runs_files("schemathesis", "stats-*.json"):
        for label, counts in stats.items():
            merged.setdefault(label, Counter()).update(counts)
    return merged


def _checks(counts: Counter, outcome: str) -> int:
    return sum(n for key, n in counts.items() if key.startswith("check:") and key.endswith(outcome))


def render(stats: dict[str, Counter]) -> list[str]:
    total = Counter()
    for counts in stats.values():
        total.update(counts)
    passed, failed = _checks(total, ":passed"), _checks(total, ":failed")
    lines = [
        f"{len(stats)} operations, {total['cases']} test cases, {passed + failed} checks: "
        f"{passed} passed, {failed} failed"
    ]
    for label in sorted(stats, key=lambda label: label.split(" ", 1)[::-1]):
        counts = stats[label]
        statuses = " ".join(
            f"{key.removeprefix('status:')}×{n}"
            for key, n in sorted(counts.items())
            if key.startswith("status:")
        )
        lines.append(
            f"  {label:<42} {counts['cases']:>4} cases, checks {_checks(counts, ':passed'):>5} "
            f"passed {_checks(counts, ':failed'):>3} failed  [{statuses}]"
        )
    for key, n in sorted(total.items()):
        if key.startswith("check:") and key.endswith(":failed"):
            lines.append(f"  failed check {key.split(':')[1]}: {n}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):
        return  # a pytest-xdist worker: the controller prints the merged summary
    stats = merged_stats()
    if not stats:
        return
    lines = render(stats)
    terminalreporter.write_sep("=", "schemathesis summary")
    for line in lines:
        terminalreporter.write_line(line)
    (ARTIFACTS / "summary.txt").write_text("\n".join(lines) + "\n")
