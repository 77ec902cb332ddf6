"""A batch on a long-lived cluster leaves no per-field state in the workers (issue 21, item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ednn_dask import load_model, make_field, save_field
from ednn_dask.batch import score_batch

distributed = pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[1]


def test_worker_metrics_stay_bounded_over_a_batch(tmp_path):
    model = load_model(ROOT / "models" / "ising-2d-f1c1.onnx")
    rng = np.random.default_rng(0)
    fields = [str(save_field(make_field(rng.choice(np.array([-1, 1], np.int8), (32, 32)),
                                        name="spins"), tmp_path / f"f{k}.zarr"))
              for k in range(16)]
    seen = []
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        (worker,) = cluster.workers.values()

        def on_field(path, row):
            seen.append(len(worker.digests_total))

        batch = score_batch(fields, model, tmp_path / "t.csv", client=client, on_field=on_field)
    assert len(batch.scored) == len(fields)
    # without one span per batch, every field opened a new default span and added
    # ~30 entries (one per task prefix and metric) to the worker's cumulative metrics
    assert seen[-1] == seen[3], seen
