"""What the select_more form costs each time it is redrawn, at scale.

The App redraws an operator's form whenever a value changes, running its cheap data checks
(`fiftyone_elfs.stages.selection_rounds.preflight`), which now include one query for a
sample still free to select (`_refuse_when_nothing_left`). This makes a dataset of N samples
(dummy file paths, 16-d random embeddings) in a private mongod, runs the pipeline on it
(k-means, one MLP epoch, 10% budget), labels a fifth of the samples, then prints the median
seconds of 5 redraws of the select_more form (the real operator's ``resolve_input``) and of
that query alone, then of both once nothing is left (the query reads every sample then).

    .venv/bin/python benchmarks/scale/round_form.py --n 200000

The database folder is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import private_db  # noqa: E402
from short_calls import median_seconds, select_cheaply  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--data-dir", default="/tmp/elfs-round-form")
    args = p.parse_args()
    proc = private_db.use(os.path.join(args.data_dir, "db"))
    try:
        import fiftyone as fo
        from fiftyone.operators.executor import ExecutionContext, Executor

        from fiftyone_elfs.plugin.annotation_operators import SelectMore
        from fiftyone_elfs.stages import selection_rounds

        rng = np.random.default_rng(0)
        t = time.perf_counter()
        ds = fo.Dataset("elfs-round-form")
        ds.add_samples(
            fo.Sample(filepath=f"/nonexistent/img{i:07d}.jpg", emb=rng.normal(size=16).tolist())
            for i in range(args.n)
        )
        print(f"dataset of {args.n:,} samples: {time.perf_counter() - t:.0f} s", flush=True)
        select_cheaply(ds)
        ids = ds.values("id")
        labeled = ids[: args.n // 5]
        ds.select(labeled).set_values("human", [fo.Classification(label="x")] * len(labeled))
        params = {"key": "elfs", "budget_count": 100, "label_field": "human"}

        def redraw():
            request = {"dataset_name": ds.name, "params": params}
            ctx = ExecutionContext(request_params=request, executor=Executor())
            props = SelectMore().resolve_input(ctx).to_json()["type"]["properties"]
            assert not any(p.get("invalid") for p in props.values())

        form = median_seconds(redraw)
        count = median_seconds(
            lambda: selection_rounds._refuse_when_nothing_left(ds, "elfs", "human", None)
        )
        print(f"select_more form redraw: {form:.2f} s (median of 5)", flush=True)
        print(f"  the query for a free sample alone: {count:.2f} s (median of 5)", flush=True)
        rest = [i for i in ids[args.n // 5 :]]
        ds.select(rest).set_values("human", [fo.Classification(label="y")] * len(rest))
        errors = []

        def refused_redraw():
            request = {"dataset_name": ds.name, "params": params}
            ctx = ExecutionContext(request_params=request, executor=Executor())
            props = SelectMore().resolve_input(ctx).to_json()["type"]["properties"]
            errors.append(props.get("target_error", {}).get("error_message", ""))

        form = median_seconds(refused_redraw)
        assert "nothing left" in errors[-1], errors[-1]
        print(f"nothing left (every sample labeled): form redraw {form:.2f} s (median of 5)")
        ds.delete()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(args.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
