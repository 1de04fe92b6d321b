"""The sync engine: bring many raw tables up to their manifest watermarks, tables in parallel on Ray.

One engine for every entry point: the raw asset's I/O manager, ``cda_sync_job``, the sensor's runs
and the benchmarks all call ``sync_tables``.

- Tables already at their manifest watermark are settled in the driver by a peek at their newest
  Delta commit (three small reads each), so a run with nothing to do never starts Ray.
- Small work (at most ``driver_max_bytes`` of pending parquet, no cluster address) and shallow
  clones (no data copied) load on threads in the driver: Ray's start-up would cost more than them.
- The others run as Ray tasks: on a local Ray by default, on a cluster when an address is given
  (``RAY_ADDRESS``). Ray is started or connected once per process.
- A table's failure is its own: its result says ``failed`` with the reason, the others carry on and
  stay committed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from guidewire_pipeline.cda.delta_writer import (
    CloneMode,
    TableSyncResult,
    loaded_watermark,
    open_table,
    peek_log,
    sync_table,
)
from guidewire_pipeline.cda.load_plan import LoadPlan, plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.storage import Location

Progress = Callable[[str], None]
_ray_lock = threading.Lock()


# Heavy work runs on Ray: local by default, a cluster with RAY_ADDRESS. A run without a cluster
# address whose pending parquet is at most this size loads on threads in the driver instead: a local
# Ray takes 4-8 s to start on 2 cores, about what loading 256 MB takes (~40 MB/s measured in
# benchmarks/), so below that Ray would cost more than the work. pyarrow and delta-rs release the
# GIL, so the threads use every core. Tune with the I/O manager's `driver_max_bytes` (0: always Ray).
DRIVER_MAX_BYTES = 256 * 2**20
SHALLOW_THREADS = 8  # shallow loads wait on storage (footers, commits), not on CPU


@dataclass(frozen=True)
class RaySettings:
    """Where the heavy work runs: local Ray (address None) or a cluster; CPUs for a local Ray.

    ``driver_max_bytes``: a run without a cluster address whose pending parquet is at most this
    size loads on threads in the driver and never starts Ray (0: always Ray). Shallow runs copy no
    data and always load in the driver."""

    address: str | None = None
    num_cpus: int | None = None
    driver_max_bytes: int = DRIVER_MAX_BYTES


def raw_table_location(delta_root: str, table: str) -> Location:
    """``<GW_DELTA_ROOT>/raw/<table>``."""
    return Location.parse(delta_root).join("raw", table)


def sync_tables(
    entries: Iterable[ManifestEntry],
    delta_root: str,
    *,
    ray: RaySettings | None = None,
    clone_mode: CloneMode = "deep",
    progress: Progress | None = None,
    on_result: Callable[[TableSyncResult], None] | None = None,
) -> list[TableSyncResult]:
    """Sync every entry's raw table; returns one result per entry (failed ones included)."""
    entries = list(entries)
    results: list[TableSyncResult] = []

    def finish(result: TableSyncResult) -> None:
        results.append(result)
        if on_result:
            on_result(result)
        if progress and (result.status != "up_to_date" or len(entries) <= 20):
            progress(_describe(result, len(results), len(entries)))

    pending: list[tuple[ManifestEntry, LoadPlan]] = []
    for entry, settled in zip(entries, _settle(entries, delta_root), strict=True):
        if isinstance(settled, LoadPlan):
            pending.append((entry, settled))
        else:
            finish(settled)
    if progress:
        progress(f"{len(entries) - len(pending)} of {len(entries)} tables have nothing to load; "
                 f"{len(pending)} to load")
    settings = ray or RaySettings()
    if pending and _in_driver(pending, settings, clone_mode):
        threads = SHALLOW_THREADS if clone_mode == "shallow" else (settings.num_cpus or os.cpu_count() or 1)
        if progress:
            progress(f"Loading {len(pending)} tables on {threads} threads in this process, without Ray "
                     f"({clone_mode}, {sum(p.pending_bytes for _, p in pending) / 1e6:.1f} MB pending)")
        _run_in_driver(pending, delta_root, clone_mode, finish, threads)
    elif pending:
        if progress:
            where = f"connecting to Ray at {settings.address}" if settings.address else "starting a local Ray"
            progress(f"Loading {len(pending)} tables on Ray, {where}")
        _run_on_ray(pending, delta_root, settings, clone_mode, finish)
    order = {entry.table: i for i, entry in enumerate(entries)}
    return sorted(results, key=lambda r: order[r.table])


