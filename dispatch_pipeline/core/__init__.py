"""The optimisation core: pure Python, numpy and Pyomo; no Dagster, no SQL.

The pipeline, the API and the CLI all call `solve_dispatch` (or its parts) from here.
"""
