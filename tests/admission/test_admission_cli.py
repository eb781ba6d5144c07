"""The extender's admission flags: what goes together, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from admission_cases import POLICY_PATH
from aiohttp import web

from devcluster.certs import make_mtls_set
from extender import cli
from extender.admission.server import admission_listener
from extender.cli import _extender_parser, extender_main
from extender.runtime import RUNTIME
from extender.settings import DEFAULT_CANDIDATES


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[web.Application]:
    """The apps extender_main would serve, captured instead of served (a flag check
    that let a bad value through must fail here, not start a server)."""
    apps: list[web.Application] = []
    monkeypatch.setattr(web, "run_app", lambda app, **_: apps.append(app))
    monkeypatch.setattr(cli, "_tune_gc", lambda: None)  # process-wide: not in a test run
    monkeypatch.setattr(cli, "configure_logging", lambda level, fmt="text": None)
    return apps


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--admission-port", "8443"], "go together"),
        (["--admission-port", "8443", "--admission-cert", "c.pem"], "go together"),
        (["--admission-cert", "c.pem", "--admission-key", "k.pem"], "go together"),
        (["--candidates", "-1"], "--candidates must be 0 or more"),
        (["--candidates", "many"], "invalid int value"),
    ],
)
def test_bad_admission_flags_exit_with_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], served: list[web.Application]
) -> None:
    with pytest.raises(SystemExit) as exited:
        extender_main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert served == []


def test_the_admission_flags_parse_and_narrowing_is_on_by_default() -> None:
    assert _extender_parser().parse_args([]).candidates == DEFAULT_CANDIDATES == 16
    args = _extender_parser().parse_args(
        [
            "--admission-port",
            "8443",
            "--admission-cert",
            "c.pem",
            "--admission-key",
            "k.pem",
            "--candidates",
            "0",
        ]
    )
    assert (args.admission_port, args.admission_cert, args.admission_key, args.candidates) == (
        8443,
        Path("c.pem"),
        Path("k.pem"),
        0,
    )


def test_the_flags_reach_the_settings_and_start_the_listener(
    served: list[web.Application], tmp_path: Path
) -> None:
    made = make_mtls_set(tmp_path)
    cert, key = made.server.cert, made.server.key
    argv = [
        "--policy",
        str(POLICY_PATH),
        "--admission-port",
        "9443",
        "--admission-cert",
        str(cert),
        "--admission-key",
        str(key),
        "--candidates",
        "5",
    ]
    assert extender_main(argv) == 0
    (app,) = served
    settings = app[RUNTIME].settings
    assert (settings.admission_port, settings.admission_cert, settings.admission_key) == (
        9443,
        cert,
        key,
    )
    assert settings.candidates == 5
    assert admission_listener in app.cleanup_ctx


def test_a_bad_admission_certificate_is_a_clean_start_up_error(
    served: list[web.Application], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    argv = ["--policy", str(POLICY_PATH), "--admission-port", "9443"]
    argv += ["--admission-cert", str(cert), "--admission-key", str(key)]
    assert extender_main(argv) == 2
    assert served == []
    assert "cloud4iot-extender:" in capsys.readouterr().err
