"""Gold marts: one SQL file per mart in ``guidewire_pipeline/medallion/gold/``; adding a mart is adding a file.

Each file names the silver tables it reads in a comment line near the top::

    -- inputs: cc_claim, cc_exposure, cc_transaction

Those tables become the mart's upstream silver partitions in Dagster and are registered under their own
names (views of silver's current state, tombstones hidden) by the engine; the dialect is Spark SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

GOLD_SQL_DIR = Path(__file__).resolve().parent / "gold"

_INPUTS_LINE = re.compile(r"^\s*--\s*inputs\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_MART_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MartDefinitionError(ValueError):
    """A gold SQL file is malformed. The message names the file and the fix."""


@dataclass(frozen=True)
class Mart:
    name: str
    sql: str
    inputs: tuple[str, ...]
    path: Path

    @property
    def description(self) -> str:
        first = next((line for line in self.sql.splitlines() if line.strip().startswith("--")), "")
        return first.strip().lstrip("-").strip()


def load_mart(path: Path) -> Mart:
    """Read one mart file. Raises ``MartDefinitionError`` for a bad name or a missing ``-- inputs:`` line."""
    name = path.stem
    if not _MART_NAME.match(name):
        raise MartDefinitionError(
            f"Gold mart file {path}: name it in lower_snake_case (it becomes the asset gold/{name})."
        )
    sql = path.read_text(encoding="utf-8")
    found = _INPUTS_LINE.search(sql)
    if not found:
        raise MartDefinitionError(
            f"Gold mart file {path} has no '-- inputs: table_a, table_b' line: list the silver tables it reads."
        )
    inputs = tuple(t.strip() for t in found.group(1).split(",") if t.strip())
    if not inputs:
        raise MartDefinitionError(f"Gold mart file {path}: its '-- inputs:' line lists no table.")
    return Mart(name=name, sql=sql, inputs=inputs, path=path)


def load_marts(directory: Path = GOLD_SQL_DIR) -> dict[str, Mart]:
    """Every ``*.sql`` mart in ``directory``, by name, sorted."""
    return {mart.name: mart for mart in (load_mart(p) for p in sorted(directory.glob("*.sql")))}
