"""`dispatch-pipeline solve`: JSON on stdout for good input, exit 2 and stderr only for bad."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from dispatch_pipeline.cli import build_parser, main
from tests.conftest import REPO, load_case


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dispatch_pipeline.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_solve_sample_request_prints_result_with_points() -> None:
    done = run_cli("solve", "examples/sample_request.json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["solver"]) == ("ok", "milp")
    assert len(result["points"]) == 96
    assert {"run_id", "objective_value", "kpis", "fallback_used"} <= result.keys()
    assert all(p["reason"] and p["reason_code"] for p in result["points"])
    assert done.stderr == f"dispatch-pipeline solve: run {result['run_id']} not stored (--store stores it)\n"


def test_currency_names_the_unit_of_every_price_in_the_reasons() -> None:
    done = run_cli("solve", "examples/sample_request.json", "--currency", "EUR")
    assert done.returncode == 0, done.stderr
    reasons = [p["reason"] for p in json.loads(done.stdout)["points"]]
    assert any("EUR/kWh" in reason for reason in reasons)
    assert not any("MYR" in reason for reason in reasons)


def test_solve_from_stdin_with_cbc_and_no_milp() -> None:
    request = json.dumps(load_case("hourly")["request"])
    cbc = run_cli("solve", "-", "--solver", "cbc", stdin=request)
    rules = run_cli("solve", "-", "--no-milp", stdin=request)
    assert cbc.returncode == 0 and rules.returncode == 0, cbc.stderr + rules.stderr
    expected = load_case("hourly")["expected"]["objective_value"]
    assert json.loads(cbc.stdout)["objective_value"] == pytest.approx(expected, rel=1e-4)
    assert json.loads(rules.stdout)["solver"] == "rule_based"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("solve", "-"), '{"site_id": "DEMO", "load_kw": [1, "x"]}', "load_kw[1]"),
        (("solve", "-"), "{not json", "not valid JSON"),
        (("solve", "/nonexistent.json"), None, "/nonexistent.json: cannot read (No such file or directory)"),
        (("solve", "-", "--timeout-ms", "50"), json.dumps(load_case("hourly")["request"]), "argument --timeout-ms: must be in 100..600000 (got 50)"),
        # A flag replaces the request's value; it does not excuse a bad one.
        (("solve", "-", "--no-milp", "--timeout-ms", "500"),
         json.dumps({**load_case("hourly")["request"], "use_milp": "banana"}),
         "use_milp: Input should be a valid boolean (got 'banana')"),
        (("solve", "-", "--timeout-ms", "500"), json.dumps({**load_case("hourly")["request"], "timeout_ms": 50}),
         "timeout_ms: Input should be greater than or equal to 100 (got 50)"),
        (("solve", "-"), '{"site_id": "DEMO", "site_id": "OTHER"}', "stdin repeats the key 'site_id'"),
        (("solve", "-"), "[" * 100_000, "nested too deeply"),
        (("solve", "-"), "null", "request: must be a JSON object (got null)"),
        (("solve", "-"), "[1, 2]", "request: must be a JSON object (got an array)"),
        (("solve", "-"), '{"timeout_ms": ' + "9" * 5000 + "}", "timeout_ms: Input should be a valid integer (got an integer of 5000 digits)"),
        (("solve", "-"), json.dumps({**load_case("hourly")["request"], "weights": {"violation": 1.0}}).replace("1.0", "1e-400"),
         "weights.violation: Input should be a valid number (got 1e-400, too close to 0 for a number to hold: write 0)"),
        (("solve", "-", "--currency", "€"), "{}", "--currency: expected three capital letters"),
        (("solve", "-"), json.dumps({k: v for k, v in load_case("hourly")["request"].items() if k != "pv_kw"}),
         "pv_kw: missing; without --store, solve reads no database: send pv_kw, or add --store"),
    ],
)
def test_bad_input_exits_2_with_message_and_no_stdout(args, stdin, message) -> None:
    done = run_cli(*args, stdin=stdin)
    assert done.returncode == 2
    assert done.stdout == ""
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    # `solve ... | head`: the pipe is closed before the result is written.
    done = subprocess.Popen(
        [sys.executable, "-m", "dispatch_pipeline.cli", "solve", "examples/sample_request.json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    done.stdout.close()
    stderr = done.stderr.read().decode()
    assert done.wait(timeout=120) == 141
    assert "Traceback" not in stderr and "Error" not in stderr
    assert stderr.endswith(" not stored (--store stores it)\n"), stderr


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of `parser`, as the words that name it."""
    paths = [path] if path else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += command_paths(sub, (*path, name))
    return paths


@pytest.mark.parametrize("words", command_paths(build_parser()), ids=" ".join)
def test_every_commands_help_says_what_it_does(words, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    # Between the usage and the arguments: a description of one line at least.
    usage, described = out.split("\n\n", 2)[:2]
    assert usage.startswith(f"usage: dispatch-pipeline {' '.join(words)} ")
    assert not described.startswith(("positional arguments:", "options:")), out
