"""Resolvable private addresses (RPA): match a rotating BLE address to a device's IRK.

Bluetooth Core spec, Vol 3 Part H, 2.2.2: an RPA is ``prand(24 bits) || hash(24 bits)``
with the two top bits of prand = 0b01, and ``hash = ah(IRK, prand)`` where
``ah(k, r) = AES-128(k, 0^104 || r) mod 2^24``.

One AES-128 block per (address, key) pair is all we need. The gateway image installs
no AES library: `cryptography` (the extender's, for `cloud4iot certs`) ships no wheels
for 32-bit ARM, one of the gateway image's platforms, and would need a Rust build there;
so a small FIPS-197 encryptor lives here, checked against FIPS-197 appendix C.1 and the
Core spec's sample data (tests/gateway_monitor/test_irk.py). Results are cached per
address, so each rotating address is resolved once, not per advert; and the blocks
computed are bounded per second (`max_blocks_per_second`), so a flood of random
resolvable addresses costs the gateway a bounded share of a core, whatever it sends.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

# ~0.16 ms a block here in CPython: at most ~1/3 of a core on resolving, whatever is on air.
MAX_BLOCKS_PER_SECOND = 2000


def _xtime(b: int) -> int:
    b <<= 1
    return (b ^ 0x11B) if b & 0x100 else b


def _gmul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a = _xtime(a)
        b >>= 1
    return out


def _make_sbox() -> bytes:
    # Multiplicative inverse in GF(2^8) followed by the FIPS-197 affine transform.
    inv = [0] * 256
    for x in range(1, 256):
        for y in range(1, 256):
            if _gmul(x, y) == 1:
                inv[x] = y
                break
    box = bytearray(256)
    for x in range(256):
        b = inv[x]
        s = b
        for shift in range(1, 5):
            s ^= ((b << shift) | (b >> (8 - shift))) & 0xFF
        box[x] = s ^ 0x63
    return bytes(box)


_SBOX = _make_sbox()
_MUL2 = bytes(_gmul(x, 2) for x in range(256))
_MUL3 = bytes(_gmul(x, 3) for x in range(256))


def _expand_key(key: bytes) -> list[bytes]:
    words = [key[i : i + 4] for i in range(0, 16, 4)]
    rcon = 1
    for i in range(4, 44):
        temp = words[i - 1]
        if i % 4 == 0:
            temp = bytes([_SBOX[temp[1]] ^ rcon, _SBOX[temp[2]], _SBOX[temp[3]], _SBOX[temp[0]]])
            rcon = _xtime(rcon)
        words.append(bytes(a ^ b for a, b in zip(words[i - 4], temp, strict=True)))
    return [b"".join(words[r * 4 : r * 4 + 4]) for r in range(11)]


def aes128_encrypt(key: bytes, block: bytes) -> bytes:
    """AES-128 of one 16-byte block (FIPS-197); big-endian bytes in and out."""
    if len(key) != 16 or len(block) != 16:
        raise ValueError("AES-128 needs a 16-byte key and a 16-byte block")
    return _encrypt(_expand_key(key), block)


def _encrypt(round_keys: list[bytes], block: bytes) -> bytes:
    s = [b ^ k for b, k in zip(block, round_keys[0], strict=True)]
    for rnd in range(1, 11):
        s = [_SBOX[b] for b in s]
        # ShiftRows: the state is column-major, row r rotates left by r.
        s = [s[(i + 4 * (i % 4)) % 16] for i in range(16)]
        if rnd != 10:
            mixed = []
            for c in range(4):
                a0, a1, a2, a3 = s[4 * c : 4 * c + 4]
                mixed += [
                    _MUL2[a0] ^ _MUL3[a1] ^ a2 ^ a3,
                    a0 ^ _MUL2[a1] ^ _MUL3[a2] ^ a3,
                    a0 ^ a1 ^ _MUL2[a2] ^ _MUL3[a3],
                    _MUL3[a0] ^ a1 ^ a2 ^ _MUL2[a3],
                ]
            s = mixed
        s = [b ^ k for b, k in zip(s, round_keys[rnd], strict=True)]
    return bytes(s)


def ah(irk: bytes, prand: bytes) -> bytes:
    """The spec's random address hash: 3 bytes, most significant first."""
    if len(prand) != 3:
        raise ValueError("prand is 3 bytes")
    return aes128_encrypt(irk, bytes(13) + prand)[-3:]


