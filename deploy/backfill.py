"""Launch an asset backfill of the site x date assets over a date range, from the command line.

Does what the UI's Materialize -> partition selection does: one asset backfill, executed by the
daemon through the run queue (per-site and backfill limits, run retries) and honouring the assets'
backfill policies. Talks to the Dagster webserver's GraphQL endpoint; needs only the standard
library, so it runs anywhere that reaches the webserver (e.g. through an SSH tunnel).

    python deploy/backfill.py --from 2025-03-01 --to 2025-03-31                  # every site
    python deploy/backfill.py --from 2025-03-01 --to 2025-03-07 --sites SITE_A,SITE_B
    python deploy/backfill.py --from 2025-03-01 --to 2025-03-07 \\
        --assets dispatch_schedule,dispatch_explanations,dispatch_kpis --dry-run

Dates are the local days of the sites (the `date` partitions), both ends included. Without
--sites, every site currently in the `sites` partitions is taken. Exit status 0 when the backfill
was launched (or, with --dry-run, when the partitions were resolved), 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:3000/graphql"
DEFAULT_ASSETS = (
    "site_forecast",
    "site_tariff",
    "dispatch_schedule",
    "dispatch_explanations",
    "dispatch_kpis",
)

PARTITIONS_QUERY = """
query Partitions($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      partitionKeysByDimension { name type partitionKeys }
    }
  }
}
"""

LAUNCH_MUTATION = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""


class BackfillError(Exception):
    pass


def _graphql(url: str, query: str, variables: dict, timeout: float) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode())
    except (urllib.error.URLError, TimeoutError) as exc:
        raise BackfillError(f"cannot reach the Dagster webserver at {url}: {exc}") from exc
    if payload.get("errors"):
        messages = "; ".join(e.get("message", str(e)) for e in payload["errors"])
        raise BackfillError(f"GraphQL error: {messages}")
    return payload["data"]


def _asset_key(name: str) -> dict:
    return {"path": [part for part in name.split("/") if part]}


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from exc


def resolve_partition_keys(
    dimensions: list[dict], start: dt.date, end: dt.date, sites: list[str] | None
) -> list[str]:
    """Multi-partition keys (`DATE|SITE`, dimensions in name order) for the range and sites."""
    if len(dimensions) != 2:
        raise BackfillError(
            f"expected a site x date partitioned asset, found dimensions "
            f"{[d['name'] for d in dimensions]}"
        )
    time_dims = [d for d in dimensions if d["type"] == "TIME_WINDOW"]
    if len(time_dims) != 1:
        raise BackfillError("expected exactly one time (date) dimension")
    time_dim = time_dims[0]
    site_dim = next(d for d in dimensions if d is not time_dim)

    dates = [
        key for key in time_dim["partitionKeys"] if start <= dt.date.fromisoformat(key[:10]) <= end
    ]
    if not dates:
        keys = time_dim["partitionKeys"]
        held = f"they run from {keys[0]} to {keys[-1]}" if keys else "the code location has none"
        raise BackfillError(
            f"no {time_dim['name']} partitions between {start} and {end}: {held} "
            "(the first is DISPATCH_PARTITIONS_START of the code location)"
        )

    first, last = dates[0][:10], dates[-1][:10]
    if (first, last) != (start.isoformat(), end.isoformat()):
        # Said, not silently dropped: the days asked for that have no partition are not planned.
        print(
            f"warning: planning {first} to {last} only: the {time_dim['name']} partitions run from "
            f"{time_dim['partitionKeys'][0][:10]} (DISPATCH_PARTITIONS_START) to "
            f"{time_dim['partitionKeys'][-1][:10]}",
            file=sys.stderr,
        )

    known_sites = site_dim["partitionKeys"]
    if sites is None:
        chosen_sites = list(known_sites)
    else:
        unknown = sorted(set(sites) - set(known_sites))
        if unknown:
            raise BackfillError(
                f"unknown {site_dim['name']} partitions: {', '.join(unknown)} "
                "(add the site first; the partitions sensor picks it up)"
            )
        chosen_sites = sites
    if not chosen_sites:
        raise BackfillError(f"no {site_dim['name']} partitions to backfill")

    order = sorted([time_dim["name"], site_dim["name"]])
    keys = []
    for site in chosen_sites:
        for date in dates:
            by_name = {time_dim["name"]: date, site_dim["name"]: site}
            keys.append("|".join(by_name[name] for name in order))
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="start", type=_date, required=True, help="first date")
    parser.add_argument("--to", dest="end", type=_date, required=True, help="last date (included)")
    parser.add_argument("--sites", help="comma-separated site ids (default: every site)")
    parser.add_argument(
        "--assets",
        default=",".join(DEFAULT_ASSETS),
        help="comma-separated asset keys (default: %(default)s)",
    )
    parser.add_argument(
        "--url", default=DEFAULT_URL, help="GraphQL endpoint (default: %(default)s)"
    )
    parser.add_argument("--title", help="title shown on the backfill page")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra run tag (repeatable)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="HTTP timeout in seconds")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the partitions, launch nothing"
    )
    args = parser.parse_args(argv)

    if args.end < args.start:
        parser.error("--to is before --from")
    assets = [a.strip() for a in args.assets.split(",") if a.strip()]
    if not assets:
        parser.error(f"--assets: no asset key given (got {args.assets!r})")
    sites = None
    if args.sites is not None:
        # An empty value (`--sites "$UNSET"`) must not widen the backfill to every site.
        sites = [s.strip() for s in args.sites.split(",") if s.strip()]
        if not sites:
            parser.error(
                f"--sites: no site id given (got {args.sites!r}); leave --sites out to backfill every site"
            )
    tags = []
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--tag needs KEY=VALUE, got {item!r}")
        tags.append({"key": key, "value": value})

    try:
        # Every asset, not only the first: the launch itself answers an unknown one with an HTTP
        # 500 that names nothing.
        nodes = []
        for asset in assets:
            data = _graphql(
                args.url, PARTITIONS_QUERY, {"assetKey": _asset_key(asset)}, args.timeout
            )
            node = data["assetNodeOrError"]
            if node["__typename"] != "AssetNode":
                raise BackfillError(f"asset {asset!r} not found ({node['__typename']})")
            nodes.append(node)
        keys = resolve_partition_keys(
            nodes[0]["partitionKeysByDimension"], args.start, args.end, sites
        )
        print(
            f"backfill: {len(keys)} partitions x {len(assets)} assets ({keys[0]} ... {keys[-1]})",
            file=sys.stderr,
        )
        if args.dry_run:
            print("\n".join(keys))
            return 0
        params = {
            "assetSelection": [_asset_key(a) for a in assets],
            "partitionNames": keys,
            "title": args.title or f"Backfill {args.start}..{args.end}",
            "tags": tags,
        }
        result = _graphql(args.url, LAUNCH_MUTATION, {"params": params}, args.timeout)[
            "launchPartitionBackfill"
        ]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise BackfillError(f"{result['__typename']}: {json.dumps(result)}")
    except BackfillError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 1
    print(result["backfillId"])
    print(
        f"backfill: launched {result['backfillId']}; follow it in the Dagster UI (Runs)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
