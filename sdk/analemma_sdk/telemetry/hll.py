"""HyperLogLog sketches of unit ids, as the telemetry wire format carries them (p = 8).

Version 2, what this SDK sends: a unit's hash is its bucketing hash for the flag
(``bucketing.bucket_hash``, 60 bits), so a unit the evaluation bucketed costs no hash of its
own; register = its low 8 bits, rank = trailing zeros of the other 52 plus one, at most 52
(``bucketing.sketch_add``; ``flags.tally`` fills the registers as evaluations happen). On the wire a
version-2 sketch is one version byte (2) then the 256 registers, in base64.

Version 1, what SDKs before it sent: ``sha256(unit)``'s first 8 bytes, register = the first
byte, rank at most 57, the 256 registers alone. ``Sketch.from_base64`` reads both; the two are
never merged (their registers mean different hashes).

Two sketches of one version merge by element-wise max, so a unit counted in several batches or
processes counts once. Standard error about 1.04 / sqrt(256) = 6.5 %.
"""

from __future__ import annotations

from ..bucketing import bucket_hashes, sketch_add

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Iterable

P = 8
M = 1 << P
SKETCH_VERSION = 2
MAX_RANK = 52  # version 2's
ALPHA = 0.7213 / (1 + 1.079 / M)
STANDARD_ERROR = 1.04 / 16.0  # 1.04 / sqrt(256)
MAX_RANKS = {1: 57, SKETCH_VERSION: MAX_RANK}

__all__ = ["M", "SKETCH_VERSION", "STANDARD_ERROR", "Sketch", "encode_registers", "merge_into"]


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


def encode_registers(registers: bytes | bytearray) -> str:
    """A version-2 sketch's wire text: base64 of the version byte and the registers."""
    import binascii  # builtin

    return binascii.b2a_base64(bytes((SKETCH_VERSION,)) + bytes(registers), newline=False).decode("ascii")


def merge_into(mine: bytearray, theirs: bytes | bytearray) -> None:
    """Element-wise max of ``theirs`` into ``mine`` (same version), in place."""
    mine[:] = bytes(map(max, mine, theirs))


class Sketch:
    """256 registers of one version; ``add`` a flag's bucketing text (``f"{flag}.{salt}.{unit}"``)
    or ``add_hash`` a bucketing hash, ``merge`` another sketch, ``estimate`` the count."""

    __slots__ = ("registers", "version")

    def __init__(self, registers: bytes | bytearray | None = None, version: int = SKETCH_VERSION) -> None:
        if registers is not None and len(registers) != M:
            raise ValueError(f"a sketch has {M} registers, not {len(registers)}")
        self.registers = bytearray(registers) if registers is not None else bytearray(M)
        self.version = version

    def add(self, text: str) -> None:
        self.update((text,))

    def add_hash(self, h: int) -> None:
        sketch_add(self.registers, (h,))

    def update(self, texts: Iterable[str]) -> Sketch:
        """Add many bucketing texts (faster than one ``add`` each); returns self."""
        self._writable()
        sketch_add(self.registers, bucket_hashes(texts))
        return self

    def merge(self, other: Sketch | bytes | bytearray) -> Sketch:
        """Element-wise max, in place; returns self. Sketches of two versions do not merge."""
        if isinstance(other, Sketch):
            if other.version != self.version:
                raise ValueError(f"a version-{self.version} sketch cannot merge version {other.version}")
            other = other.registers
        if len(other) != M:
            raise ValueError(f"a sketch has {M} registers, not {len(other)}")
        merge_into(self.registers, other)
        return self

    def estimate(self) -> float:
        return estimate_registers(self.registers)

    def to_base64(self) -> str:
        self._writable()
        return encode_registers(self.registers)

    @classmethod
    def from_base64(cls, text: str) -> Sketch:
        """A sketch of either version as the wire carries it."""
        import binascii

        data = binascii.a2b_base64(text)
        version, registers = (1, data) if len(data) == M else (data[0] if data else 0, data[1:])
        if len(registers) != M or version not in MAX_RANKS or max(registers) > MAX_RANKS[version]:
            raise ValueError("not a p=8 HyperLogLog sketch of a known version")
        return cls(registers, version)

    def _writable(self) -> None:
        if self.version != SKETCH_VERSION:
            raise ValueError(f"a version-{self.version} sketch is read-only here")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sketch) and (self.version, self.registers) == (
            other.version,
            other.registers,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<Sketch v{self.version} ~{self.estimate():.0f} units>"
