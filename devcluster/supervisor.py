"""Keeps the devcluster's control plane running: a dead process is restarted with backoff.

kube-controller-manager exits ("leaderelection lost") about 11 s after it loses the
apiserver, and kwokctl restarts nothing: namespaces then stay Terminating for good.
`up` starts this supervisor last, as one more process of the cluster, and `down`
stops it first. It supervises what kwokctl started (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok-controller) and the cluster's
infrastructure (Prometheus, the load simulator). Our own services (extender,
rebalancer) are the system under test: tests kill them on purpose, and in a real
cluster Kubernetes supervises them, so they are left alone.

* Recipes. At start, each control-plane process's command line, working directory
  and environment are read from /proc (kwokctl started them); the infrastructure's
  are in state.json. They are kept in `supervisor.json`, so `restart` can use them.
* Deaths. A dead process is restarted once its pid file (or state.json) has named
  the same dead pid for GRACE seconds: a test that restarts the apiserver itself
  writes the new pid first. A component stopped on purpose (`stop_component`:
  its pid is None in state.json) is left stopped.
* Backoff. 1 s, doubling to 30 s while restarts keep failing; a process that stayed
  up STABLE seconds starts again from 1 s. Restarts are counted in supervisor.json,
  which `status` reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devcluster.processes import is_alive, start_detached

CONTROL_PLANE = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)
INFRASTRUCTURE = ("prometheus", "loadsim")
GRACE = 3.0
MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0
STABLE = 60.0
LOCK = "state.lock"


@dataclass
class Recipe:
    name: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    log: str
    pid_file: str | None = None  # control plane: kwokctl's pid file; else state.json


@dataclass
class Book:
    """supervisor.json: the recipes and what the supervisor did."""

    recipes: dict[str, Recipe] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    last_restart: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Book:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        raw["recipes"] = {k: Recipe(**v) for k, v in raw.get("recipes", {}).items()}
        return cls(**raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialises read-modify-write of state.json between the supervisor and `Devcluster`."""
    import fcntl

    with open(state_dir / LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def control_plane_recipe(name: str, pid_file: Path) -> Recipe | None:
    """How kwokctl started `name`, from its running process."""
    try:
        pid = int(pid_file.read_text().strip())
        proc = Path(f"/proc/{pid}")
        argv = [a.decode() for a in (proc / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")]
        env_items = (proc / "environ").read_bytes().rstrip(b"\0").split(b"\0")
        cwd = os.readlink(proc / "cwd")
    except (OSError, ValueError):
        return None
    env = dict(item.decode().split("=", 1) for item in env_items if b"=" in item)
    log = str(pid_file.parent.parent / "logs" / f"{name}.log")
    return Recipe(name, argv, cwd, env, log, pid_file=str(pid_file))


class Supervisor:
    def __init__(self, state_dir: Path, cluster_dir: Path) -> None:
        self.state_dir, self.cluster_dir = state_dir, cluster_dir
        self.book_path = state_dir / "supervisor.json"
        self.book = Book.load(self.book_path)
        self.dead_since: dict[str, tuple[int, float]] = {}  # name -> (dead pid, first seen)
        self.backoff: dict[str, float] = {}
        self.up_since: dict[str, float] = {}

    def learn(self) -> None:
        for name in CONTROL_PLANE:
            recipe = control_plane_recipe(name, self.cluster_dir / "pids" / f"{name}.pid")
            if recipe is not None:
                self.book.recipes[name] = recipe
        components = self._state().get("components")
        for name in INFRASTRUCTURE:
            component = components.get(name) if isinstance(components, dict) else None
            if isinstance(component, dict):
                self.book.recipes[name] = Recipe(
                    name,
                    component["argv"],
                    str(Path(__file__).resolve().parents[1]),
                    dict(os.environ),
                    component["log"],
                )
        self.book.save(self.book_path)

    def _state(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads((self.state_dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def pid_of(self, recipe: Recipe) -> int | None:
        if recipe.pid_file is not None:
            try:
                return int(Path(recipe.pid_file).read_text().strip())
            except (OSError, ValueError):
                return None
        components = self._state().get("components", {})
        component = components.get(recipe.name) if isinstance(components, dict) else None
        pid = component.get("pid") if isinstance(component, dict) else None
        return pid if isinstance(pid, int) else None

    def check(self, now: float) -> list[str]:
        """One pass: restart what has been dead for GRACE (and its backoff); names restarted."""
        restarted = []
        for name, recipe in self.book.recipes.items():
            pid = self.pid_of(recipe)
            if pid is None:  # stopped on purpose
                self.dead_since.pop(name, None)
                continue
            if is_alive(pid):
                self.dead_since.pop(name, None)
                since = self.up_since.setdefault(name, now)
                if now - since >= STABLE:
                    self.backoff.pop(name, None)
                continue
            self.up_since.pop(name, None)
            seen = self.dead_since.get(name)
            if seen is None or seen[0] != pid:
                self.dead_since[name] = (pid, now)
                continue
            wait = max(GRACE, self.backoff.get(name, 0.0))
            if now - seen[1] < wait:
                continue
            with locked(self.state_dir):
                if self.pid_of(recipe) != pid:  # someone else restarted it meanwhile
                    continue
                new_pid = self.start(recipe)
            del self.dead_since[name]
            self.backoff[name] = min(MAX_BACKOFF, self.backoff.get(name, MIN_BACKOFF / 2) * 2)
            self.book.restarts[name] = self.book.restarts.get(name, 0) + 1
            self.book.last_restart[name] = now
            self.book.save(self.book_path)
            print(
                f"{time.strftime('%H:%M:%S')} restarted {name} (pid {pid} -> {new_pid})", flush=True
            )
            restarted.append(name)
        return restarted

    def start(self, recipe: Recipe) -> int:
        """Start a recipe and record its pid where the cluster looks for it (lock held)."""
        pid = start_detached(recipe.argv, Path(recipe.log), recipe.env, cwd=Path(recipe.cwd))
        if recipe.pid_file is not None:
            Path(recipe.pid_file).write_text(str(pid))
        else:
            path = self.state_dir / "state.json"
            state = json.loads(path.read_text())
            state["components"][recipe.name]["pid"] = pid
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(path)
        return pid

    def reap(self) -> None:
        """Collect the exit status of children we started, so they do not stay zombies."""
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass

    def run(self, interval: float = 1.0) -> None:
        self.learn()
        stop = False

        def on_term(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_term)
        while not stop:
            self.reap()
            self.check(time.monotonic())
            time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devcluster.supervisor", description=__doc__)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--cluster-dir", type=Path, required=True)
    args = p.parse_args(argv)
    Supervisor(args.state_dir, args.cluster_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
