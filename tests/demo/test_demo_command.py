"""`dispatch-pipeline demo` and `ui`: on a machine with nothing set, both use one embedded instance."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from dispatch_pipeline.cli import UsageError, dagster_home, main
from dispatch_pipeline.cli.dagster_home import (
    EVENT_SETTINGS,
    application_database_url,
    choose_dagster_home,
    unset_variables,
)
from dispatch_pipeline.cli.demo import (
    demo_runs,
    local_today,
    refuse_to_replace_other_sites,
    ui_hint,
)
from dispatch_pipeline.demo import demo_site, demo_sites
from dispatch_pipeline.storage import get_site, open_database, upsert_site, upsert_sites
from dispatch_pipeline.storage.tables import dispatch_runs, sites
from tests.conftest import REPO

INSTANCE_VARIABLES = [
    "DAGSTER_MAX_CONCURRENT_RUNS",
    "DAGSTER_PG_DB",
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
]


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A directory laid out like the repository root, as the working directory, nothing set."""
    for name in ("dagster.yaml", "embedded/dagster.yaml"):
        (tmp_path / "dagster_home" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster_home" / name, tmp_path / "dagster_home" / name)
    shutil.copy(REPO / "workspace.yaml", tmp_path / "workspace.yaml")
    for name in ("DAGSTER_HOME", "DATABASE_URL", "DISPATCH_API_TOKENS", *INSTANCE_VARIABLES, *EVENT_SETTINGS):
        # Set first, so that monkeypatch records the variable and removes what a test sets.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    # Its own ./.env, if a test writes one (the suite ignores the repository's: tests/conftest.py).
    monkeypatch.setattr(dagster_home, "PROJECT_ENV_FILE", Path(".env"))
    return tmp_path


def test_the_project_instance_reads_its_settings_from_the_environment(checkout):
    assert unset_variables(checkout / "dagster_home") == INSTANCE_VARIABLES
    assert unset_variables(checkout / "dagster_home" / "embedded") == []


def test_without_instance_settings_the_embedded_instance_is_chosen_and_exported(checkout):
    home = choose_dagster_home()
    assert home.path == checkout / "dagster_home" / "embedded"
    assert "SQLite" in home.storage
    assert os.environ["DAGSTER_HOME"] == str(home.path)


def test_with_instance_settings_the_project_instance_is_chosen(checkout, monkeypatch):
    for name in INSTANCE_VARIABLES:
        monkeypatch.setenv(name, "x")
    assert choose_dagster_home().path == checkout / "dagster_home"


def test_dagsters_event_settings_are_a_deployments_unless_set(checkout, monkeypatch):
    choose_dagster_home()
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "50")
    choose_dagster_home()
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "50"
    # The same values as the deployment files give them.
    deployed = dict(
        line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines() if line.startswith("DAGSTER_")
    )
    assert {name: deployed[name] for name in EVENT_SETTINGS} == EVENT_SETTINGS


def test_an_empty_password_is_a_setting_an_empty_host_is_not(checkout, monkeypatch):
    for name in INSTANCE_VARIABLES:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    assert unset_variables(checkout / "dagster_home") == []
    monkeypatch.setenv("DAGSTER_PG_HOST", " ")
    assert unset_variables(checkout / "dagster_home") == ["DAGSTER_PG_HOST"]


def test_an_explicit_home_missing_its_variables_is_refused_by_name(checkout, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(checkout / "dagster_home"))
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    with pytest.raises(UsageError, match="DAGSTER_MAX_CONCURRENT_RUNS, DAGSTER_PG_DB, DAGSTER_PG_PASSWORD, DAGSTER_PG_PORT, DAGSTER_PG_USERNAME"):
        choose_dagster_home()


def test_a_dot_env_file_wins_over_the_shell_as_in_dagster_dev(checkout, monkeypatch, capsys):
    # `dagster dev` applies ./.env over the shell: the choice made here must be the one it makes.
    from_file = f"sqlite:///{checkout / 'from-env-file.sqlite'}"
    (checkout / ".env").write_text("".join(f"{name}=x\n" for name in INSTANCE_VARIABLES) + f"DATABASE_URL={from_file}\n")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{checkout / 'from-shell.sqlite'}")

    home = choose_dagster_home()

    assert home.path == checkout / "dagster_home"
    assert home.from_env_file == tuple(sorted([*INSTANCE_VARIABLES, "DATABASE_URL"]))
    assert application_database_url() == from_file
    # The shell's value it replaced is named, once.
    assert capsys.readouterr().err.count("./.env sets DATABASE_URL over the shell's value") == 1


