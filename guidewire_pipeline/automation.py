"""What the sensors share: remembering the runs they launched, and asking again for the tables of a
run that failed, with a bounded back-off.

A sensor keeps a ``RunTracker`` in its cursor. Each tick it first settles the runs it launched (a run
key can have several runs: the original and the instance's automatic retries; the newest counts):
- a run that succeeded: its tables are done;
- a run that failed or was canceled: its failed tables (the ``failed_tables`` metadata of its step
  failure, else all its tables) are asked for again once their back-off has passed: 1, 2, 4 ... minutes
  after each failure, at most ``MAX_BACKOFF_S``; the wait restarts from 1 minute when they succeed;
- a run still queued or running: its tables are not asked for twice;
- a requested run that never appeared (after ``UNLAUNCHED_AFTER_S``): forgotten, its tables asked for again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

FIRST_BACKOFF_S = 60
UNLAUNCHED_AFTER_S = 15 * 60
MAX_BACKOFF_S = 3600
RUN_KEY_TAG = "dagster/run_key"  # Dagster tags every sensor-requested run with its request's key
FAILED_TABLES_KEY = "failed_tables"  # step-failure metadata naming the tables a run could not do
_DONE = {dg.DagsterRunStatus.SUCCESS}
_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def raise_for_failures(what: str, failures: dict[str, str], total: int,
                       metadata: dict[str, Any] | None = None) -> None:
    """Fail the step naming every failed table; ``failed_tables`` (table names, whatever layer failed)
    tells the sensors which tables to ask for again."""
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {total} tables failed in {what} (the others are committed): "
            + "; ".join(f"{t}: {reason}" for t, reason in sorted(failures.items())),
            metadata={FAILED_TABLES_KEY: dg.MetadataValue.json(sorted({t.split('/')[-1] for t in failures})),
                      **(metadata or {})},
        )


def run_key(job_name: str, work: str) -> str:
    """A run key that names the job and the exact work (tables at their watermarks, attempt numbers):
    the same work asked for twice is launched once."""
    return f"{job_name}:{hashlib.sha256(work.encode()).hexdigest()[:24]}"


def backoff_seconds(attempts: int) -> int:
    """Wait before asking again after ``attempts`` failures in a row."""
    return min(FIRST_BACKOFF_S * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S)


@dataclass
class RunTracker:
    """The part of a sensor's cursor that follows its runs. JSON: ``{"runs": {run_key: [requested_at,
    [tables]]}, "retry": {table: [failures, not_before_epoch_s]}}``."""

    runs: dict[str, list[Any]] = field(default_factory=dict)
    retry: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RunTracker:
        return cls(runs=dict(payload.get("runs", {})), retry=dict(payload.get("retry", {})))

    def to_json(self) -> dict[str, Any]:
        return {"runs": self.runs, "retry": self.retry}

    def in_flight(self) -> set[str]:
        return {t for _, tables in self.runs.values() for t in tables}

    def settle(self, instance: dg.DagsterInstance, now: float | None = None) -> list[str]:
        """Look up every launched run; returns the tables whose run failed (newly due for a retry
        after their back-off) and forgets the runs that ended."""
        now = time.time() if now is None else now
        failed: list[str] = []
        newest: dict[str, dg.DagsterRun] = {}
        if self.runs:  # one query for every launched run (newest first), not one per run
            for found in instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: list(self.runs)})):
                newest.setdefault(found.tags.get(RUN_KEY_TAG, ""), found)
        for run_key, (requested_at, tables) in list(self.runs.items()):
            run = newest.get(run_key)
            if run is None:
                if now - requested_at > UNLAUNCHED_AFTER_S:
                    del self.runs[run_key]  # the request was dropped: its tables are due again now
                    for table in tables:
                        self.retry[table] = [int(self.retry.get(table, [0, 0])[0]), now]
                continue
            if run.status in _DONE:
                for table in tables:
                    self.retry.pop(table, None)
                del self.runs[run_key]
            elif run.status in _FAILED:
                failed_here = [t for t in _failed_tables(instance, run) if t in tables] or tables
                for table in tables:
                    if table not in failed_here:
                        self.retry.pop(table, None)  # the run's other tables succeeded
                for table in failed_here:
                    failures = int(self.retry.get(table, [0, 0])[0]) + 1
                    self.retry[table] = [failures, now + backoff_seconds(failures)]
                    failed.append(table)
                del self.runs[run_key]
        return failed

    def waiting(self, now: float | None = None) -> set[str]:
        """Tables in their back-off window: not asked for yet."""
        now = time.time() if now is None else now
        return {t for t, (_, not_before) in self.retry.items() if not_before > now}

    def due(self, now: float | None = None) -> set[str]:
        """Failed tables whose back-off has passed and that no launched run covers yet."""
        return set(self.retry) - self.waiting(now) - self.in_flight()

    def launched(self, requests: list[dg.RunRequest], tables_of: Any, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for request in requests:
            self.runs[request.run_key] = [now, list(tables_of(request))]


def _failed_tables(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The tables a failed run names in its step failures' ``failed_tables`` metadata."""
    names: list[str] = []
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data if record.dagster_event else None
        metadata = (data.user_failure_data.metadata if data and data.user_failure_data else {}) or {}
        value = metadata.get(FAILED_TABLES_KEY)
        if value is not None:
            raw = value.value if hasattr(value, "value") else value
            names.extend(json.loads(raw) if isinstance(raw, str) else list(raw))
    return names
