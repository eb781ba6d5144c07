"""Process groups and the env marker: how `down` leaves nothing behind."""

import os
import time
from pathlib import Path

from devcluster.processes import (
    MARKER_ENV,
    is_alive,
    marked_processes,
    running,
    start_detached,
    stop_processes,
)


def test_stopping_a_group_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, MARKER_ENV: str(tmp_path)}
    # A parent with a background child that ignores SIGTERM: only the group
    # kill plus the SIGKILL fallback gets both.
    script = "trap '' TERM; sleep 300 & sleep 300; wait"
    pid = start_detached(["sh", "-c", script], tmp_path / "log", env)
    deadline = time.monotonic() + 5
    while len(marked_processes(tmp_path)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(marked_processes(tmp_path)) == 3
    stop_processes([pid], timeout_s=1)
    assert not is_alive(pid)
    assert marked_processes(tmp_path) == []


def test_marker_finds_only_this_clusters_processes(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    pid_ours = start_detached(["sleep", "300"], tmp_path / "a", {MARKER_ENV: str(ours)})
    pid_theirs = start_detached(["sleep", "300"], tmp_path / "b", {MARKER_ENV: str(theirs)})
    try:
        assert marked_processes(ours) == [pid_ours]
    finally:
        stop_processes([pid_ours, pid_theirs])
    assert not is_alive(pid_theirs)


def test_free_ports_are_below_the_ephemeral_range_bindable_and_never_given_twice() -> None:
    import socket

    from devcluster.processes import PORTS, free_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50  # a port handed to one server is not handed to the next
    assert all(PORTS.start <= p < min(PORTS.stop, low) for p in ports)  # no outgoing
    # connection's local port can take it between the check and the server's bind
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_running_stops_the_whole_group_when_the_block_ends_even_on_error(tmp_path: Path) -> None:
    env = {**os.environ, MARKER_ENV: str(tmp_path)}
    try:
        with running(["sh", "-c", "sleep 300 & sleep 300; wait"], tmp_path / "log", env) as pid:
            assert is_alive(pid)
            raise RuntimeError("the block failed")
    except RuntimeError:
        pass
    assert not is_alive(pid)
    assert marked_processes(tmp_path) == []
