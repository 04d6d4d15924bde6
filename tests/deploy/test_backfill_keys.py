"""deploy/backfill.py's choice of partition keys from the dimensions Dagster's GraphQL reports."""

from __future__ import annotations

import datetime as dt

import pytest

from deploy.backfill import BackfillError, main, resolve_partition_keys

DIMENSIONS = [
    {"name": "date", "type": "TIME_WINDOW", "partitionKeys": ["2024-01-01", "2024-01-02", "2024-01-03"]},
    {"name": "site", "type": "DYNAMIC", "partitionKeys": ["BERLIN_DEPOT", "KL_MALL"]},
]


def test_a_range_and_sites_give_every_date_and_site_pair() -> None:
    keys = resolve_partition_keys(DIMENSIONS, dt.date(2024, 1, 2), dt.date(2024, 1, 3), ["KL_MALL"])
    assert keys == ["2024-01-02|KL_MALL", "2024-01-03|KL_MALL"]


def test_a_range_before_the_first_partition_says_where_the_partitions_start() -> None:
    with pytest.raises(BackfillError, match=(
        r"no date partitions between 2023-03-01 and 2023-03-02: they run from 2024-01-01 "
        r"to 2024-01-03 \(the first is DISPATCH_PARTITIONS_START"
    )):
        resolve_partition_keys(DIMENSIONS, dt.date(2023, 3, 1), dt.date(2023, 3, 2), None)


def test_a_range_reaching_past_the_partitions_says_which_days_are_planned(capsys) -> None:
    keys = resolve_partition_keys(DIMENSIONS, dt.date(2023, 12, 30), dt.date(2024, 1, 2), ["KL_MALL"])
    assert keys == ["2024-01-01|KL_MALL", "2024-01-02|KL_MALL"]
    assert ("warning: planning 2024-01-01 to 2024-01-02 only: the date partitions run from 2024-01-01 "
            "(DISPATCH_PARTITIONS_START) to 2024-01-03") in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--sites", "", "--sites: no site id given (got ''); leave --sites out to backfill every site"),
    ("--sites", " , ", "--sites: no site id given (got ' , ')"),
    ("--assets", "", "--assets: no asset key given (got '')"),
])
def test_an_empty_list_of_sites_or_assets_is_refused_before_the_webserver_is_asked(option, value, says, capsys):
    # Nothing listens there: the refusal must come first.
    argv = ["--from", "2024-01-01", "--to", "2024-01-02", option, value, "--url", "http://127.0.0.1:9/graphql"]
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert says in capsys.readouterr().err


def test_every_asset_named_is_checked_not_only_the_first(monkeypatch, capsys):
    import deploy.backfill as backfill

    def graphql(url, query, variables, timeout):
        [name] = variables["assetKey"]["path"]
        if name == "nope":
            return {"assetNodeOrError": {"__typename": "AssetNotFoundError"}}
        return {"assetNodeOrError": {"__typename": "AssetNode", "partitionKeysByDimension": DIMENSIONS}}

    monkeypatch.setattr(backfill, "_graphql", graphql)
    argv = ["--from", "2024-01-01", "--to", "2024-01-02", "--assets", "dispatch_schedule,nope", "--dry-run"]

    assert main(argv) == 1
    assert "backfill: asset 'nope' not found (AssetNotFoundError)" in capsys.readouterr().err
