"""Write the Excel twin of a YAML share pack (openpyxl), in the layout ``load_excel`` reads.

Regenerate the shipped sample after editing its YAML::

    .venv/bin/python -m guidewire_pipeline.sharing.excel_twin guidewire_pipeline/sharing/sharepacks/gold_marts.yaml

It writes ``gold_marts.xlsx`` next to the YAML (or to the path given as the second argument). The pack
is validated first, so an invalid YAML produces no workbook. A test checks that the shipped twin
plans exactly like its YAML.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from guidewire_pipeline.sharing.sharepack import SharePack, load_sharepack

_FIXED_TIME = datetime(2026, 1, 1)  # stable document properties, so regenerating changes nothing visible


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return value


def _rows_sheet(workbook: Any, title: str, records: list[dict[str, Any]], first: list[str]) -> None:
    columns = list(first)
    for record in records:
        columns += [k for k, v in record.items() if k not in columns and v not in (None, [], "")]
    sheet = workbook.create_sheet(title)
    sheet.append(columns)
    for record in records:
        sheet.append([_cell(record.get(c)) for c in columns])


def write_excel(pack: SharePack, path: Path) -> Path:
    """Write ``pack`` as an .xlsx with sheets metadata, options, recipient, share, data_objects."""
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    workbook.properties.created = workbook.properties.modified = _FIXED_TIME
    for title, section in (("metadata", pack.metadata), ("options", pack.options)):
        sheet = workbook.create_sheet(title)
        sheet.append(["key", "value"])
        for key, value in section.model_dump(exclude_none=True).items():
            sheet.append([key, value])
    _rows_sheet(
        workbook, "recipient", [r.model_dump(exclude_none=True) for r in pack.recipient], ["name", "type"]
    )
    _rows_sheet(
        workbook,
        "share",
        [s.model_dump(exclude_none=True, exclude={"data_objects"}) for s in pack.share],
        ["name", "comment", "recipients"],
    )
    _rows_sheet(
        workbook,
        "data_objects",
        [{"share": s.name, **o.model_dump(exclude_none=True)} for s in pack.share for o in s.data_objects],
        ["share", "name"],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print("usage: python -m guidewire_pipeline.sharing.excel_twin PACK.yaml [OUT.xlsx]", file=sys.stderr)
        return 2
    source = Path(args[0])
    target = Path(args[1]) if len(args) > 1 else source.with_suffix(".xlsx")
    written = write_excel(load_sharepack(source).pack, target)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
