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
from typing import Any

import dagster as dg

from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.defs.dispatch.views import VIEWS
from dispatch_pipeline.defs.partitions import SiteDay, io_site_days
from dispatch_pipeline.defs.resources import DispatchStorage
from dispatch_pipeline.defs.stored_runs import latest_results
from dispatch_pipeline.storage import save_runs


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


def _latest_results(context: dg.InputContext, storage: DispatchStorage) -> dict[str, DispatchResult]:
    days = io_site_days(context)
    recalled = None
    if context.step_context:  # a step of a run (not a load outside one)
        recalled = _run_results.recall(context.step_context.run_id, [day.key for day in days], context.op_def.name)
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
    """One pickle file per partition (`<base>/<asset>/<date>/<site>.pkl`) for the inputs of a plan.

    Dagster's filesystem IO manager refuses an output spanning several partitions, which every
    backfill chunk has; this one keeps a snapshot per partition, so a re-run of the dispatch step
    plans from exactly the forecast and prices its upstream run validated.
    """

    base_dir: str = ""  # empty: the Dagster instance's storage directory

    def _root(self, context: dg.InputContext | dg.OutputContext) -> Path:
        if self.base_dir:
            return Path(self.base_dir)
        instance = context.step_context.instance if context.step_context else None
        if instance is None:
            return Path(tempfile.gettempdir()) / "dispatch_pipeline"
        return Path(instance.storage_directory())

    def _path(self, root: Path, context: Any, day: SiteDay) -> Path:
        return root.joinpath(*context.asset_key.path, day.date.isoformat(), f"{day.site_id}.pkl")

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        root = self._root(context)
        for day, value in _per_partition(context, obj):
            path = self._path(root, context, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees half a file.
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            partial.replace(path)

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        root = self._root(context)
        values = {}
        for day in io_site_days(context):
            path = self._path(root, context, day)
            try:
                values[day.key] = pickle.loads(path.read_bytes())
            except FileNotFoundError:
                raise dg.Failure(
                    f"{context.asset_key.to_user_string()} has not been materialised for {day}"
                ) from None
        return values


class DispatchRunIOManager(dg.ConfigurableIOManager):
    """`dispatch_schedule` partitions as dispatch runs in the application database.

    All partitions of a Dagster run are written in one transaction (save_runs): a failure leaves
    no run of that step behind. Runs are only ever added, so re-materialising a partition keeps
    its history and "latest" moves to the new run.
    """

    storage: DispatchStorage

    def handle_output(self, context: dg.OutputContext, obj: dict[str, DispatchResult]) -> None:
        pairs = _per_partition(context, obj)
        results = [result for _, result in pairs]
        run_ids = save_runs(
            self.storage.engine(), results, source="dagster", dagster_run_id=context.run_id
        )
        _run_results.remember(context.run_id, {day.key: result for day, result in pairs})
        # Output metadata is copied into every partition's materialisation: a partition's own
        # dispatch run id is in its metadata (`run_id`) when the run is small enough to carry
        # per-partition metadata, and in SQL (`dispatch_runs.dagster_run_id`) always.
        context.add_output_metadata({"stored_runs": len(run_ids)})

    def load_input(self, context: dg.InputContext) -> dict[str, DispatchResult]:
        return _latest_results(context, self.storage)


class DispatchRunViewIOManager(dg.ConfigurableIOManager):
    """`dispatch_explanations` and `dispatch_kpis`: views of the latest stored dispatch run.

    Their rows are written with the run itself (one transaction), so there is nothing left to
    write here; loading recomputes the view from the stored run.
    """

    storage: DispatchStorage

    def handle_output(self, context: dg.OutputContext, obj: dict[str, Any]) -> None:
        _per_partition(context, obj)  # still insist on one value per partition

    def load_input(self, context: dg.InputContext) -> dict[str, Any]:
        view = VIEWS[context.asset_key.path[-1]]
        results = _latest_results(context, self.storage)
        return {key: view(result) for key, result in results.items()}
