#!/usr/bin/env bash
# Validate docker-compose.yml against the documented settings in .env.example, and check that the
# two Dagster instance files agree. Needs docker-compose (v1 or the v2 plugin); no Docker engine.
#
#   bash deploy/check_compose.sh
#
# Exit status 0 when everything is valid.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    echo "check_compose: neither docker-compose nor 'docker compose' is installed" >&2
    exit 1
fi

# Interpolate with .env.example only: never with a developer's .env or the calling environment.
cp "$root/.env.example" "$tmp/.env"
(
    cd "$root"
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
        "${compose[@]}" --project-directory "$root" --env-file "$tmp/.env" \
        -f docker-compose.yml config -q
)
echo "check_compose: docker-compose.yml is valid with .env.example"

# Every variable the compose file interpolates must be documented in .env.example.
missing=0
while IFS= read -r var; do
    if ! grep -qE "^${var}=" "$root/.env.example"; then
        echo "check_compose: ${var} is used in docker-compose.yml but not set in .env.example" >&2
        missing=1
    fi
done < <(grep -oE '\$\{[A-Z_][A-Z0-9_]*' "$root/docker-compose.yml" | cut -c3- | sort -u)
[ "$missing" -eq 0 ] || exit 1
echo "check_compose: every variable of docker-compose.yml is documented in .env.example"

# Needs PyYAML: the project's virtualenv when there is one, else $PYTHON or python3.
if [ -n "${PYTHON:-}" ]; then
    python_bin="$PYTHON"
elif [ -x "$root/.venv/bin/python" ]; then
    python_bin="$root/.venv/bin/python"
else
    python_bin=python3
fi
"$python_bin" "$root/deploy/check_dagster_yaml.py"
