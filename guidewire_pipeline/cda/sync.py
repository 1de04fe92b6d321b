"""The sync engine: bring many raw tables up to their manifest watermarks, tables in parallel on Ray.

One engine for every entry point: the raw asset's I/O manager, ``cda_sync_job``, the sensor's runs
and the benchmarks all call ``sync_tables``.

- Tables already at their manifest watermark are settled in the driver by a peek at their newest
  Delta commit (three small reads each), so a run with nothing to do never starts Ray.
- Work without a cluster address up to ``driver_max_bytes`` of pending parquet (4 GiB), and shallow
  clones (no data copied), load on threads in the driver: on one machine a local Ray costs more time
  and memory than it saves (``DRIVER_MAX_BYTES`` below has the figures).
- The others run as Ray tasks: on a local Ray by default, on a cluster when an address is given
  (``RAY_ADDRESS``). Ray is started or connected once per process.
- A table's failure is its own: its result says ``failed`` with the reason, the others carry on and
  stay committed.
- Progress lines of every table (per commit: batches and bytes done, rows, rate) reach the caller's
  ``progress`` from the driver's threads and from Ray workers alike, through one queue drained here.
- Ray tasks declare the memory they need from their pending bytes, so a cluster does not put two
  huge tables on one node.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from guidewire_pipeline.cda.delta_writer import CloneMode, TableSyncResult, sync_table
from guidewire_pipeline.cda.load_plan import CommitBudget, LoadPlan, plan_table
from guidewire_pipeline.cda.manifest import ManifestEntry
from guidewire_pipeline.cda.raw_table import Progress, open_table
from guidewire_pipeline.cda.savepoint import peek_log, read_savepoint
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.display import watermark
from guidewire_pipeline.lakehouse import RAW, Lakehouse

_ray_lock = threading.Lock()


# Heavy work runs on Ray: local by default, a cluster with RAY_ADDRESS. Without a cluster address, a
# run whose pending parquet is at most DRIVER_MAX_BYTES loads on threads in the run's process instead.
# On one machine a local Ray only adds cost: its start (4-8 s on 2 cores) and moving the work into
# worker processes (benchmark 1: 0.89 GB in 19.4 s on local Ray against 10.7 s on threads;
# benchmark 5: 2.5 GB peak RSS against 1.6 GB). pyarrow and delta-rs release the GIL, so the threads
# use every core. Past this size (a first load of many large tables), local Ray's memory-aware
# scheduling (each task declares its memory) is what keeps the machine from swapping. Tune with the
# I/O manager's `driver_max_bytes` (0: always Ray).
DRIVER_MAX_BYTES = 4 * 2**30
SHALLOW_THREADS = 8  # shallow loads wait on storage (footers, commits), not on CPU
PROGRESS_INTERVAL_S = 1.0  # how often waiting loops forward the tables' progress lines
# A deep load streams record batches: benchmark 5 (memory) measured 669 MB for the whole process
# loading a 2.1 GB table, against about 150 MB for a small one. A task declares that range.
TASK_MEMORY_MIN = 160 * 2**20
TASK_MEMORY_MAX = 1024 * 2**20


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
    return Lakehouse(delta_root).location(RAW, table)


def task_memory_bytes(plan: LoadPlan) -> int:
    """The memory a Ray task declares for loading ``plan``: grows with its pending bytes, within the
    range a streamed load was measured to need."""
    return int(min(TASK_MEMORY_MAX, TASK_MEMORY_MIN + plan.pending_bytes // 2))


def sync_tables(
    entries: Iterable[ManifestEntry],
    delta_root: str,
    *,
    ray: RaySettings | None = None,
    clone_mode: CloneMode = "deep",
    budget: CommitBudget | None = None,
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
    load = _Load(delta_root, clone_mode, budget or CommitBudget(), finish, progress)
    if pending and _in_driver(pending, settings, clone_mode):
        threads = SHALLOW_THREADS if clone_mode == "shallow" else _deep_threads(settings)
        if progress:
            progress(f"Loading {len(pending)} tables on {threads} threads in this process, without Ray "
                     f"({clone_mode}, {sum(p.pending_bytes for _, p in pending) / 1e6:.1f} MB pending)")
        load.in_driver(pending, threads)
    elif pending:
        if progress:
            where = f"connecting to Ray at {settings.address}" if settings.address else "starting a local Ray"
            progress(f"Loading {len(pending)} tables on Ray, {where}")
        load.on_ray(pending, settings)
    order = {entry.table: i for i, entry in enumerate(entries)}
    return sorted(results, key=lambda r: order[r.table])


def _settle(entries: list[ManifestEntry], delta_root: str) -> list[TableSyncResult | LoadPlan]:
    """For each entry: an ``up_to_date`` result when nothing is pending, else its load plan.

    The savepoint comes from a peek at the table's newest commit (``peek_log``: three small reads,
    no delta-rs replay), so a table at its manifest watermark costs that and no listing. A table
    behind costs its listing, which the load then reuses. When the newest commit vouches for nothing
    (a RESTORE, a change by another tool), the table is opened with delta-rs and its savepoint checked
    against its live rows. Reads run on threads: they wait on storage."""

    def settle(entry: ManifestEntry) -> TableSyncResult | LoadPlan:
        started = time.monotonic()
        location = raw_table_location(delta_root, entry.table)
        try:
            peek = peek_log(location)
            if peek is not None and peek.loaded_watermark is not None:
                watermark, version = peek.loaded_watermark, peek.version
            else:
                table = open_table(location, without_files=False)
                watermark = read_savepoint(entry.table, location, table).watermark
                version = table.version() if table is not None else None
            if watermark != entry.manifest_watermark:  # behind, or ahead: plan_table refuses a backward watermark
                plan = plan_table(entry, watermark)
                if not plan.is_empty:
                    return plan
        except Exception as exc:  # the table's own problem: report it, keep the others going
            message = str(exc) if entry.table in str(exc) else f"Table {entry.table!r}: {exc}"
            return TableSyncResult(
                table=entry.table, status="failed", manifest_watermark=entry.manifest_watermark,
                watermark_before=None, watermark_after=None, uri=location.uri,
                error=message, duration_s=time.monotonic() - started)
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


def _deep_threads(settings: RaySettings) -> int:
    """Deep loads on driver threads: one per CPU, and no more than half the machine's memory holds at
    the most a load was measured to need (``TASK_MEMORY_MAX`` each), as Ray would schedule them."""
    cpus = settings.num_cpus or os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: CPUs only
        return cpus
    return max(1, min(cpus, memory // 2 // TASK_MEMORY_MAX))


def _in_driver(work: list[tuple[ManifestEntry, LoadPlan]], settings: RaySettings, clone_mode: CloneMode) -> bool:
    if clone_mode == "shallow":
        return True
    if settings.address:
        return False  # a running cluster costs little to reach
    return sum(plan.pending_bytes for _, plan in work) <= settings.driver_max_bytes


class _Load:
    """Loads tables on driver threads or Ray tasks; forwards their progress lines to ``progress``
    from this thread while it waits, and each result to ``finish`` as it arrives."""

    def __init__(self, delta_root: str, clone_mode: CloneMode, budget: CommitBudget,
                 finish: Callable[[TableSyncResult], None], progress: Progress | None) -> None:
        self.delta_root, self.clone_mode, self.budget = delta_root, clone_mode, budget
        self.finish, self.progress = finish, progress

    def in_driver(self, work: list[tuple[ManifestEntry, LoadPlan]], threads: int) -> None:
        """Small or copy-free work: tables on threads in this process, no Ray start-up."""
        lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(work)))) as pool:
            waiting = {
                pool.submit(sync_table, entry, raw_table_location(self.delta_root, entry.table),
                            clone_mode=self.clone_mode, budget=self.budget, plan=plan,
                            progress=lines.put if self.progress else None)
                for entry, plan in work
            }
            while waiting:
                done, waiting = wait(waiting, timeout=PROGRESS_INTERVAL_S, return_when=FIRST_COMPLETED)
                self._forward(lines.empty, lines.get_nowait)
                for future in done:
                    self.finish(future.result())  # sync_table never raises for a table's own problem

    def on_ray(self, work: list[tuple[ManifestEntry, LoadPlan]], settings: RaySettings) -> None:
        import ray
        from ray.util.queue import Queue

        ensure_ray(settings)
        remote = _remote()
        lines = Queue(actor_options={"num_cpus": 0}) if self.progress else None
        try:
            futures = {
                remote.options(memory=task_memory_bytes(plan)).remote(
                    entry, raw_table_location(self.delta_root, entry.table), clone_mode=self.clone_mode,
                    budget=self.budget, plan=plan, progress=lines.put_nowait if lines is not None else None): entry
                for entry, plan in work
            }
            waiting = list(futures)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1, timeout=PROGRESS_INTERVAL_S)
                if lines is not None:
                    self._forward(lines.empty, lines.get_nowait)
                for ref in done:
                    self.finish(self._ray_result(ref, futures[ref]))
        finally:
            if lines is not None:
                lines.shutdown()

    def _ray_result(self, ref: Any, entry: ManifestEntry) -> TableSyncResult:
        import ray

        try:
            return ray.get(ref)
        except Exception as exc:  # a worker died (out of memory, killed): that table failed
            return TableSyncResult(
                table=entry.table, status="failed", manifest_watermark=entry.manifest_watermark,
                watermark_before=None, watermark_after=None,
                uri=raw_table_location(self.delta_root, entry.table).uri,
                error=f"Table {entry.table!r}: its Ray task failed: {exc}",
            )

    def _forward(self, empty: Callable[[], bool], get: Callable[[], str]) -> None:
        while self.progress and not empty():
            self.progress(get())


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


def _sync_on_worker(entry: ManifestEntry, location: Location, **kwargs: Any) -> TableSyncResult:
    """``sync_table`` in a Ray task; the result records the memory Ray reserved for the task."""
    import ray

    result = sync_table(entry, location, **kwargs)
    result.ray_memory_bytes = int(ray.get_runtime_context().get_assigned_resources().get("memory", 0))
    return result


def _remote() -> Any:
    global _remote_sync
    if _remote_sync is None:
        import ray

        # max_retries=0: a retry is the next run's job, and exactly-once makes it safe.
        _remote_sync = ray.remote(num_cpus=1, max_retries=0)(_sync_on_worker)
    return _remote_sync


def _describe(result: TableSyncResult, number: int, total: int) -> str:
    prefix = f"[{number}/{total}] {result.table}:"
    if result.status == "failed":
        return f"{prefix} FAILED: {result.error}"
    if result.status == "up_to_date":
        return f"{prefix} up to date at {watermark(result.watermark_after)}"
    return (f"{prefix} {result.batches_applied} batches in {result.commits} commit(s), {result.rows_added} rows, "
            f"watermark {watermark(result.watermark_before)} -> {watermark(result.watermark_after)} "
            f"({result.duration_s:.1f}s)")