def test_a_site_registered_from_the_shell_is_in_the_database_the_demo_and_ui_use(checkout, capsys):
    sites_file = checkout / "sites.yaml"
    shutil.copy(REPO / "examples" / "sites.yaml", sites_file)
    assert main(["sites", "import", str(sites_file)]) == 0
    assert main(["db", "current"]) == 0
    assert not (checkout / "dagster_home" / "dispatch.sqlite").exists()
    engine = open_database(f"sqlite:///{checkout / 'dagster_home' / 'embedded' / 'dispatch.sqlite'}")
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(sites)).scalar_one() > 0


def test_the_api_serves_the_database_the_demo_and_ui_use(checkout, monkeypatch, capsys):
    served = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: served.append(os.environ["DATABASE_URL"]))
    (checkout / ".env").write_text("DISPATCH_API_TOKENS=from-env-file\n")

    assert main(["serve"]) == 0

    assert served == [f"sqlite:///{checkout / 'dagster_home' / 'embedded' / 'dispatch.sqlite'}"]
    assert os.environ["DISPATCH_API_TOKENS"] == "from-env-file"
    assert "database sqlite:///" in capsys.readouterr().err


def test_a_served_database_url_is_printed_without_its_password(checkout, monkeypatch, capsys):
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: None)
    assert main(["serve", "--database-url", "postgresql://ops:s3cret@db.example:5432/dispatch"]) == 0
    assert os.environ["DATABASE_URL"] == "postgresql+psycopg://ops:s3cret@db.example:5432/dispatch"
    printed = capsys.readouterr().err
    assert "postgresql+psycopg://ops:***@db.example:5432/dispatch" in printed
    assert "s3cret" not in printed


def test_the_demo_plans_each_sites_own_tomorrow():
    # 17:00 UTC: already the next day in Kuala Lumpur (UTC+8), still the same day in Phoenix (UTC-7).
    now = dt.datetime(2026, 12, 2, 17, 0, tzinfo=dt.UTC)
    todays = [(zone, local_today(zone, now)) for zone in ("Asia/Kuala_Lumpur", "America/Phoenix")]
    assert todays == [("Asia/Kuala_Lumpur", dt.date(2026, 12, 3)), ("America/Phoenix", dt.date(2026, 12, 2))]
    history_kl, history_phx, tomorrow_kl, tomorrow_phx = demo_runs(todays, 2)
    assert [day.date for day in history_kl] == [dt.date(2026, 12, 1), dt.date(2026, 12, 2)]
    assert [day.date for day in history_phx] == [dt.date(2026, 11, 30), dt.date(2026, 12, 1)]
    assert [day.date for day in tomorrow_kl + tomorrow_phx] == [dt.date(2026, 12, 4), dt.date(2026, 12, 3)]


def test_outside_the_repository_the_ui_says_where_to_run_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["ui"]) == 2
    assert "workspace.yaml" in capsys.readouterr().err


def test_the_ui_on_a_port_taken_is_refused_before_dagster_starts(checkout, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use): choose another --port" in err


@pytest.mark.parametrize(
    ("database_url", "shown"),
    [
        (None, "sqlite:///{checkout}/dagster_home/embedded/dispatch.sqlite"),
        ("postgresql://fleet:secret@db.example/plans", "postgresql+psycopg://fleet:***@db.example/plans"),
    ],
)
def test_the_ui_names_the_application_database_its_runs_use(checkout, monkeypatch, capsys, database_url, shown):
    if database_url is not None:
        monkeypatch.setenv("DATABASE_URL", database_url)
    started = []
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(argv))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert main(["ui", "--port", str(port)]) == 0

    assert started and started[0][4:7] == ["dagster", "dev", "-w"]
    out = capsys.readouterr().out
    assert f"Application data (sites, forecasts, plans): {shown.format(checkout=checkout)}\n" in out


def test_the_ui_hint_names_a_database_the_ui_would_not_find_by_itself(checkout, monkeypatch):
    home = choose_dagster_home()
    # The database the UI finds by itself (the embedded instance's file): DAGSTER_HOME is enough.
    hint = ui_hint(home, application_database_url())
    assert f"with DAGSTER_HOME={home.path})" in hint and "DATABASE_URL" not in hint
    # `demo --database-url`: the UI, its sensors and its runs must be told, or they plan elsewhere.
    other = "postgresql://demo:secret@127.0.0.1:5432/demo"
    hint = ui_hint(home, other)
    # `make ui` too, the first command named, not only those after it.
    assert "  DATABASE_URL=postgresql+psycopg://demo:***@127.0.0.1:5432/demo make ui\n" in hint
    assert "(or, with that DATABASE_URL: .venv/bin/dispatch-pipeline ui;" in hint
    assert f"with DAGSTER_HOME={home.path})" in hint
    monkeypatch.setenv("DATABASE_URL", other)
    assert "DATABASE_URL" not in ui_hint(home, other)


