"""One engine run in a fresh process, as a scheduled run would be: read the manifest, sync every table.

``python -m benchmarks.engine_run MANIFEST DELTA_ROOT [--clone-mode deep|shallow] [--num-cpus N]
[--ray-address ADDR] [--driver-max-bytes N] [--commit-max-bytes N] [--commit-max-batches N]
[--profile FILE]`` prints one JSON line: wall time from process start, time of
the manifest read, of the sync, of Ray's start-up (0 when Ray was not needed), result counts.
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest")
    parser.add_argument("delta_root")
    parser.add_argument("--clone-mode", default="deep")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--driver-max-bytes", type=int, default=None,
                        help="below this much pending parquet, load in the driver (0: always Ray)")
    parser.add_argument("--commit-max-bytes", type=int, default=None, help="commit budget in parquet bytes (deep)")
    parser.add_argument("--commit-max-batches", type=int, default=None, help="commit budget in CDA batches")
    parser.add_argument("--profile", default=None, help="write a pyinstrument HTML profile here")
    args = parser.parse_args()

    from guidewire_pipeline.cda import sync
    from guidewire_pipeline.cda.load_plan import CommitBudget
    from guidewire_pipeline.cda.manifest import read_manifest

    imported = time.perf_counter()
    ray_time = {"s": 0.0}
    original_ensure_ray = sync.ensure_ray

    def timed_ensure_ray(settings: sync.RaySettings) -> dict:
        import ray

        if ray.is_initialized():
            return original_ensure_ray(settings)
        started = time.perf_counter()
        resources = original_ensure_ray(settings)
        ray_time["s"] += time.perf_counter() - started
        return resources

    sync.ensure_ray = timed_ensure_ray
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    began = time.perf_counter()
    manifest = read_manifest(args.manifest)
    manifest_s = time.perf_counter() - began
    results = sync.sync_tables(
        manifest.entries.values(), args.delta_root,
        ray=sync.RaySettings(address=args.ray_address, num_cpus=args.num_cpus,
                             driver_max_bytes=sync.DRIVER_MAX_BYTES if args.driver_max_bytes is None
                             else args.driver_max_bytes),
        clone_mode=args.clone_mode,
        budget=CommitBudget(**{k: v for k, v in {"max_bytes": args.commit_max_bytes,
                                                  "max_batches": args.commit_max_batches}.items() if v}),
    )
    finished = time.perf_counter()
    if profiler:
        profiler.stop()
        with open(args.profile, "w") as handle:
            handle.write(profiler.output_html())
    statuses: dict[str, int] = {}
    for result in results:
        statuses[result.status] = statuses.get(result.status, 0) + 1
    errors = [r.error for r in results if r.error][:3]
    print(json.dumps({
        "wall_s": finished - STARTED, "import_s": imported - STARTED, "manifest_s": manifest_s,
        "run_s": finished - began, "ray_start_s": ray_time["s"], "statuses": statuses, "errors": errors,
        "rows_added": sum(r.rows_added for r in results), "batches": sum(r.batches_applied for r in results),
        "commits": sum(r.commits for r in results),
    }))


if __name__ == "__main__":
    main()
