"""``make demo``: run the whole pipeline the way CI does, then summarize what landed.

It runs ``dagster job execute -m guidewire_pipeline.definitions -j guidewire_e2e_job`` (the command
users put in CI), streams its progress, and prints rows per layer, watermarks and the first rows of
each gold mart. It exits with the job's exit code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from deltalake import DeltaTable

from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.raw_table import read_table_state
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.settings import Settings, load_settings
from guidewire_pipeline.status import format_watermark

JOB = "guidewire_e2e_job"
PROGRESS_MARKERS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "RUN_SUCCESS", "RUN_FAILURE", " - INFO - ",
                    " - ERROR - ", " - WARNING - ")


def run_job(job: str = JOB) -> int:
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    command = [dagster, "job", "execute", "-m", "guidewire_pipeline.definitions", "-j", job]
    print(f"$ {' '.join(['dagster', *command[1:]])}", flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if any(marker in line for marker in PROGRESS_MARKERS):
            # "<date> - dagster - LEVEL - job - run id - pid - step - EVENT - message": keep step and message.
            parts = line.rstrip().split(" - ")
            print("  " + " - ".join(parts[6:] if len(parts) > 6 else parts)[:200], flush=True)
    return process.wait()


def _rows(location: Location) -> int | None:
    state = read_table_state(location)
    return state.total_rows if state.exists else None


def summary(settings: Settings) -> str:
    manifest = read_manifest(settings.manifest_uri)
    root = Location.parse(settings.delta_root)
    lines = [f"{'table':<18}{'manifest watermark':<22}{'loaded watermark':<22}{'raw':>8}{'bronze':>8}{'silver':>8}"]
    for table in manifest.tables:
        entry = manifest.entries.get(table)
        state = read_table_state(root.join("raw", table))
        counts = [state.total_rows if state.exists else None, _rows(root.join("bronze", table)),
                  _rows(root.join("silver", table))]
        lines.append(
            f"{table:<18}{format_watermark(entry.manifest_watermark if entry else None):<22}"
            f"{format_watermark(state.loaded_watermark):<22}"
            + "".join(f"{'-' if c is None else c:>8}" for c in counts)
        )
    for mart in load_marts():
        location = root.join("gold", mart)
        if not DeltaTable.is_deltatable(location.delta_uri, storage_options=location.delta_storage_options()):
            lines.append(f"\ngold/{mart}: not built")
            continue
        table = DeltaTable(location.delta_uri, storage_options=location.delta_storage_options()).to_pyarrow_table()
        lines.append(f"\ngold/{mart}: {table.num_rows} rows; first rows:")
        lines.append(table.slice(0, 5).to_pandas().to_string(index=False))
    return "\n".join(lines)


def main() -> int:
    settings = load_settings()
    code = run_job()
    print()
    print(summary(settings))
    if code == 0:  # the sharing server, the shipped pack and the official client: one mart read back
        from guidewire_pipeline.sharing.server.demo import share_and_read_back

        print("\n" + share_and_read_back(settings))
    print(f"\nOpen the UI on this instance with `make ui`. Job exit code: {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