def _settle(entries: list[ManifestEntry], delta_root: str) -> list[TableSyncResult | LoadPlan]:
    """For each entry: an ``up_to_date`` result when nothing is pending, else its load plan.

    The savepoint comes from a peek at the table's newest commit (``peek_log``: three small reads,
    no delta-rs replay), so a table at its manifest watermark costs that and no listing. A table
    behind costs its listing, which the load then reuses. Only when the newest commit records no
    savepoint is the table opened with delta-rs. Reads run on threads: they wait on storage."""

    def settle(entry: ManifestEntry) -> TableSyncResult | LoadPlan:
        started = time.monotonic()
        location = raw_table_location(delta_root, entry.table)
        try:
            peek = peek_log(location)
            if peek is not None and peek.loaded_watermark is not None:
                watermark, version = peek.loaded_watermark, peek.version
            else:
                table = open_table(location)
                watermark = loaded_watermark(table)
                version = table.version() if table is not None else None
            if watermark is None or watermark < entry.manifest_watermark:
                plan = plan_table(entry, watermark)
                if not plan.is_empty:
                    return plan
        except Exception as exc:  # the table's own problem: report it, keep the others going
            return TableSyncResult(
                table=entry.table, status="failed", manifest_watermark=entry.manifest_watermark,
                watermark_before=None, watermark_after=None, uri=location.uri,
                error=f"Table {entry.table!r}: {exc}", duration_s=time.monotonic() - started)
        loaded = [fp.fingerprint for fp in entry.fingerprints if watermark is not None and fp.starts_at <= watermark]
        return TableSyncResult(
            table=entry.table, status="up_to_date", manifest_watermark=entry.manifest_watermark,
            watermark_before=watermark, watermark_after=watermark,
            delta_version=version,
            fingerprints=loaded, uri=location.uri, duration_s=time.monotonic() - started,
        )

    if not entries:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(entries))) as pool:
        return list(pool.map(settle, entries))


def _in_driver(work: list[tuple[ManifestEntry, LoadPlan]], settings: RaySettings, clone_mode: CloneMode) -> bool:
    if clone_mode == "shallow":
        return True
    if settings.address:
        return False  # a running cluster costs little to reach
    return sum(plan.pending_bytes for _, plan in work) <= settings.driver_max_bytes


def _run_in_driver(
    work: list[tuple[ManifestEntry, LoadPlan]], delta_root: str, clone_mode: CloneMode,
    finish: Callable[[TableSyncResult], None], threads: int,
) -> None:
    """Small or copy-free work: tables on threads in this process, no Ray start-up."""
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(work)))) as pool:
        futures = [
            pool.submit(sync_table, entry, raw_table_location(delta_root, entry.table), clone_mode=clone_mode, plan=plan)
            for entry, plan in work
        ]
        for future in futures:
            finish(future.result())  # sync_table never raises for a table's own problem


def ensure_ray(settings: RaySettings) -> dict[str, Any]:
    """Start a local Ray, or connect to ``settings.address``, once per process. Returns Ray's
    cluster resources (for metadata and logs)."""
    import ray

    with _ray_lock:
        if not ray.is_initialized():
            if settings.address:
                ray.init(address=settings.address, log_to_driver=False, configure_logging=False)
            else:
                ray.init(num_cpus=settings.num_cpus, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
    return dict(ray.cluster_resources())


_remote_sync: Any = None


def _remote() -> Any:
    global _remote_sync
    if _remote_sync is None:
        import ray

        # max_retries=0: a retry is the next run's job, and exactly-once makes it safe.
        _remote_sync = ray.remote(num_cpus=1, max_retries=0)(sync_table)
    return _remote_sync


def _run_on_ray(
    work: list[tuple[ManifestEntry, LoadPlan]], delta_root: str, settings: RaySettings, clone_mode: CloneMode,
    finish: Callable[[TableSyncResult], None],
) -> None:
    import ray

    ensure_ray(settings)
    remote = _remote()
    futures = {
        remote.remote(entry, raw_table_location(delta_root, entry.table), clone_mode=clone_mode, plan=plan): entry
        for entry, plan in work
    }
    waiting = list(futures)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for ref in done:
            entry = futures[ref]
            try:
                finish(ray.get(ref))
            except Exception as exc:  # a worker died (out of memory, killed): that table failed
                finish(TableSyncResult(
                    table=entry.table, status="failed", manifest_watermark=entry.manifest_watermark,
                    watermark_before=None, watermark_after=None,
                    uri=raw_table_location(delta_root, entry.table).uri,
                    error=f"Table {entry.table!r}: its Ray task failed: {exc}",
                ))


def _describe(result: TableSyncResult, number: int, total: int) -> str:
    prefix = f"[{number}/{total}] {result.table}:"
    if result.status == "failed":
        return f"{prefix} FAILED: {result.error}"
    if result.status == "up_to_date":
        return f"{prefix} up to date at {result.watermark_after}"
    return (f"{prefix} {result.batches_applied} batches, {result.rows_added} rows, "
            f"watermark {result.watermark_before} -> {result.watermark_after} ({result.duration_s:.1f}s)")
