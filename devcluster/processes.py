"""Detached processes in their own process groups, found again by an env marker."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

# Every process the devcluster starts (and everything kwokctl starts for it)
# inherits this variable, set to the cluster's state directory; `down` and the
# leak check find stragglers by it even when a pid file is lost.
MARKER_ENV = "CLOUD4IOT_DEVCLUSTER"


# Listening ports are picked below Linux's ephemeral range (32768-60999 by default):
# a port the kernel gave us with bind(0) is from that range, and between our check
# and the server's own bind any outgoing connection (a client of the apiserver, a
# watch) may take it as its local port: "address already in use" in a loaded run.
PORTS = range(20000, 32768)
_given: set[int] = set()


def free_port() -> int:
    """A port free now, below the ephemeral range, not given before by this process."""
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(PORTS)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS.start}-{PORTS.stop - 1} after 200 tries")


def start_detached(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path | None = None
) -> int:
    """Start argv in a new session (so its whole group can be killed); return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            list(argv),
            stdin=devnull,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return proc.pid


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stop_timeout_s: float = 10.0,
) -> Iterator[int]:
    """argv started detached for the block (its pid yielded), its group stopped after."""
    pid = start_detached(argv, log_path, env, cwd)
    try:
        yield pid
    finally:
        stop_processes([pid], stop_timeout_s)


def _state(pid: int) -> str | None:
    """The process's state letter from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0]


def _pgid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _reap(pid: int) -> None:
    # Our own children turn into zombies until waited for.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    _reap(pid)
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def group_members(pgid: int) -> list[int]:
    return [p for p in _all_pids() if _pgid(p) == pgid and is_alive(p)]


def marked_processes(state_dir: Path) -> list[int]:
    """Live processes whose environment carries this cluster's marker."""
    needle = f"{MARKER_ENV}={state_dir}".encode()
    found = []
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and is_alive(pid):
            found.append(pid)
    return found


def stop_processes(pids: Sequence[int], timeout_s: float = 10.0) -> None:
    """SIGTERM each pid's whole process group, then SIGKILL what is left."""
    groups = {g for g in (_pgid(p) for p in pids) if g is not None and g != os.getpgid(0)}
    singles = [p for p in pids if _pgid(p) == os.getpgid(0)]

    def send(sig: signal.Signals) -> None:
        for group in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
        for pid in singles:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def remaining() -> list[int]:
        members = [m for g in groups for m in group_members(g)]
        return members + [p for p in singles if is_alive(p)]

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while remaining() and time.monotonic() < deadline:
        time.sleep(0.1)
    if remaining():
        send(signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while remaining() and time.monotonic() < deadline:
            time.sleep(0.1)
    for pid in pids:
        _reap(pid)


def http_ok(url: str, timeout_s: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status: int = resp.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http_ok(
    url: str, timeout_s: float, pid: int | None = None, log: Path | None = None
) -> None:
    """Poll url until it answers 2xx; fail early if the serving process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_ok(url):
            return
        if pid is not None and not is_alive(pid):
            raise RuntimeError(f"process {pid} exited before {url} was up{_log_tail(log)}")
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s{_log_tail(log)}")


def _log_tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log} ---\n" + "\n".join(tail)
