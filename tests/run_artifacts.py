"""Counts that each test process leaves behind for the terminal summary to add up.

Under pytest-xdist every worker is its own process: each writes its counts to
test-artifacts/<kind>/counts-<worker>.json when its session ends, and the process that
prints the terminal summary merges the files written during this run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
_STARTED = time.time()


def artifacts_dir(kind: str) -> Path:
    return ARTIFACTS / kind


def save_counts(kind: str, worker: str, counts: Mapping[str, int]) -> None:
    if not counts:
        return
    directory = artifacts_dir(kind)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"counts-{worker}.json").write_text(json.dumps(dict(counts), indent=1))


def this_runs_files(kind: str, pattern: str = "counts-*.json") -> list[dict]:
    """The JSON files of `kind` written during this run (not an earlier run's), parsed."""
    return [
        json.loads(path.read_text())
        for path in sorted(artifacts_dir(kind).glob(pattern))
        if path.stat().st_mtime >= _STARTED
    ]


def merged_counts(kind: str) -> Counter[str]:
    merged: Counter[str] = Counter()
    for counts in this_runs_files(kind):
        merged.update(counts)
    return merged
