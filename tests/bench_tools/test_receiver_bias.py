"""The receiver-bias bench's own logic: what a drawn site does to a recording."""

from __future__ import annotations

from bench.receiver_bias import Site, draw, pooled, shifted, verdicts
from replay.inputs import read_csv_adverts, read_truth
from tests.replay.helpers import DATA, recording


def test_a_site_offsets_each_gateways_rssi_and_drops_its_share() -> None:
    rec = recording({"gw-a": (-60, -60), "gw-b": (-70, -70)}, seconds=600, noise=0.0)
    site = Site(gain={"gw-a": 4.4, "gw-b": -2.6}, loss={"gw-a": 0.0, "gw-b": 0.5}, seed=3)
    out = shifted(rec, site)
    a = [x for x in out.adverts if x.gateway == "gw-a"]
    b = [x for x in out.adverts if x.gateway == "gw-b"]
    assert {x.rssi for x in a} == {-56}
    assert {x.rssi for x in b} == {-73}
    heard_a = sum(x.gateway == "gw-a" for x in rec.adverts)
    heard_b = sum(x.gateway == "gw-b" for x in rec.adverts)
    assert len(a) == heard_a  # no loss: every reception kept
    assert 0.4 * heard_b < len(b) < 0.6 * heard_b
    assert [x.t for x in out.adverts] == sorted(x.t for x in out.adverts)


def test_draws_are_seeded_and_bounded() -> None:
    gws = ["anchor-1", "anchor-2", "anchor-3"]
    one, again, other = draw(gws, 4.7, 0.3, 1), draw(gws, 4.7, 0.3, 1), draw(gws, 4.7, 0.3, 2)
    assert one == again
    assert one != other
    assert all(-4.7 <= g <= 4.7 for g in one.gain.values())
    assert all(0.0 <= f <= 0.3 for f in one.loss.values())


def test_no_shift_replays_the_recording_as_recorded() -> None:
    # calib4 alone (the shortest run): a site with no offset and no loss must give the
    # figures of the plain replay, so what the bench reports is the shift's effect.
    rec = read_csv_adverts(DATA / "calib4.adverts.csv.gz")
    truth = read_truth(DATA / "calib4.truth.csv.gz")
    none = Site(gain={}, loss={}, seed=1)
    assert shifted(rec, none).adverts == rec.adverts
    row = pooled({"calib4": (rec, truth)}, none)
    shifted_row = pooled({"calib4": (rec, truth)}, draw(["anchor-1", "anchor-2"], 6.0, 0.0, 5))
    assert row != shifted_row  # the draw does reach the chain
    checks = verdicts(row)
    assert set(checks) == {
        "p90 below the baseline's",
        "fewer moves than the baseline",
        "< 2 % far below",
    }
