"""RPA resolution against the published vectors, and the resolver's matching."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from gateway_monitor.irk import Resolver, aes128_encrypt, ah, is_resolvable, make_rpa, parse_irk

SPEC_IRK = parse_irk("ec0234a357c8ad05341010a60a397d9b")


def test_aes128_matches_fips197_appendix_c1() -> None:
    key = bytes(range(16))
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert aes128_encrypt(key, plain).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


def test_ah_matches_the_core_spec_sample_data() -> None:
    # Vol 3 Part H, appendix D.7: prand 0x708194 -> ah 0x0dfbaa
    assert ah(SPEC_IRK, bytes.fromhex("708194")).hex() == "0dfbaa"


def test_resolver_maps_spec_rpa_to_its_device_and_ignores_others() -> None:
    other = parse_irk("00112233445566778899aabbccddeeff")
    resolver = Resolver([("watch", other), ("band", SPEC_IRK)])
    assert resolver.resolve("70:81:94:0D:FB:AA") == "band"
    assert resolver.resolve("70:81:94:0D:FB:AB") is None  # one bit off the hash
    assert resolver.resolve("F0:81:94:0D:FB:AA") is None  # static random, not an RPA


def test_key_written_in_reverse_byte_order_still_resolves() -> None:
    assert Resolver([("band", SPEC_IRK[::-1])]).resolve("70:81:94:0D:FB:AA") == "band"


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=3, max_size=3))
def test_generated_rpas_resolve_to_their_own_key_only(irk: bytes, prand: bytes) -> None:
    rpa = make_rpa(irk, prand)
    assert is_resolvable(rpa)
    stranger = os.urandom(16)
    assert Resolver([("mine", irk)]).resolve(rpa) == "mine"
    assert Resolver([("stranger", stranger)]).resolve(rpa) in (None, "stranger")
    # a 24-bit collision with a random key is ~1e-7: treat any match as a bug
    assert Resolver([("stranger", stranger)]).resolve(rpa) is None


def test_a_flood_of_random_resolvable_addresses_costs_a_bounded_number_of_blocks() -> None:
    now = [0.0]
    keys = [(f"d{i}", os.urandom(16)) for i in range(9)] + [("band", SPEC_IRK)]
    resolver = Resolver(keys, max_blocks_per_second=400, clock=lambda: now[0])
    flood = [make_rpa(os.urandom(16), os.urandom(3)) for _ in range(10_000)]
    for address in flood:  # all within one instant
        assert resolver.resolve(address) is None
    assert resolver.blocks <= 400  # 20 blocks an address (10 keys, two byte orders)
    assert resolver.deferred >= 10_000 - 20
    # the real device, heard while the flood has eaten the budget: deferred, not cached
    assert resolver.resolve("70:81:94:0D:FB:AA") is None
    now[0] += 0.05  # 20 blocks of budget back
    assert resolver.resolve("70:81:94:0D:FB:AA") == "band"
    # a second of flood costs at most a second of budget
    before = resolver.blocks
    for i, address in enumerate(flood):
        now[0] = 0.05 + i / 10_000
        resolver.resolve(address)
    assert resolver.blocks - before <= 400 + 20
