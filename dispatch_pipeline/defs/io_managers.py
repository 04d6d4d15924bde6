"""IO managers: how each asset's partitions are stored and read back.

Every partitioned asset of the pipeline hands its IO manager a dict `{partition key: value}` with
one entry per partition of the run, however many that is (one for a day-ahead run, hundreds in a
backfill chunk); loads return the same shape for the partitions the reading step asks for.
"""

import os
import pickle
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.common import shorten
from dispatch_pipeline.defs.dispatch.views import VIEWS
from dispatch_pipeline.defs.ingestion.coverage import INCOMPLETE_PARTITIONS_KEY
from dispatch_pipeline.defs.partition_metadata import run_metadata
from dispatch_pipeline.defs.partitions import SiteDay, io_site_days
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.defs.stored_runs import latest_results
from dispatch_pipeline.storage import save_runs, stored_run_ids


class _RunResults:
    """The dispatch results a Dagster run stored, kept for the run's own downstream steps.

    Explanations and KPIs read the plans their run has just written; with every step of a run in
    one process (the in-process executor) they are served from here instead of read back from
    the database. A run's results are let go once both views have read them (hundreds of
    results are a large share of a backfill run's heap, rescanned by every full collection and
    freed again at exit); only the most recent runs are kept at all, and any other load reads
    the database.
    """

    KEEP_RUNS = 2

    def __init__(self) -> None:
        self._by_run: OrderedDict[str, dict[str, DispatchResult]] = OrderedDict()
        self._readers_left: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def remember(self, dagster_run_id: str, results: dict[str, DispatchResult]) -> None:
        with self._lock:
            self._by_run.setdefault(dagster_run_id, {}).update(results)
            self._by_run.move_to_end(dagster_run_id)
            self._readers_left[dagster_run_id] = set(VIEWS)
            while len(self._by_run) > self.KEEP_RUNS:
                evicted, _ = self._by_run.popitem(last=False)
                self._readers_left.pop(evicted, None)

    def recall(self, dagster_run_id: str, keys: list[str], reader: str) -> dict[str, DispatchResult] | None:
        with self._lock:
            stored = self._by_run.get(dagster_run_id, {})
            if not all(key in stored for key in keys):
                return None
            recalled = {key: stored[key] for key in keys}
            readers_left = self._readers_left.get(dagster_run_id, set())
            readers_left.discard(reader)
            if not readers_left:
                self._by_run.pop(dagster_run_id, None)
                self._readers_left.pop(dagster_run_id, None)
            return recalled


_run_results = _RunResults()


def _step_context(context: dg.InputContext | dg.OutputContext) -> Any:
    """The step being executed; None for a load from outside a run (`load_asset_value`)."""
    try:
        return context.step_context
    except dg.DagsterInvariantViolationError:
        return None


def _instance(context: dg.InputContext | dg.OutputContext) -> dg.DagsterInstance | None:
    step = _step_context(context)
    if step is not None:
        return step.instance
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:  # a context built without an instance
        return None


def _latest_results(context: dg.InputContext, storage: DispatchStorage) -> dict[str, DispatchResult]:
    days = io_site_days(context)
    recalled = None
    step = _step_context(context)
    if step is not None:  # a step of a run (not a load from outside one)
        recalled = _run_results.recall(step.run_id, [day.key for day in days], context.op_def.name)
    return recalled if recalled is not None else latest_results(storage.engine(), days)


def _per_partition(context: dg.OutputContext, obj: Any) -> list[tuple[SiteDay, Any]]:
    """Pair each partition of the output with its value; a missing one is a bug upstream."""
    if not isinstance(obj, dict):
        raise dg.DagsterInvariantViolationError(
            f"{context.asset_key.to_user_string()}: expected a dict of partition key -> value, "
            f"got {type(obj).__name__}"
        )
    days = io_site_days(context)
    missing = [day.key for day in days if day.key not in obj]
    if missing:
        raise dg.DagsterInvariantViolationError(
            f"{context.asset_key.to_user_string()}: no value for partition(s) {missing[:5]}"
        )
    return [(day, obj[day.key]) for day in days]


