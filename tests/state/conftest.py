"""Fixtures for live-state tests (the shared `prom_stack` lives in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster import prometheus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fast_policy(tmp_path: Path) -> Path:
    """The default policy with query windows and refresh suited to a 1 s scrape."""
    text = (ROOT / "policies" / "default.yaml").read_text()
    text = text.replace("[30s]", f"[{prometheus.RATE_WINDOW_S}s]").replace(
        "refreshInterval: 5s", "refreshInterval: 1s"
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path
