"""Connecting to Ray: join RAY_ADDRESS / ray.address, or start a local cluster on demand.

The only place that reads Ray-related environment variables. Nothing here assumes one machine:
on a cluster, `RAY_ADDRESS=auto` (or `ray job submit`) makes every stage join it unchanged.
"""
from __future__ import annotations

import os
from pathlib import Path

from liaotian.config import RayConfig


def local_num_cpus(cfg: RayConfig) -> int:
    # Logical CPUs above the real count: on 2 cores Ray hangs when a job needs exactly what exists.
    return cfg.num_cpus or max(4, 2 * (os.cpu_count() or 1))


def connect(cfg: RayConfig | None = None):
    """Return the Ray module, initialised: reuse a running session, join a cluster, or start one."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    runtime_env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if address:  # a remote cluster gets the code from its image or `ray job submit --working-dir .`
        ray.init(address=address, log_to_driver=cfg.log_to_driver, runtime_env=runtime_env)
    else:
        # Local workers import the same checkout as this driver (not whatever `pip -e` points at).
        repo_root = str(Path(__file__).resolve().parents[1])
        runtime_env["env_vars"]["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
        ray.init(
            address="local",  # never attach to a stray cluster by accident
            num_cpus=local_num_cpus(cfg),
            num_gpus=cfg.num_gpus,
            object_store_memory=(cfg.object_store_memory_mb or 0) * 1024 * 1024 or None,
            include_dashboard=cfg.include_dashboard,
            log_to_driver=cfg.log_to_driver,
            runtime_env=runtime_env,
        )
    return ray
