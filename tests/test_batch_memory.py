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
            # per-task entries only: worker-wide timers ('profile-duration', 'latency')
            # appear on their own clock, whenever the profiler or heartbeat first fires
            seen.append(sum(isinstance(k, tuple) and k[0] == "execute"
                            for k in worker.digests_total))

        batch = score_batch(fields, model, tmp_path / "t.csv", client=client, on_field=on_field)
    assert len(batch.scored) == len(fields)
    # without one span per batch, every field opened a new default span and added
    # ~30 entries (one per task prefix and metric) to the worker's cumulative metrics
    assert seen[0] > 0 and seen[-1] == seen[0], seen


def test_a_field_of_one_chunk_is_one_task_with_the_same_numbers(tmp_path):
    """map_overlap and the tree sum made ~30 tasks of one small periodic field: keys that
    dask's per-key caches (``key_split``, 100,000 keys a process) kept after the job, so a
    batch of small fields on a long-lived cluster grew with every field."""
    import dask

    from ednn_dask.score import align, contribution_map, one_task, prepare_field, score

    model = load_model(ROOT / "models" / "ising-2d-f1c1.onnx")
    rng = np.random.default_rng(1)
    path = save_field(make_field(rng.choice(np.array([-1, 1], np.int8), (32, 32)),
                                 name="spins"), tmp_path / "f.zarr")
    for boundary in ("periodic", -1.0, 0.5):
        tiling = model.spec.tiling.with_boundary(boundary)
        data = align(prepare_field(str(path), model).data, tiling, None, channels_first=False)
        assert data.npartitions == 1
        task = one_task(data, model, tiling, dims=("y", "x"))
        (optimized,) = dask.optimize(task)
        # the stored chunk (its array and the read), the model, the task
        assert len(dict(optimized.__dask_graph__())) <= 4
        energy, values = task.compute()
        graph = contribution_map(data, model, tiling, dims=("y", "x"))
        np.testing.assert_array_equal(values, graph.compute())
        assert energy == graph.sum(dtype=np.float64, split_every=8).compute()
        result = score(path, model, boundary=boundary)
        assert result.energy == energy and result.n_chunks == 1
        np.testing.assert_array_equal(result.contributions.values, values)


@pytest.mark.parametrize("fixture", ["cnn2d", "multiscale2d"])
def test_one_task_matches_the_graph_with_channels_and_scales(request, fixture):
    from ednn_dask.score import align, contribution_map, one_task

    _, model, *_ = request.getfixturevalue(fixture)
    spec = model.spec
    shape = (spec.channels, 48, 36) if spec.channels > 1 else (48, 36)
    field = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    channels_first = spec.channels > 1
    for boundary in ("periodic", 0.25):
        tiling = spec.tiling.with_boundary(boundary)
        data = align(field, tiling, None, channels_first=channels_first)
        assert data.npartitions == 1
        energy, values = one_task(data, model, tiling, channels_first=channels_first).compute()
        graph = contribution_map(data, model, tiling, channels_first=channels_first)
        np.testing.assert_array_equal(values, graph.compute())
        assert energy == graph.sum(dtype=np.float64, split_every=8).compute()
