"""Runs one Databricks-source notebook in this process, the way a notebook task would.

Usage (by the fake jobs service, never by hand)::

    python notebook_host.py NOTEBOOK_FILE WORKSPACE_PATH PARAMS_JSON RESULT_JSON

- The notebook source is executed as one Python module; ``# COMMAND ----------`` separators and
  ``# MAGIC`` lines are comments already, so magics (``%pip``, ``%md``) are simply skipped.
- ``dbutils.widgets.get(name)`` returns the task's ``base_parameters[name]``, or the default of a
  widget the notebook declared with ``dbutils.widgets.text(...)``; an unknown name raises
  ``InputWidgetNotDefined`` as on Databricks. ``dbutils.notebook.exit(value)`` ends the notebook
  successfully with ``value`` as its output.
- RESULT_JSON receives ``{"notebook_output": {...}}`` or ``{"error": ..., "error_trace": ...}``;
  the exit status is 0 on success and 1 when the notebook raised.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

NOTEBOOK_HEADER = "# Databricks notebook source"


class InputWidgetNotDefined(Exception):
    """Raised by ``dbutils.widgets.get`` for a widget that is neither a parameter nor declared."""


class _NotebookExit(BaseException):  # noqa: N818 - BaseException so a notebook's `except Exception` cannot swallow it
    def __init__(self, value: str):
        super().__init__(value)
        self.value = value


class _Widgets:
    def __init__(self, parameters: dict[str, str]):
        self._parameters = dict(parameters)
        self._defaults: dict[str, str] = {}

    def get(self, name: str) -> str:
        if name in self._parameters:
            return self._parameters[name]
        if name in self._defaults:
            return self._defaults[name]
        raise InputWidgetNotDefined(f"No input widget named {name} is defined")

    def getAll(self) -> dict[str, str]:  # noqa: N802 - Databricks' name
        return {**self._defaults, **self._parameters}

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:  # noqa: N803
        self._defaults[name] = defaultValue

    def dropdown(self, name: str, defaultValue: str, choices: list[str], label: str | None = None) -> None:  # noqa: N803
        self._defaults[name] = defaultValue

    def removeAll(self) -> None:  # noqa: N802
        self._defaults.clear()


class _NotebookUtils:
    def exit(self, value: Any) -> None:
        raise _NotebookExit(str(value))


class FakeDbutils:
    """The small part of ``dbutils`` our notebooks use: ``widgets`` and ``notebook.exit``."""

    def __init__(self, parameters: dict[str, str]):
        self.widgets = _Widgets(parameters)
        self.notebook = _NotebookUtils()


def main(argv: list[str]) -> int:
    notebook_file, workspace_path, params_json, result_json = argv
    source = Path(notebook_file).read_text(encoding="utf-8")
    parameters = json.loads(Path(params_json).read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "dbutils": FakeDbutils(parameters),
        "display": print,
    }
    # As on Databricks, the notebook's folder is importable (workspace files next to the notebook).
    sys.path.insert(0, str(Path(notebook_file).resolve().parent))
    result: dict[str, Any]
    try:
        if not source.lstrip().startswith(NOTEBOOK_HEADER):
            raise SyntaxError(
                f"{workspace_path} is not a notebook: its source must start with '{NOTEBOOK_HEADER}'"
            )
        exec(compile(source, workspace_path, "exec"), namespace)  # noqa: S102 - executing the notebook is the point
        result, status = {"notebook_output": {}}, 0
    except _NotebookExit as done:
        result, status = {"notebook_output": {"result": done.value, "truncated": False}}, 0
    except BaseException as e:  # noqa: BLE001 - everything a notebook raises is its error, as on Databricks
        trace = traceback.format_exc()
        result, status = {"error": f"{type(e).__name__}: {e}", "error_trace": trace}, 1
        sys.stderr.write(trace)
    Path(result_json).write_text(json.dumps(result), encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