@pytest.mark.slow
def test_demo_plans_every_site_day_into_the_instance_the_ui_reads(checkout):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_SOLVER")}
    finished = subprocess.run(
        [sys.executable, "-m", "dispatch_pipeline.cli", "demo", "--days", "2"],
        cwd=checkout, env=environment, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    # Three sites x (2 past days + tomorrow), in a history run and a day-ahead run per site.
    assert "Materialised 9 of 9 site-days in 6 runs" in finished.stdout
    assert "STEP_SUCCESS" not in finished.stdout + finished.stderr  # the terminal is not a log dump
    assert finished.stdout.count(" ok       milp ") == 9

    home = checkout / "dagster_home" / "embedded"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert len(runs) == 6 and {run.status for run in runs} == {dg.DagsterRunStatus.SUCCESS}
        for asset in ("site_forecast", "site_tariff", "dispatch_schedule", "dispatch_explanations", "dispatch_kpis"):
            assert len(instance.get_materialized_partitions(dg.AssetKey(asset))) == 9, asset
    engine = open_database(f"sqlite:///{home / 'dispatch.sqlite'}")
    with engine.connect() as connection:
        stored = connection.execute(
            select(dispatch_runs.c.source, func.count()).group_by(dispatch_runs.c.source)
        ).all()
    assert stored == [("dagster", 9)]


@pytest.mark.slow
def test_the_ui_started_as_a_background_job_stops_on_sigterm(checkout):
    # A background job of a non-interactive shell (`make ui &` in a script) starts with SIGINT
    # ignored; dagster dev hands SIGTERM SIGINT's handler, which left it unstoppable but by SIGKILL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = checkout / "ui.log"
    with log.open("w") as output:
        ui = subprocess.Popen(
            [sys.executable, "-m", "dispatch_pipeline.cli", "ui", "--port", str(port)],
            cwd=checkout, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        wait_for(lambda: _answers(port) or ui.poll() is not None, timeout_s=120)
        assert ui.poll() is None and _answers(port), log.read_text()
        os.killpg(ui.pid, signal.SIGTERM)
        # poll() first: it reaps the command itself, which would otherwise linger as a zombie.
        stopped = wait_for(lambda: ui.poll() is not None and not _group_alive(ui.pid), timeout_s=60)
        assert stopped, "processes left after SIGTERM"
        assert "superseded" not in log.read_text()
    finally:
        if _group_alive(ui.pid):
            os.killpg(ui.pid, signal.SIGKILL)
        ui.wait()


def wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_registered_id_clashing_with_a_demo_sites_in_case_is_named_without_a_traceback(checkout, capsys):
    engine = open_database(f"sqlite:///{checkout / 'dagster_home' / 'embedded' / 'dispatch.sqlite'}")
    upsert_site(engine, demo_site("KL_MALL").model_copy(update={"site_id": "kl_mall"}))
    assert main(["demo", "--days", "1"]) == 2
    err = capsys.readouterr().err
    assert "differs only in case from the registered site 'kl_mall'" in err and "Traceback" not in err
    with engine.connect() as connection:
        assert connection.scalars(select(sites.c.site_id)).all() == ["kl_mall"]  # no demo site either


@pytest.mark.parametrize(
    ("days", "forecasts"),
    [("0", "for tomorrow"), ("1", "for the last day and tomorrow"), ("2", "for the last 2 days and tomorrow")],
)
def test_the_demo_counts_its_past_days_in_words_that_fit(checkout, capsys, monkeypatch, days, forecasts):
    def stop(*_: object) -> None:
        raise KeyboardInterrupt  # once the sites are registered: the runs are another test's

    monkeypatch.setattr("dispatch_pipeline.defs.local_runs.build_local_job", stop)
    assert main(["demo", "--days", days]) == 130
    assert f"Registered 3 demo sites with forecasts {forecasts}, each in its own timezone: " in capsys.readouterr().out


def test_the_demo_refuses_to_replace_a_site_registered_under_a_demo_id_with_another_definition(checkout, capsys):
    engine = open_database(f"sqlite:///{checkout / 'dagster_home' / 'embedded' / 'dispatch.sqlite'}")
    own = demo_site("KL_MALL")
    own = own.model_copy(update={"bess": own.bess.model_copy(update={"capacity_kwh": 123.0})})
    upsert_site(engine, own)

    assert main(["demo", "--days", "1"]) == 2

    err = capsys.readouterr().err
    assert "KL_MALL: registered in sqlite:///" in err and "with a definition other than the demo's" in err
    assert "dispatch-pipeline sites remove KL_MALL" in err
    assert get_site(engine, "KL_MALL") == own
    with engine.connect() as connection:
        assert connection.scalars(select(sites.c.site_id)).all() == ["KL_MALL"]


def test_the_demo_sites_as_the_demo_registered_them_may_be_registered_again(tmp_path):
    engine = open_database(f"sqlite:///{tmp_path / 'dispatch.sqlite'}")
    upsert_sites(engine, demo_sites())

    refuse_to_replace_other_sites(engine, demo_sites(), "here")  # no UsageError


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_sqlite_database_in_memory_is_refused_naming_where_it_came_from(checkout, monkeypatch, capsys, url):
    assert main(["sites", "list", "--database-url", url]) == 2
    assert f"--database-url '{url}' is an SQLite database in memory" in capsys.readouterr().err
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(["demo", "--days", "1"]) == 2
    assert f"DATABASE_URL '{url}' is an SQLite database in memory" in capsys.readouterr().err


def test_days_before_the_first_date_partition_are_refused_before_anything_is_written(checkout, capsys):
    assert main(["demo", "--days", "100000"]) == 2
    err = capsys.readouterr().err
    assert "--days: at most" in err and "(got 100000)" in err and "DISPATCH_PARTITIONS_START" in err
    # Refused before the instance or the database was opened: neither was created.
    assert not (checkout / "dagster_home" / "embedded" / "dispatch.sqlite").exists()
    assert not (checkout / "dagster_home" / "embedded" / "storage").exists()


def _demo_in_a_new_process(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`dispatch-pipeline demo` in a process of its own: the pipeline's modules read their settings
    when first imported, which this test process has long done."""
    return subprocess.run(
        [sys.executable, "-m", "dispatch_pipeline.cli", "demo", *args], cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=120,
    )


def test_the_first_date_partition_of_a_dot_env_bounds_the_demos_days(checkout):
    # As `dagster dev` and the UI's code location read it: days before it are no partitions there.
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    (checkout / ".env").write_text(f"DISPATCH_PARTITIONS_START={first.isoformat()}\n")

    done = _demo_in_a_new_process(checkout, "--days", "7")

    assert done.returncode == 2, done.stdout + done.stderr
    assert "(got 7): the date partitions start on " + first.isoformat() in done.stderr
    assert not (checkout / "dagster_home" / "embedded" / "dispatch.sqlite").exists()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DISPATCH_PARTITIONS_START", "01/01/2024", "expected a date YYYY-MM-DD such as 2024-01-01, got '01/01/2024'"),
        ("DISPATCH_BACKFILL_CHUNK", "0", "expected a whole number of at least 1, got '0'"),
        ("DISPATCH_PLANNING_TIME", "14:10", "must be on a quarter-hour"),
        ("DISPATCH_RETRY_STRATEGY", "NEVER", "expected FROM_FAILURE or ALL_STEPS, got 'NEVER'"),
    ],
)
def test_a_bad_pipeline_setting_is_refused_naming_it_without_a_traceback(checkout, name, value, says):
    done = _demo_in_a_new_process(checkout, "--days", "1", **{name: value})

    assert done.returncode == 2, done.stdout + done.stderr
    assert f"dispatch-pipeline demo: {name}: {says}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (checkout / "dagster_home" / "embedded" / "dispatch.sqlite").exists()


def test_a_first_date_partition_after_tomorrow_is_named_not_blamed_on_days(monkeypatch):
    from dispatch_pipeline.cli.demo import _check_first_date
    from dispatch_pipeline.defs import partitions

    today = dt.date(2026, 12, 6)
    monkeypatch.setattr(partitions, "START_DATE", "2026-12-07")
    _check_first_date(today, 0)  # tomorrow alone: a partition
    with pytest.raises(UsageError, match=r"^--days: at most 0 \(got 1\)"):
        _check_first_date(today, 1)
    monkeypatch.setattr(partitions, "START_DATE", "2099-01-01")
    with pytest.raises(UsageError) as refused:
        _check_first_date(today, 0)
    assert str(refused.value) == (
        "DISPATCH_PARTITIONS_START: the date partitions start on 2099-01-01, after the demo's tomorrow "
        "(2026-12-07): set it to a date no later than 2026-12-06"
    )


def test_a_dot_env_naming_the_compose_database_host_is_refused_at_once_naming_it(checkout, capsys):
    # .env.example's values, copied as they are and run outside Compose: the host `db` exists
    # only on the stack's network.
    settings = {
        "DAGSTER_PG_USERNAME": "dispatch", "DAGSTER_PG_PASSWORD": "change-me", "DAGSTER_PG_HOST": "db.invalid",
        "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster", "DAGSTER_MAX_CONCURRENT_RUNS": "8",
    }
    (checkout / ".env").write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    assert main(["demo", "--days", "1"]) == 2
    err = capsys.readouterr().err
    assert "is unusable: DAGSTER_PG_HOST=db.invalid is no host this machine knows" in err
    assert "./.env sets DAGSTER_PG_DB=dagster, DAGSTER_PG_HOST=db.invalid, DAGSTER_PG_PORT=5432" in err
    assert "Retrying" not in err and "Traceback" not in err