def _ah_scheduled(round_keys: list[bytes], prand: bytes) -> bytes:
    return _encrypt(round_keys, bytes(13) + prand)[-3:]


def address_bytes(address: str) -> bytes:
    """``AA:BB:CC:DD:EE:FF`` -> 6 bytes, most significant (AA) first."""
    raw = bytes.fromhex(address.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"not a BLE address: {address!r}")
    return raw


def is_resolvable(address: str) -> bool:
    """True for resolvable private addresses (top two bits 0b01)."""
    try:
        return address_bytes(address)[0] >> 6 == 0b01
    except ValueError:
        return False


def make_rpa(irk: bytes, prand: bytes) -> str:
    """Build an RPA for ``irk`` (tests and the demo's synthetic wearables)."""
    prand = bytes([(prand[0] & 0x3F) | 0x40]) + prand[1:3]
    return ":".join(f"{b:02X}" for b in prand + ah(irk, prand))


def parse_irk(text: str) -> bytes:
    """32 hex digits (optionally with colons or spaces) -> 16 bytes, as written."""
    raw = bytes.fromhex(text.replace(":", "").replace(" ", ""))
    if len(raw) != 16:
        raise ValueError("an IRK is 16 bytes (32 hex digits)")
    return raw


class Resolver:
    """Maps addresses seen on air to Device names through the IRKs of tracked Devices.

    Keys are tried as written and byte-reversed: tools print IRKs in both orders (the
    spec's sample data is most significant byte first, SMP carries it little-endian), and
    a false match needs a 24-bit hash collision either way.
    """

    def __init__(
        self,
        keys: Iterable[tuple[str, bytes]] = (),
        cache_size: int = 4096,
        max_blocks_per_second: float = MAX_BLOCKS_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Key schedules expanded once: resolving then costs one block per key and order.
        self._keys: list[tuple[str, list[bytes]]] = []
        for name, irk in keys:
            self._keys.append((name, _expand_key(irk)))
            self._keys.append((name, _expand_key(irk[::-1])))
        self._cache: OrderedDict[str, str | None] = OrderedDict()
        self._cache_size = cache_size
        # A token bucket of AES blocks, one second deep (at least one address deep).
        self._rate = max_blocks_per_second
        self._depth = max(max_blocks_per_second, float(len(self._keys)))
        self._clock = clock
        self._tokens = self._depth
        self._refilled = clock()
        self.blocks = 0  # computed so far
        self.deferred = 0  # addresses not resolved for want of budget (heard again: retried)

    def resolve(self, address: str) -> str | None:
        """The Device name whose IRK generated ``address``, or None."""
        if not self._keys or not is_resolvable(address):
            return None
        if address in self._cache:
            self._cache.move_to_end(address)
            return self._cache[address]
        now = self._clock()
        self._tokens = min(self._depth, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < len(self._keys):
            # Over budget (a flood of random addresses): unresolved this time and not
            # cached, so a real device's next advert (several a second) is tried again.
            self.deferred += 1
            return None
        self._tokens -= len(self._keys)
        self.blocks += len(self._keys)
        raw = address_bytes(address)
        prand, hash_ = raw[:3], raw[3:]
        found = next(
            (name for name, keys in self._keys if _ah_scheduled(keys, prand) == hash_), None
        )
        self._cache[address] = found  # negative answers too: strangers rotate as well
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found
