# Databricks notebook source
# MAGIC %md
# MAGIC # 02 Silver: current state per record (Guidewire MERGED)
# MAGIC Runs the **silver** layer of the medallion engine (`gw_medallion_engine.py`, uploaded beside this
# MAGIC notebook) on this notebook's Spark session. Parameter: widget `request` (JSON: `catalog`,
# MAGIC `delta_root`, `tables`, `marts`, optional `chunk_rows`; `"*"` means every raw table / mart).
# MAGIC Tables that failed upstream come from the previous task's task value `failed`.
# MAGIC The notebook exits with one JSON result per table (`dbutils.notebook.exit`); one table's problem is
# MAGIC that table's result, never the task's failure.

# COMMAND ----------

import gw_medallion_engine as engine

# COMMAND ----------

dbutils.notebook.exit(engine.run_notebook(spark, dbutils, "silver"))
