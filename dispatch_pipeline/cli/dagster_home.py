"""Which Dagster instance the demo and the UI share, so that the demo's runs are the UI's.

First, a `./.env` file is applied as `dagster dev` applies it: its values win over the shell's
(and a shell value it replaces is named on stderr). Otherwise the UI would run on the settings of
.env while this module, and the demo, chose by the shell's.

1. `DAGSTER_HOME`, when set: the user's choice; every `env:` variable its dagster.yaml names
   must be set too.
2. `./dagster_home` (PostgreSQL) when every variable its dagster.yaml reads is set
   (`DAGSTER_PG_*`, `DAGSTER_MAX_CONCURRENT_RUNS`: see .env.example).
3. `./dagster_home/embedded` otherwise: SQLite files, nothing to start first.

The chosen directory is exported as DAGSTER_HOME, so Dagster, and the application database's
SQLite default (`DATABASE_URL` unset), use it too; and Dagster's event settings of a deployment
(EVENT_SETTINGS) apply unless the environment sets them otherwise. The data commands (`sites`,
`forecasts`, `prices`, `db`) resolve their database the same way (`application_database_url`),
so that a site registered from the shell is the one the demo and the UI plan.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from dispatch_pipeline.cli import UsageError

PROJECT_HOME = Path("dagster_home")
PROJECT_ENV_FILE = Path(".env")
EMBEDDED_HOME = PROJECT_HOME / "embedded"
# As .env.example, Compose and Helm set it (docs/operations.md, "Dagster's event settings"): a
# step's materialisations are stored in batches, not one statement each.
EVENT_SETTINGS = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}
ENV_REFERENCE = re.compile(r"^\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class DagsterHome:
    path: Path
    storage: str  # how the instance stores runs, for the user to read
    from_env_file: tuple[str, ...] = ()  # the variables ./.env set

    def announce(self) -> None:
        """Name the instance, and the variables ./.env set for it, on stdout."""
        print(f"Dagster instance: {self.path} ({self.storage})")
        if self.from_env_file:
            print(f"Settings from ./.env (over the shell's, as dagster dev applies them): {', '.join(self.from_env_file)}")


def apply_project_env_file() -> tuple[str, ...]:
    """Set the variables of ./.env in this process, over the shell's, as `dagster dev` does.

    A shell value it replaces is named on stderr: an `export` that does nothing would otherwise
    go unnoticed. (Applied again, it replaces nothing and says nothing.)
    """
    if not PROJECT_ENV_FILE.is_file():
        return ()
    from dotenv import dotenv_values

    values = {name: value for name, value in dotenv_values(PROJECT_ENV_FILE).items() if value is not None}
    replaced = sorted(name for name, value in values.items() if os.environ.get(name, value) != value)
    if replaced:
        print(
            f"./.env sets {', '.join(replaced)} over the shell's value (as dagster dev applies it)",
            file=sys.stderr,
        )
    os.environ.update(values)
    return tuple(sorted(values))


def reads_variables(home: Path) -> set[str]:
    """The environment variables `home/dagster.yaml` reads."""
    config = home / "dagster.yaml"
    return set(ENV_REFERENCE.findall(config.read_text(encoding="utf-8"))) if config.exists() else set()


def unset_variables(home: Path) -> list[str]:
    """The environment variables `home/dagster.yaml` reads that are not set."""
    return sorted(name for name in reads_variables(home) if not _is_set(name))


def _is_set(name: str) -> bool:
    # An empty password is a real setting (trust or peer authentication); an empty host is not.
    value = os.environ.get(name)
    return value is not None and (bool(value.strip()) or name.endswith("PASSWORD"))


def choose_dagster_home() -> DagsterHome:
    """The instance directory to use (see the module docstring), exported as DAGSTER_HOME."""
    from_env_file = apply_project_env_file()
    explicit = os.environ.get("DAGSTER_HOME", "").strip()
    if explicit:
        home = Path(explicit).resolve()
        missing = unset_variables(home)
        if missing:
            raise UsageError(
                f"DAGSTER_HOME={home}: its dagster.yaml reads {', '.join(missing)}, which "
                f"{'is' if len(missing) == 1 else 'are'} not set; set {'it' if len(missing) == 1 else 'them'}, "
                "or unset DAGSTER_HOME to use the embedded SQLite instance"
            )
        configured = (home / "dagster.yaml").is_file()
        storage = "as configured in its dagster.yaml" if configured else "no dagster.yaml: Dagster's defaults, SQLite files"
        chosen = DagsterHome(home, storage, from_env_file)
    elif not PROJECT_HOME.is_dir():
        raise UsageError(
            f"no ./{PROJECT_HOME} here: run this from the repository root, or set DAGSTER_HOME"
        )
    elif missing := unset_variables(PROJECT_HOME):
        chosen = DagsterHome(
            EMBEDDED_HOME.resolve(),
            f"SQLite; set {', '.join(missing)} for dagster_home/ on PostgreSQL",
            from_env_file,
        )
    else:
        chosen = DagsterHome(PROJECT_HOME.resolve(), "PostgreSQL, from the DAGSTER_* variables", from_env_file)
    chosen.path.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(chosen.path)
    for name, value in EVENT_SETTINGS.items():
        os.environ.setdefault(name, value)
    return chosen


def application_database_url(explicit: str | None = None) -> str:
    """The application database of a command: `--database-url`, else `DATABASE_URL`, else the
    SQLite file of the instance `choose_dagster_home` picks (the demo's and the UI's)."""
    from dispatch_pipeline.storage import database_url
    from dispatch_pipeline.storage.database import normalize_url

    if explicit:
        return _kept_on_disk(normalize_url(explicit), "--database-url")
    apply_project_env_file()
    if not os.environ.get("DATABASE_URL", "").strip():
        choose_dagster_home()
    return _kept_on_disk(database_url(), "DATABASE_URL")


def _kept_on_disk(url: str, source: str) -> str:
    """`url`, unless it is an SQLite database in memory: what a command stores there is gone
    when it exits, and one that serves or reads it finds nothing."""
    from dispatch_pipeline.storage.database import is_in_memory, printable_url

    try:
        in_memory = is_in_memory(url)
    except Exception:
        return url  # reported where it is opened, as a URL SQLAlchemy cannot use
    if in_memory:
        raise UsageError(
            f"{source} {printable_url(url)!r} is an SQLite database in memory, which keeps nothing "
            "once the command exits: name a file (sqlite:///path/to/dispatch.sqlite) or a server"
        )
    return url
