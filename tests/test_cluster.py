"""Which Ray cluster a command uses: an explicit address, a live local `ray start --head`, or its own."""
import socket

import pytest

from liaotian.cluster import local_head_address, resolve_address
from liaotian.config import RayConfig


@pytest.fixture
def head(tmp_path, monkeypatch):
    """A fake `ray start --head`: its address file under RAY_TMPDIR and a socket listening there."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("LIAOTIAN_RAY_REUSE", raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    (tmp_path / "ray").mkdir()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    (tmp_path / "ray" / "ray_current_cluster").write_text(address)
    yield address
    server.close()


def test_a_live_local_head_is_joined(head):
    assert local_head_address() == head
    assert resolve_address(RayConfig()) == (head, True)


def test_a_stale_address_file_starts_a_new_cluster(head, tmp_path):
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # nothing listens there
    assert resolve_address(RayConfig())[0] is None


def test_local_and_the_opt_out_never_join(head, monkeypatch):
    assert resolve_address(RayConfig(address="local"))[0] is None
    monkeypatch.setenv("LIAOTIAN_RAY_REUSE", "0")
    assert resolve_address(RayConfig())[0] is None


def test_an_explicit_address_wins(head, monkeypatch):
    assert resolve_address(RayConfig(address="10.0.0.5:6379")) == ("10.0.0.5:6379", False)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert resolve_address(RayConfig(address="10.0.0.5:6379")) == ("auto", False)


def test_no_head_file_starts_a_new_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("LIAOTIAN_RAY_REUSE", raising=False)
    assert resolve_address(RayConfig())[0] is None


def test_raylet_worker_count_notice_is_dropped_and_other_lines_kept(monkeypatch):
    from ray._private import worker as ray_worker

    from liaotian.cluster import quiet_ray_logs

    printed = []
    monkeypatch.setattr(ray_worker, "print_to_stdstream", lambda data, ignore_prefix: printed.append(data["lines"]))
    quiet_ray_logs()
    ray_worker.print_to_stdstream({"lines": ["WARNING: 18 PYTHON worker processes have been started on node: x"], "pid": "raylet"},
                                  ignore_prefix=False)
    ray_worker.print_to_stdstream({"lines": ["Task ServeController.graceful_shutdown failed. There are infinite retries "
                                             "remaining"], "pid": "raylet"}, ignore_prefix=False)
    ray_worker.print_to_stdstream({"lines": ["a real error"], "pid": "raylet"}, ignore_prefix=False)
    assert printed == [["a real error"]]


def test_ray_log_lines_lose_their_colours_off_a_terminal():
    import io
    import logging

    import ray  # noqa: F401  (installs Ray's handler on the "ray" logger)

    from liaotian.cluster import quiet_ray_logs

    quiet_ray_logs()  # pytest's stderr is not a terminal
    handler = logging.getLogger("ray").handlers[0]
    stream, handler.stream = handler.stream, io.StringIO()
    try:
        logging.getLogger("ray._private.worker").info("dashboard at %s%shttp://127.0.0.1:8265 %s%s", "\x1b[1m", "\x1b[32m",
                                                      "\x1b[39m", "\x1b[22m")  # as ray.init logs it: codes in the arguments
        assert handler.stream.getvalue().rstrip().endswith("dashboard at http://127.0.0.1:8265")
    finally:
        handler.stream = stream


def test_ray_data_console_gets_warnings_only(monkeypatch):
    import logging

    import ray.data  # noqa: F401

    from liaotian.cluster import quiet_ray_logs

    monkeypatch.delenv("RAY_DATA_LOGGING_CONFIG", raising=False)
    quiet_ray_logs()
    console = [h for h in logging.getLogger("ray.data").handlers if type(h).__name__ == "PlainRayHandler"]
    assert console and all(h.level == logging.WARNING for h in console)
    assert logging.getLogger("ray.data").isEnabledFor(logging.DEBUG)  # the session's ray-data.log keeps everything
