"""Shared fixtures. Unit tests never start Ray; tests that take `ray_session` share one local cluster.

Settings that worked on a 2-core machine: logical CPUs above the real count (Ray hangs, not fails, when
resources are exact), the dashboard on (Tune around Train needs the state API), pytest-timeout.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # report() waits on this poll
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("RAY_ADDRESS", None)  # never attach the tests to a stray cluster
os.environ["LIAOTIAN_RAY_REUSE"] = "0"  # ... nor to a `ray start --head` that liaotian commands would join

ROOT = Path(__file__).resolve().parents[1]

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster for every integration test (started on first use)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=8,
            object_store_memory=512 * 1024**2,
            include_dashboard=True,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray
    # the session is shut down at interpreter exit; a module that needs its own cluster calls ray.shutdown()
