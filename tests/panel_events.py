"""The ELFS panel's events as the App sends them: an execution context for one panel method."""

from __future__ import annotations

from fiftyone.operators.executor import ExecutionContext, Executor


def panel_context(dataset, method: str) -> tuple[ExecutionContext, Executor]:
    """A context for the panel's `method` on `dataset`, and the executor collecting what the
    panel asks the App to do (``executor._requests``)."""
    executor = Executor()
    ctx = ExecutionContext(
        request_params={
            "dataset_name": dataset.name,
            "panel_id": "test-panel",
            "panel_state": {},
            "params": {"__method__": method, "panel_id": "test-panel", "state": {}},
        },
        executor=executor,
    )
    return ctx, executor
