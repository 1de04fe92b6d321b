"""``make demo``: run the whole pipeline the way CI does, then summarize what landed.

It runs ``guidewire-pipeline sync`` (the whole refresh, ``guidewire_job``, recorded on the instance at
``DAGSTER_HOME`` so ``make ui`` shows the run), streams its progress, and prints rows per layer,
watermarks and the first rows of each gold mart. It exits with the run's exit code.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
from deltalake import DeltaTable

from guidewire_pipeline.cda.manifest import read_manifest
from guidewire_pipeline.cda.raw_table import read_table_state
from guidewire_pipeline.cda.storage import Location
from guidewire_pipeline.medallion.marts import load_marts
from guidewire_pipeline.settings import Settings, load_settings
from guidewire_pipeline.status import format_watermark

LEVELS = (" - INFO - ", " - WARNING - ", " - ERROR - ")


def run_refresh() -> int:
    cli = shutil.which("guidewire-pipeline", path=str(Path(sys.executable).parent)) or "guidewire-pipeline"
    print("$ .venv/bin/guidewire-pipeline sync", flush=True)
    process = subprocess.Popen([cli, "sync"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        parts = line.rstrip().split(" - ")
        if any(level in line for level in LEVELS) and len(parts) > 6:
            # "<date> - dagster - LEVEL - job - run id - step - message": keep step and message.
            print("  " + " - ".join(parts[5:])[:200], flush=True)
        elif line.startswith(("guidewire_job ", "Created DAGSTER_HOME")):  # the run's last line
            print(line.rstrip(), flush=True)
    return process.wait()


def _rows(location: Location) -> int | None:
    """Rows of a medallion table, tombstones of deleted records left out (None: not built)."""
    options = location.delta_storage_options()
    if not DeltaTable.is_deltatable(location.delta_uri, storage_options=options):
        return None
    dataset = DeltaTable(location.delta_uri, storage_options=options).to_pyarrow_dataset()
    live = ~pc.field("gw_deleted") if "gw_deleted" in dataset.schema.names else None
    return dataset.count_rows(filter=live)


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
    code = run_refresh()
    print()
    print(summary(settings))
    if code == 0:  # the sharing server, the shipped pack and the official client: one mart read back
        from guidewire_pipeline.sharing.server.demo import share_and_read_back

        print("\n" + share_and_read_back(settings))
    print(f"\nOpen the UI on this instance with `make ui`. Exit code: {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
