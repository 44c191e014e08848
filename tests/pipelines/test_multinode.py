"""A local multi-node Ray cluster (head + two worker nodes on this machine): one run's two workers land
on different nodes and still train. Shuts down the shared session for its own cluster, restores it after.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def three_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    shared_was_up = ray.is_initialized()
    ray.shutdown()
    env = {"env_vars": {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}}
    # The head gets CPUs but no "train_slot": only the two worker nodes can host a training worker,
    # one each, so a 2-worker run must span both.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 150 * 1024**2})
    for _ in range(2):
        cluster.add_node(num_cpus=2, resources={"train_slot": 1}, object_store_memory=150 * 1024**2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env=env, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if shared_was_up:  # the other Ray tests of this session expect the shared local cluster back
        for attempt in range(3):  # a raylet gets 30 s to start; on a loaded 2-core box that can run out
            try:
                ray.init(address="local", num_cpus=8, object_store_memory=512 * 1024**2, include_dashboard=True,
                         log_to_driver=False, runtime_env=env)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
                time.sleep(5)


def test_two_workers_on_two_nodes_train(three_node_cluster, train_data, tmp_path):
    import ray
    from liaotian.config import load_run_config
    from liaotian.pipelines.train_job import run

    assert len([n for n in ray.nodes() if n["Alive"]]) == 3
    job = {"model": {"preset": "tiny", "n_layer": 1, "n_head": 2, "d_model": 40, "dropout": 0.0},
           "max_steps": 16, "batch_size": 16, "eval_every": 8, "checkpoint_every": 8, "log_every": 8, "eval_batches": 2,
           "optim": {"lr": 1e-2, "warmup_steps": 2},
           "scaling": {"num_workers": 2, "cpus_per_worker": 1, "resources_per_worker": {"train_slot": 1}}}
    cfg = load_run_config(None, {"run_dir": str(tmp_path / "run"), "precision": "fp32", "train.dialog": job})
    res = run("dialog", cfg, data_dir=train_data["dialog"])
    reports = [json.loads(line) for line in (Path(res.run_path) / "metrics.jsonl").read_text().splitlines()]
    assert all(m["nodes"] == 2 for m in reports)  # the workers' own node ids, all-gathered: two distinct nodes
    evals = [m for m in reports if m.get("val_step") == m["step"]]
    assert res.steps == 16 and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert (Path(res.model_dir) / "model.safetensors").exists()
