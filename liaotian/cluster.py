"""Connecting to Ray: join RAY_ADDRESS / ray.address, a local `ray start --head`, or start a cluster.

The only place that reads Ray-related environment variables. Nothing here assumes one machine:
on a cluster, `RAY_ADDRESS=auto` (or `ray job submit`) makes every stage join it unchanged.

Starting a local cluster costs 3-6 s on a 2-core machine, every command. A user who runs many
commands starts one once (`ray start --head --num-cpus 4`) and every command joins it in under a
second; `ray.address: local` (or LIAOTIAN_RAY_REUSE=0, which the tests set) never joins one.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

from liaotian.config import RayConfig

# Ray's own log lines that every command would otherwise print, and why they are not news here:
QUIET_LOGGERS = {
    # "Token authentication is enabled ... Set RAY_AUTH_MODE=disabled to opt out": on purpose (the
    # dashboard of a local cluster is then closed to other local users); the README says so once.
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
}

# Ray Data configures its "ray.data" logger itself (on import and for each dataset) from the YAML file
# named by RAY_DATA_LOGGING_CONFIG, else from a built-in default whose console handler prints INFO:
# "Starting execution of Dataset ...", its plan, "execution finished", "Progress bars disabled" for
# every dataset. Each stage prints its own counts instead, so the console gets warnings only; the
# full log still goes to the session's ray-data.log. (Ray's default, with the console level raised.)
RAY_DATA_LOGGING = """\
version: 1
disable_existing_loggers: false
formatters:
  ray: {format: "%(asctime)s\\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"}
filters:
  console_filter: {"()": ray.data._internal.logging.HiddenRecordFilter}
handlers:
  file: {class: ray.data._internal.logging.SessionFileHandler, formatter: ray, filename: ray-data.log}
  console: {class: ray._private.log.PlainRayHandler, formatter: ray, level: WARNING, filters: [console_filter]}
loggers:
  ray.data: {level: DEBUG, handlers: [file, console], propagate: false}
"""


# Raylet notices that reach the driver as printed lines, not log records. "N PYTHON worker processes
# have been started ... Nx the maximum expected startup concurrency": on 2 cores that maximum is 2,
# and a demo that runs Data, Train with 2 workers, Tune trials and Serve in one session starts 20-30
# worker processes over its life by design; the notice repeats at every multiple.
# "Task ServeController.graceful_shutdown failed ... killed by `ray.kill`": serve.shutdown() kills the
# controller while that task of its own is still in flight; the shutdown itself succeeded.
QUIET_RAYLET_NOTICES = ("PYTHON worker processes have been started", "ServeController.graceful_shutdown failed")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _StripColour(logging.Filter):
    """Ray colours parts of its log lines (the dashboard address) whether or not stderr is a terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()  # the codes may sit in the arguments, not the format string
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), ()
        return True


def quiet_ray_logs() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    if "RAY_DATA_LOGGING_CONFIG" not in os.environ:  # a user's own config wins
        path = Path(tempfile.gettempdir()) / f"liaotian-ray-data-logging-{os.getuid()}.yaml"
        path.write_text(RAY_DATA_LOGGING, encoding="utf-8")
        os.environ["RAY_DATA_LOGGING_CONFIG"] = str(path)
        if "ray.data" in sys.modules:  # already configured from the default: configure again
            from ray.data._internal import logging as data_logging

            data_logging.configure_logging()
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # the "(raylet)" / "(pid=...)" prefixes of forwarded lines
    if not sys.stderr.isatty():
        for handler in logging.getLogger("ray").handlers:
            if not any(isinstance(f, _StripColour) for f in handler.filters):
                handler.addFilter(_StripColour())
    _filter_raylet_notices()


def _filter_raylet_notices() -> None:
    """Drop QUIET_RAYLET_NOTICES from what Ray prints for the raylet (`ray._private.worker.print_to_stdstream`,
    the one function both raylet errors and worker logs go through; left alone if Ray renames it)."""
    from ray._private import worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_liaotian_filtered", False):
        return

    def print_to_stdstream(data, *args, **kwargs):
        lines = [ln for ln in data.get("lines", []) if not any(n in ln for n in QUIET_RAYLET_NOTICES)]
        if lines:
            original({**data, "lines": lines}, *args, **kwargs)

    print_to_stdstream._liaotian_filtered = True
    ray_worker.print_to_stdstream = print_to_stdstream


def local_num_cpus(cfg: RayConfig) -> int:
    # Logical CPUs above the real count: on 2 cores Ray hangs when a job needs exactly what exists.
    return cfg.num_cpus or max(4, 2 * (os.cpu_count() or 1))


def local_head_address() -> str | None:
    """The GCS address of a cluster that `ray start --head` left running on this machine, if it answers.

    Ray records the last one in <tmp>/ray/ray_current_cluster; a killed cluster leaves the file behind,
    so the address only counts when something listens on it."""
    tmp = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    try:
        address = (Path(tmp) / "ray" / "ray_current_cluster").read_text().strip()
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=0.2):
            return address
    except (OSError, ValueError):
        return None


def resolve_address(cfg: RayConfig) -> tuple[str | None, bool]:
    """(address to join or None to start a cluster for this process, whether it runs on this machine)."""
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    if address == "local":
        return None, True
    if address:
        return address, False
    if os.environ.get("LIAOTIAN_RAY_REUSE", "1") == "0":
        return None, True
    return local_head_address(), True


def connect(cfg: RayConfig | None = None):
    """Return the Ray module, initialised: reuse a running session, join a cluster, or start one."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_ray_logs()
    address, on_this_machine = resolve_address(cfg)
    runtime_env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    if on_this_machine:  # local workers import the same checkout as this driver (not whatever `pip -e` points at)
        repo_root = str(Path(__file__).resolve().parents[1])
        runtime_env["env_vars"]["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
    if address:  # a remote cluster gets the code from its image or `ray job submit --working-dir .`
        # A local head joins as "auto" (Ray reads the same address file): only then does Ray turn on
        # token authentication for the connection, which a head started with a token requires.
        ray.init(address="auto" if on_this_machine else address, log_to_driver=cfg.log_to_driver, runtime_env=runtime_env)
    else:
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
