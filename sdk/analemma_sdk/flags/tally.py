"""What telemetry counts per flag outcome, kept inside the compiled flag so that counting an
evaluation costs no lookup, no tuple and no hash of its own.

A ``Tally`` belongs to one outcome of one compiled flag (its value, variant and reason). It
counts with ``next()`` on an ``itertools.count``: one C call, atomic under the GIL, so threads
lose no count and nothing grows per evaluation. Its distinct-unit sketch (wire version 2) takes
each unit's register and rank from the unit's bucketing hash for the flag
(``bucketing.bucket_hash``: the first 60 bits of ``sha1(f"{flag}.{salt}.{unit}")``, or of
``sha1(f"{seed}.{unit}")`` for a seeded flag):

* register = ``h & 255``, rank = trailing zeros of ``h >> 8`` plus one (``bucketing.sketch_add``
  defines it: low bits, because the outcome is decided by the high ones);
* 256 one-byte registers; standard error 1.04 / sqrt(256), about 6.5 %.

A percentage or variant rollout bucketed by the unit has already computed ``h``: the sketch
takes it as it is. The other paths (off, a target, a rule, bucketing by another attribute)
keep the unit id and hash it with the flag's bucketing text later, once per distinct id, every
``PENDING_AT`` ids or when the tally is taken. A batch's reader takes the counts with
``take()``; an evaluation racing a ``take()`` on another thread may land its unit in the sketch
being handed over after it was read (the unit is missed in that batch's estimate, its count is
not).

The hash is per flag (it includes the flag's key and salt, or its seed), which is all a
sketch needs: sketches are merged per flag only. Changing a flag's salt or seed changes every
unit's hash, as it changes every unit's bucket, so a range spanning the change counts a unit
seen on both sides twice.
"""

from __future__ import annotations

from itertools import count  # a builtin module: free at import

from ..bucketing import bucket_hashes, sketch_add

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PENDING_AT", "REGISTERS", "Tally", "rank_table"]

REGISTERS = 256
PENDING_AT = 256  # unit ids kept before they are hashed into the registers


def rank_table() -> bytes:
    """The rank by a hash's low 16 bits, for the evaluation's inline update: trailing zeros of
    bits 8-15 plus one; 0 when they are all zero (a rank over 8: ``sketch_add`` computes it).
    64 KiB, so that a rank is one lookup; made once, with the first flag that sketches units."""
    return b"".join(bytes(((high & -high).bit_length(),)) * 256 for high in range(256))


class Tally:
    """One outcome's count and distinct-unit sketch since the last ``take()``."""

    __slots__ = ("outcome", "prefix", "units", "count", "base", "registers", "pending")

    def __init__(self, outcome: tuple[Any, str | None, str], prefix: str, units: bool) -> None:
        self.outcome = outcome  # (value, variant, reason), the flag's shared tuple
        self.prefix = prefix  # the flag's bucketing text before the unit id
        self.units = units  # whether to sketch units at all
        self.count = count()  # next(self.count) counts one evaluation
        self.base = 0  # the counter's value the last take() left
        self.registers: bytearray | None = None  # allocated with the window's first unit
        self.pending: list[str] = []

    def add(self, unit: str | None) -> None:
        """Count an evaluation that computed no bucketing hash for its unit."""
        next(self.count)
        if unit is not None and self.units:
            pending = self.pending
            pending.append(unit)
            if len(pending) >= PENDING_AT:
                self.absorb()

    def start(self, h: int) -> None:
        """The window's first unit with a hash: the registers, then the unit."""
        registers = self.registers
        if registers is None:
            registers = self.registers = bytearray(REGISTERS)
        sketch_add(registers, (h,))

    def absorb(self) -> None:
        """Hash the pending unit ids into the registers, each distinct id once."""
        pending = self.pending
        taken = pending[:]
        if not taken:
            return
        del pending[: len(taken)]  # not clear(): ids appended meanwhile stay
        registers = self.registers
        if registers is None:
            registers = self.registers = bytearray(REGISTERS)
        sketch_add(registers, bucket_hashes(map(self.prefix.__add__, set(taken))))

    def take(self) -> tuple[int, bytearray | None]:
        """(evaluations since the last take, the sketch's registers or None), and start again."""
        self.absorb()
        seen = next(self.count)  # this read consumes one value: base skips it
        evaluations = seen - self.base
        self.base = seen + 1
        registers, self.registers = self.registers, None
        return evaluations, registers

    def forget(self) -> None:
        """Drop what was counted (a forked child: its parent reports it)."""
        del self.pending[:]
        self.take()
