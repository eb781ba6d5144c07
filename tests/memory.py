"""Memory of this test process (the apps under test run in it): growth in MiB,
peak included, read from /proc/self/status."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MIB = 1 << 20


def _status_mib(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, f"no {field} in /proc/self/status"
    return int(match.group(1)) / 1024


@dataclass
class Growth:
    rss_before: float = 0.0
    rss_after: float = 0.0
    peak: float = 0.0  # VmHWM during the block

    @property
    def rss(self) -> float:
        return self.rss_after - self.rss_before

    @property
    def peak_over_start(self) -> float:
        return self.peak - self.rss_before


@contextmanager
def memory_growth() -> Iterator[Growth]:
    """VmRSS before and after the block, and the peak (VmHWM reset at the start)."""
    # Writing 5 to clear_refs resets the high-water mark to the current RSS.
    Path("/proc/self/clear_refs").write_text("5")
    growth = Growth(rss_before=_status_mib("VmRSS"))
    yield growth
    growth.rss_after = _status_mib("VmRSS")
    growth.peak = _status_mib("VmHWM")


@cache
def zero_bomb(inflated_mib: int, encoding: str = "gzip") -> bytes:
    """A valid gzip ("gzip") or zlib ("deflate") stream of `inflated_mib` MiB of zeros,
    about 1 KiB per MiB; built from one full-flushed compressed block repeated, so it
    costs milliseconds instead of compressing the whole of it."""
    block = bytes(MIB)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush the compressor starts afresh: every block compresses alike.
    piece = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    raw = piece * inflated_mib + comp.flush(zlib.Z_FINISH)
    if encoding == "deflate":
        adler = 1
        for _ in range(inflated_mib):
            adler = zlib.adler32(block, adler)
        return b"\x78\xda" + raw + struct.pack(">I", adler)
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + raw + struct.pack("<II", crc, (inflated_mib * MIB) & 0xFFFFFFFF)
