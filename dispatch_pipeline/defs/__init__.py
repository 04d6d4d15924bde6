"""Dagster definitions of the dispatch pipeline, grouped by domain.

`ingestion/` reads each site-day's forecast and prices, `dispatch/` plans, checks and explains the
day, `automation/` starts the day-ahead runs, keeps the site partitions in step with the `sites`
table, re-plans days whose inputs changed and plans the complete days of a failed run.
`dispatch_pipeline.definitions.defs` puts them together.
"""
