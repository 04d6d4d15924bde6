#!/bin/sh
# One-shot schema migration for the Compose stack (the `migrate` service); run it the same way
# before starting new versions of the services elsewhere.
#   1. make sure Dagster's own database (DAGSTER_PG_DB) exists;
#   2. migrate the application database (DATABASE_URL) with Alembic;
#   3. migrate Dagster's storage schema for the installed Dagster version.
set -eu

python /opt/dagster/app/deploy/docker/ensure_dagster_db.py
dispatch-pipeline db upgrade
dagster instance migrate
echo "migrate: done"
