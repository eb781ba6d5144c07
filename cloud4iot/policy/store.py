"""The policy in force, and hot reload that keeps the last good one.

Polling the file's content (not inotify) follows a ConfigMap's `..data` symlink
swap, editors that replace files, and network filesystems alike; a hash makes an
unchanged file free to re-read.

`last_error` tells the truth about the file as it is now: it is set by any refusal
(whatever went wrong while reading or parsing) and cleared by the next good read,
even when the good bytes are the very ones in force (a deleted file restored).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloud4iot.filewatch import watch_file
from cloud4iot.policy.loader import (
    LoadedPolicy,
    PolicyError,
    Problem,
    load_policy,
    parse_policy,
    read_bounded,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PolicyStore:
    path: Path
    current: LoadedPolicy
    last_error: PolicyError | None = None
    reloads_ok: int = 0
    reloads_failed: int = 0
    # What the last check saw: the sha256 of the bytes, or why they could not be read.
    _seen_digest: str = field(default="", repr=False)

    @classmethod
    def open(cls, path: Path) -> PolicyStore:
        """Load at start: a bad policy here is fatal (there is no last good one)."""
        loaded = load_policy(path)
        return cls(path=path, current=loaded, _seen_digest=loaded.digest)

    def check_once(self) -> str:
        """Re-read the file; apply it if it changed and is valid. Blocking I/O.

        Returns "unchanged", "applied" or "refused".
        """
        try:
            raw = read_bounded(self.path)
        except OSError as exc:
            # Mid-swap or deleted: keep the policy in force, try again next poll. Reported
            # once per reason; and what is read next is parsed even if its bytes are the
            # ones in force, so that the refusal clears.
            why = f"cannot read: {exc.strerror or exc}"
            if why == self._seen_digest:
                return "unchanged"
            self._seen_digest = why
            self._fail(PolicyError([Problem(str(self.path), 1, "", why)]))
            return "refused"
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._seen_digest:
            return "unchanged"
        self._seen_digest = digest
        try:
            loaded = parse_policy(raw, source=str(self.path))
        except PolicyError as exc:
            self._fail(exc)
            return "refused"
        except Exception as exc:
            # A loader bug must still show as a refusal in /readyz, not as a clean state.
            log.exception("policy %s could not be loaded", self.path)
            why = f"could not be loaded: {type(exc).__name__}: {exc}"
            self._fail(PolicyError([Problem(str(self.path), 1, "", why)]))
            return "refused"
        self.current, self.last_error = loaded, None
        self.reloads_ok += 1
        log.info("policy reloaded: %s", loaded.version)
        return "applied"

    def _fail(self, exc: PolicyError) -> None:
        self.last_error = exc
        self.reloads_failed += 1
        log.error("policy %s refused, keeping %s:\n%s", self.path, self.current.version, exc)

    async def watch(self, interval: float, on_result: Callable[[str], None]) -> None:
        """Re-check the file every `interval` seconds, forever, reading it off the event
        loop; `on_result` gets "applied" or "refused" (not "unchanged")."""
        await watch_file(
            interval,
            self.check_once,
            on_result,
            what="policy reload",
            keeps="the policy in force",
        )
