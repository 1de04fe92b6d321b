"""``LocalNotebookRunner``: runs a notebook file as a local Python subprocess through Dagster Pipes.

The notebook's ``pipes.log`` lines and its stdout/stderr stream into the Dagster run while it runs; its
per-table custom messages come back in ``NotebookRun.table_results``. The subprocess inherits this
process's environment (so ``AWS_*`` reach delta-rs without passing secrets as parameters).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError

from guidewire_pipeline.medallion.runners.base import NOTEBOOKS_DIR, NotebookRun, NotebookRunner


class LocalNotebookRunner(NotebookRunner):
    """Run notebooks on this machine, with this virtualenv's Python unless ``python_executable`` is set."""

    python_executable: str | None = None

    def run_notebook(
        self,
        context: dg.OpExecutionContext | dg.AssetExecutionContext,
        notebook: str,
        parameters: Mapping[str, str],
    ) -> NotebookRun:
        """Run ``NOTEBOOKS_DIR/notebook`` with ``parameters`` as Pipes extras.

        Raises ``dagster.Failure`` when the file does not exist or the process exits non-zero (its
        traceback is already in the run's logs, streamed from stderr)."""
        path = NOTEBOOKS_DIR / notebook
        if not path.is_file():
            raise dg.Failure(
                f"Notebook {notebook!r} does not exist in {NOTEBOOKS_DIR}: check the notebook name."
            )
        python = self.python_executable or sys.executable
        try:
            invocation = dg.PipesSubprocessClient().run(
                context=context, command=[python, str(path)], extras=dict(parameters)
            )
        except DagsterPipesExecutionError as error:
            raise dg.Failure(
                description=(
                    f"Notebook {notebook} failed as a local process ({error}). Its traceback is in this run's "
                    "stderr above; fix it and re-run the same partitions (every layer is incremental)."
                ),
                metadata={"notebook": dg.MetadataValue.path(str(path)), "runner": "local"},
            ) from error
        return NotebookRun(
            notebook=notebook,
            table_results=[m for m in invocation.get_custom_messages() if isinstance(m, dict)],
            run_metadata={"runner": "local", "notebook": str(path)},
        )
