"""dispatch-pipeline: day-ahead battery dispatch for fleets of PV + battery sites."""

from dispatch_pipeline.core.request import DispatchRequest, RequestError
from dispatch_pipeline.core.result import DispatchResult
from dispatch_pipeline.core.solve import solve_dispatch

__all__ = ["DispatchRequest", "DispatchResult", "RequestError", "solve_dispatch"]
