"""Executes Databricks-source notebooks outside Databricks, with ``spark`` and a small ``dbutils`` bound.

Used by the local runner (``local_host.py``: every layer of a run in one process, one Sail start) and
by the fake Databricks workspace in the tests (one process per task, as on a cluster).

- The source runs as one module; ``# COMMAND ----------`` and ``# MAGIC`` lines are comments already,
  so cells run in order and magics (``%md``, ``%pip``) are skipped.
- The notebook's folder is importable, as on Databricks (a workspace file beside the notebook).
- ``dbutils.widgets.get(name)``: the task's parameters, or a declared widget's default; an unknown name
  raises ``InputWidgetNotDefined`` as on Databricks.
- ``dbutils.notebook.exit(value)``: ends the notebook successfully with ``value`` as its output.
- ``dbutils.jobs.taskValues``: ``set(key, value)`` for this task, ``get(taskKey, key, default, debugValue)``
  from another task of the same run (``TaskValues``: in memory, or JSON files in a folder).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NOTEBOOK_HEADER = "# Databricks notebook source"


class InputWidgetNotDefined(Exception):  # noqa: N818 - Databricks' name
    """``dbutils.widgets.get`` of a widget that is neither a parameter nor declared."""


class NotebookExit(BaseException):  # noqa: N818 - BaseException: a notebook's `except Exception` cannot swallow it
    def __init__(self, value: str):
        super().__init__(value)
        self.value = value


class Widgets:
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


class TaskValues:
    """Task values of one run: in memory (``folder=None``) or one JSON file per task in ``folder``."""

    def __init__(self, task_key: str, folder: Path | None = None, shared: dict[str, dict[str, Any]] | None = None):
        self.task_key = task_key
        self.folder = folder
        self.shared = shared if shared is not None else {}

    def _values(self, task_key: str) -> dict[str, Any]:
        if self.folder is None:
            return self.shared.setdefault(task_key, {})
        path = self.folder / f"{task_key}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def set(self, key: str, value: Any) -> None:
        values = self._values(self.task_key)
        values[key] = json.loads(json.dumps(value))  # JSON-able, as Databricks requires
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"{self.task_key}.json").write_text(json.dumps(values), encoding="utf-8")

    def get(self, taskKey: str, key: str, default: Any = None, debugValue: Any = None) -> Any:  # noqa: N803
        return self._values(taskKey).get(key, default)


class _Jobs:
    def __init__(self, task_values: TaskValues):
        self.taskValues = task_values  # noqa: N815 - Databricks' name


class _Notebook:
    def exit(self, value: Any) -> None:
        raise NotebookExit(str(value))


class Dbutils:
    """The part of ``dbutils`` the medallion notebooks use."""

    def __init__(self, parameters: dict[str, str], task_values: TaskValues):
        self.widgets = Widgets(parameters)
        self.notebook = _Notebook()
        self.jobs = _Jobs(task_values)


def run_notebook_file(path: Path, source_name: str, globals_: dict[str, Any]) -> str | None:
    """Execute the notebook at ``path`` with ``globals_`` (``spark``, ``dbutils`` ...); return its exit value
    (None when it ended without ``dbutils.notebook.exit``). Anything the notebook raises propagates.
    Raises SyntaxError when the file is not a Databricks-source notebook."""
    source = path.read_text(encoding="utf-8")
    if not source.lstrip().startswith(NOTEBOOK_HEADER):
        raise SyntaxError(f"{source_name} is not a notebook: its source must start with '{NOTEBOOK_HEADER}'")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    namespace = {"__name__": "__main__", "display": print, **globals_}
    try:
        exec(compile(source, source_name, "exec"), namespace)  # noqa: S102 - executing the notebook is the point
    except NotebookExit as done:
        return done.value
    return None
