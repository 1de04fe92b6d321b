"""``jsonPredicateHints``: skip data files that cannot hold a matching row (no Dagster, no HTTP here).

The protocol's JSON predicate tree (``and``/``or``/``not``, ``equal``, ``lessThan`` ... over a
``column`` and a ``literal``, ``isNull``) is evaluated per file: exactly on partition values, and on
the file's min/max/null statistics for other columns. Filtering is best effort, as the protocol
says: a file is dropped only when it provably holds no matching row, and a predicate this module
cannot evaluate (unknown op or type, malformed tree) raises ``PredicateError`` so that the caller
returns every file.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from guidewire_pipeline.sharing.server.tables import DataFile

COMPARISONS = {"equal", "lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual"}
_FLIPPED = {"equal": "equal", "lessThan": "greaterThan", "lessThanOrEqual": "greaterThanOrEqual",
            "greaterThan": "lessThan", "greaterThanOrEqual": "lessThanOrEqual"}
_EXACT: dict[str, Callable[[Any, Any], bool]] = {
    "equal": lambda a, b: a == b, "lessThan": lambda a, b: a < b, "lessThanOrEqual": lambda a, b: a <= b,
    "greaterThan": lambda a, b: a > b, "greaterThanOrEqual": lambda a, b: a >= b,
}


class PredicateError(ValueError):
    """The predicate cannot be evaluated; the caller skips filtering."""


def parse_predicate(text: str) -> dict[str, Any]:
    try:
        tree = json.loads(text)
    except ValueError as exc:
        raise PredicateError(f"jsonPredicateHints is not JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise PredicateError("jsonPredicateHints must be a JSON object")
    return tree


def _cast(value: Any, value_type: str) -> Any:
    if value is None:
        return None
    try:
        if value_type == "bool":
            return value if isinstance(value, bool) else str(value).lower() == "true"
        if value_type in ("int", "long"):
            return int(value)
        if value_type in ("float", "double"):
            return float(value)
        if value_type == "string":
            return str(value)
        if value_type == "date":
            return dt.date.fromisoformat(str(value)[:10])
        if value_type == "timestamp":
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" ", "T"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        raise PredicateError(f"{value!r} is not a {value_type}") from None
    raise PredicateError(f"unknown valueType {value_type!r}")


def file_may_match(tree: dict[str, Any], file: DataFile, partition_columns: list[str]) -> bool:
    """False only when ``file`` provably has no row satisfying ``tree``."""
    stats = json.loads(file.stats) if file.stats else {}
    return _may_match(tree, file, set(partition_columns), stats)


def _only_partitions(node: dict[str, Any], partitions: set[str]) -> bool:
    if node.get("op") == "column":
        return node.get("name") in partitions
    return all(_only_partitions(c, partitions) for c in node.get("children") or [] if isinstance(c, dict))


def _exact(node: dict[str, Any], file: DataFile) -> bool:
    """Exact value of a predicate over partition columns only."""
    op, children = node.get("op"), node.get("children") or []
    if op == "and":
        return all(_exact(c, file) for c in children)
    if op == "or":
        return any(_exact(c, file) for c in children)
    if op == "not":
        return not _exact(_single(children), file)
    if op == "isNull":
        column = _single(children)
        return file.partition_values.get(column.get("name")) in (None, "")
    column, literal, op = _operands(node)
    value = _cast(_partition_value(file, column["name"]), column.get("valueType", "string"))
    if value is None:
        return False
    return _EXACT[op](value, _cast(literal.get("value"), literal.get("valueType", "string")))


def _may_match(node: dict[str, Any], file: DataFile, partitions: set[str], stats: dict[str, Any]) -> bool:
    op, children = node.get("op"), node.get("children") or []
    if op not in {"and", "or", "not", "isNull", *COMPARISONS}:
        raise PredicateError(f"unsupported op {op!r}")
    if _only_partitions(node, partitions):
        return _exact(node, file)
    if op == "and":
        return all(_may_match(c, file, partitions, stats) for c in children)
    if op == "or":
        return any(_may_match(c, file, partitions, stats) for c in children)
    if op == "not":
        _single(children)
        return True  # a negation over statistics proves nothing about single rows
    if op == "isNull":
        name = _single(children).get("name")
        nulls = (stats.get("nullCount") or {}).get(name)
        return nulls is None or nulls > 0
    column, literal, op = _operands(node)
    value_type = column.get("valueType", "string")
    low = _cast((stats.get("minValues") or {}).get(column["name"]), value_type)
    high = _cast((stats.get("maxValues") or {}).get(column["name"]), value_type)
    if low is None or high is None:
        return True
    if value_type == "timestamp":  # statistics are truncated to milliseconds
        high += dt.timedelta(milliseconds=1)
    target = _cast(literal.get("value"), literal.get("valueType", value_type))
    if op == "equal":
        return low <= target <= high
    if op == "lessThan":
        return low < target
    if op == "lessThanOrEqual":
        return low <= target
    if op == "greaterThan":
        return high > target
    return high >= target


def _single(children: list[Any]) -> dict[str, Any]:
    if len(children) != 1 or not isinstance(children[0], dict):
        raise PredicateError("a unary op needs exactly one child")
    return children[0]


def _operands(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(column, literal, op) with the column first, flipping the comparison when it came second."""
    children = node.get("children") or []
    if len(children) != 2 or not all(isinstance(c, dict) for c in children):
        raise PredicateError(f"{node.get('op')} needs two children")
    first, second = children
    op = str(node["op"])
    if first.get("op") == "column" and second.get("op") == "literal":
        return first, second, op
    if first.get("op") == "literal" and second.get("op") == "column":
        return second, first, _FLIPPED[op]
    raise PredicateError(f"{op} compares a column with a literal only")


def _partition_value(file: DataFile, name: str) -> str | None:
    value = file.partition_values.get(name)
    return None if value == "" else value