class SiteDayPickleIOManager(dg.ConfigurableIOManager):
    """Snapshots of a plan's inputs: one pickle per site and Dagster run
    (`<base>/<asset>/<site>/<run id>.pkl`, a dict of date -> value).

    Dagster's filesystem IO manager refuses an output spanning several partitions, which every
    backfill chunk has. A file per run and site rather than per partition: a backfill run of a
    year writes two files instead of 730, and the file system calls were a large share of such a
    run's time. Runs never overwrite each other's snapshots, so a re-run of the dispatch step
    plans from exactly the forecast and prices its upstream run validated: a partition's snapshot
    is read from the run of its latest materialisation, found in the Dagster event log when it
    is not the current run.
    """

    base_dir: str = Field(
        default="",
        description="Directory of the input snapshots; empty: the Dagster instance's storage directory.",
    )

    # Event log records fetched per query when locating the runs of earlier materialisations.
    RECORDS_PAGE: ClassVar[int] = 1000

    def _root(self, context: dg.InputContext | dg.OutputContext) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        instance = _instance(context)
        if instance is None:
            return Path(tempfile.gettempdir()) / "dispatch_pipeline"
        return Path(instance.storage_directory())

    @staticmethod
    def _bundle(root: Path, context: Any, site_id: str, run_id: str) -> Path:
        return root.joinpath(*context.asset_key.path, site_id, f"{run_id}.pkl")

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        root = self._root(context)
        by_site: dict[str, dict[str, Any]] = {}
        for day, value in _per_partition(context, obj):
            by_site.setdefault(day.site_id, {})[day.date.isoformat()] = value
        for site_id, values in by_site.items():
            path = self._bundle(root, context, site_id, context.run_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half a file.
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL))
            partial.replace(path)

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        root = self._root(context)
        days = io_site_days(context)
        values: dict[str, Any] = {}
        bundles: dict[Path, dict[str, Any]] = {}
        looked_in: dict[str, Path] = {}  # partition key -> the latest run's file, when it lacks it

        def take(wanted: list[SiteDay], run_of: dict[str, str]) -> None:
            for day in wanted:
                run_id = run_of.get(day.key)
                if run_id is None:
                    continue
                path = self._bundle(root, context, day.site_id, run_id)
                if path not in bundles:
                    bundles[path] = pickle.loads(path.read_bytes()) if path.exists() else {}
                if day.date.isoformat() in bundles[path]:
                    values[day.key] = bundles[path][day.date.isoformat()]
                else:
                    looked_in[day.key] = path

        # Most loads are of partitions their own run has just materialised.
        step = _step_context(context)
        if step is not None:
            take(days, {day.key: step.run_id for day in days})
            looked_in.clear()  # this run's file lacks what it did not materialise: no news
        missing = [day for day in days if day.key not in values]
        if missing:
            take(missing, self._latest_runs(context, [day.key for day in missing]))
            missing = [day for day in missing if day.key not in values]
        if missing:
            # Named like days without complete data: partition_recovery_sensor plans the others.
            raise dg.Failure(
                _no_snapshot(context.asset_key.to_user_string(), missing, looked_in),
                metadata={INCOMPLETE_PARTITIONS_KEY: dg.MetadataValue.json(sorted(day.key for day in missing))},
            )
        return values

    def _latest_runs(self, context: dg.InputContext, keys: list[str]) -> dict[str, str]:
        """The Dagster run of each partition's latest materialisation (newest records first)."""
        instance = _instance(context)
        if instance is None:
            return {}
        wanted, found = set(keys), {}
        records_filter = dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=keys)
        cursor = None
        while wanted:
            page = instance.fetch_materializations(records_filter, limit=self.RECORDS_PAGE, cursor=cursor)
            for record in page.records:
                if record.partition_key in wanted:
                    found[record.partition_key] = record.run_id
                    wanted.discard(record.partition_key)
            if not page.has_more:
                break
            cursor = page.cursor
        return found


class DispatchRunIOManager(dg.ConfigurableIOManager):
    """`dispatch_schedule` partitions as dispatch runs in the application database.

    All partitions of a Dagster run are written in one transaction (save_runs): a failure leaves
    no run of that step behind. Runs are only ever added, so re-materialising a partition keeps
    its history and "latest" moves to the new run.
    """

    storage: DispatchStorage

    def handle_output(self, context: dg.OutputContext, obj: dict[str, DispatchResult]) -> None:
        engine = self.storage.engine()
        pairs = _per_partition(context, obj)
        # A retry's output may hold plans an earlier attempt stored (checks.py keeps them); one
        # primary-key lookup per 500 plans finds them.
        stored_before = stored_run_ids(engine, [result.run_id for _, result in pairs])
        results = [result for _, result in pairs if result.run_id not in stored_before]
        run_ids = save_runs(engine, results, source="dagster", dagster_run_id=context.run_id) if results else []
        _run_results.remember(context.run_id, {day.key: result for day, result in pairs})
        # Output metadata is copied into every partition's materialisation: a partition's own
        # dispatch run id is in its metadata (`dispatch_run_id`) when the run is small enough to
        # carry per-partition metadata, and in SQL (`dispatch_runs.dagster_run_id`) always.
        kept = {"kept_from_earlier_attempt": len(stored_before)} if stored_before else {}
        # A one-partition run's materialisation says it all; run-wide figures are for the rest.
        context.add_output_metadata(
            run_metadata({"stored_runs": len(run_ids), **kept}) if len(pairs) > 1 else kept
        )

    def load_input(self, context: dg.InputContext) -> dict[str, DispatchResult]:
        return _latest_results(context, self.storage)


class DispatchRunViewIOManager(dg.ConfigurableIOManager):
    """`dispatch_explanations` and `dispatch_kpis`: views of the latest stored dispatch run.

    Their rows are written with the run itself (one transaction), and the assets return no value
    (a MaterializeResult), so there is nothing to write here; loading recomputes the view from the
    stored run.
    """

    storage: DispatchStorage

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        _per_partition(context, obj)  # an asset returning values after all: one per partition

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        view = VIEWS[context.asset_key.path[-1]]
        results = _latest_results(context, self.storage)
        return {key: view(result) for key, result in results.items()}


def _no_snapshot(asset: str, missing: list[SiteDay], looked_in: dict[str, Path]) -> str:
    missing = sorted(missing)
    never = [day for day in missing if day.key not in looked_in]
    gone = [day for day in missing if day.key in looked_in]
    parts = []
    if never:
        parts.append(f"{shorten([str(day) for day in never])} (never materialised)")
    if gone:
        parts.append(
            f"{shorten([str(day) for day in gone])} (materialised, but not in the snapshot file of its latest run, "
            f"{looked_in[gone[0].key]}{', ...' if len(gone) > 1 else ''}: deleted, or on another "
            "host's or pod's disk)"
        )
    return f"{asset} has no stored snapshot for {'; '.join(parts)}: materialise {asset} for these partitions"

