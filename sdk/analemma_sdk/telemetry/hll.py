"""HyperLogLog sketches of unit ids, as the telemetry wire format defines them (p = 8).

For a unit id ``u``: ``h`` = the first 8 bytes of ``sha256(u.encode())`` (big-endian); the
register is ``h >> 56`` (the first byte) and the rank is the number of leading zeros of the
other 56 bits plus one, at most 57. A sketch is its 256 one-byte registers; two merge by
element-wise max, so a unit counted in several batches or processes counts once. Standard
error about 1.04 / sqrt(256) = 6.5 %.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


def _sha256() -> Any:
    """The interpreter's own sha256: twice as fast as OpenSSL's on inputs this short."""
    try:
        return __import__("_sha256").sha256
    except ImportError:  # pragma: no cover - builds without it
        import hashlib

        return hashlib.sha256


sha256: Any = _sha256()

P = 8
M = 1 << P
MAX_RANK = 65 - P  # 57
ALPHA = 0.7213 / (1 + 1.079 / M)

__all__ = ["M", "Sketch", "position", "update"]


_digest: Any = __import__("_operator").methodcaller("digest")
# The rank when the second byte of the hash is not zero (255 times in 256): 9 - its bit length.
_RANK = bytes([0] + [9 - byte.bit_length() for byte in range(1, 256)])


def update(registers: bytearray, units: Iterable[str]) -> None:
    """Add unit ids to ``registers``: the loops that hash run in C (``map``), so a unit costs
    about one sha256 and a few bytecodes."""
    units = list(units)
    try:
        digests = list(map(_digest, map(sha256, map(str.encode, units))))
    except (UnicodeEncodeError, TypeError):  # a lone surrogate, or not text: one at a time
        digests = []
        for unit in units:
            if isinstance(unit, str):
                digests.append(sha256(unit.encode("utf-8", "surrogatepass")).digest())
    for digest in digests:
        second = digest[1]
        rank = _RANK[second] if second else MAX_RANK - int.from_bytes(digest[1:8], "big").bit_length()
        index = digest[0]
        if rank > registers[index]:
            registers[index] = rank


def position(unit: str) -> int:
    """``register << 8 | rank`` of one unit id."""
    digest = sha256(unit.encode("utf-8", "surrogatepass")).digest()
    rest = int.from_bytes(digest[1:8], "big")
    return int(digest[0]) << 8 | (MAX_RANK - rest.bit_length())


def estimate_registers(registers: bytes | bytearray) -> float:
    """The standard HLL estimate, with linear counting for small cardinalities."""
    import math  # a builtin module: cheap, and only when an estimate is asked for

    harmonic = 0.0
    zeros = 0
    for rank in registers:
        harmonic += 2.0**-rank
        if not rank:
            zeros += 1
    raw = ALPHA * M * M / harmonic
    if raw <= 2.5 * M and zeros:
        return M * math.log(M / zeros)
    return raw


class Sketch:
    """256 registers; ``add`` a unit id, ``merge`` another sketch, ``estimate`` the count."""

    __slots__ = ("registers",)

    def __init__(self, registers: bytes | bytearray | None = None) -> None:
        if registers is not None and len(registers) != M:
            raise ValueError(f"a sketch has {M} registers, not {len(registers)}")
        self.registers = bytearray(registers) if registers is not None else bytearray(M)

    def add(self, unit: str) -> None:
        cell = position(unit)
        index, rank = cell >> 8, cell & 0xFF
        if rank > self.registers[index]:
            self.registers[index] = rank

    def update(self, units: Iterable[str]) -> Sketch:
        """Add many unit ids (faster than one ``add`` each); returns self."""
        update(self.registers, units)
        return self

    def merge(self, other: Sketch | bytes | bytearray) -> Sketch:
        """Element-wise max, in place; returns self."""
        theirs = other.registers if isinstance(other, Sketch) else other
        if len(theirs) != M:
            raise ValueError(f"a sketch has {M} registers, not {len(theirs)}")
        mine = self.registers
        for index, rank in enumerate(theirs):
            if rank > mine[index]:
                mine[index] = rank
        return self

    def estimate(self) -> float:
        return estimate_registers(self.registers)

    def to_base64(self) -> str:
        import binascii  # builtin

        return binascii.b2a_base64(bytes(self.registers), newline=False).decode("ascii")

    @classmethod
    def from_base64(cls, text: str) -> Sketch:
        import binascii

        registers = binascii.a2b_base64(text)
        if len(registers) != M or max(registers) > MAX_RANK:
            raise ValueError("not a p=8 HyperLogLog sketch")
        return cls(registers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sketch) and self.registers == other.registers

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<Sketch ~{self.estimate():.0f} units>"
