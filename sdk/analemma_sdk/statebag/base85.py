"""Base85 in the alphabet of RFC 1924 / git binary patches, as ``base64.b85encode`` and
``base64.b85decode`` write and read it, byte for byte.

Written here because importing ``base64`` imports ``re`` (and with it ``enum``, ``functools``
and ``collections``): about 7 ms of a Lambda's cold start, for two small functions.
"""

from __future__ import annotations

import struct

ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
_CHARS = [bytes((c,)) for c in ALPHABET]
_pairs: list[bytes] = []  # 85 * 85 two-character digits, built by the first encode
# Character -> digit value, for bytes.translate; 0xFF marks a character outside the alphabet.
_INVALID = 0xFF
_DIGITS = bytearray([_INVALID]) * 256
for _value, _char in enumerate(ALPHABET):
    _DIGITS[_char] = _value
_TABLE = bytes(_DIGITS)
del _DIGITS, _value, _char
_MAX_WORD = 0xFFFFFFFF


def encode(data: bytes) -> bytes:
    """Five characters per four bytes; the last group shortened as the input is."""
    padding = -len(data) % 4
    if padding:
        data = data + b"\0" * padding
    words = struct.unpack(f">{len(data) // 4}I", data)
    pairs, chars = _pairs, _CHARS
    if not pairs:
        pairs.extend([a + b for a in chars for b in chars])
    out = b"".join([pairs[word // 614125] + pairs[word // 85 % 7225] + chars[word % 85] for word in words])
    return out[:-padding] if padding else out


def decode(text: bytes) -> bytes:
    """The bytes of ``text``; ValueError on a character outside the alphabet or a group
    over 2**32 - 1, naming the position."""
    padding = -len(text) % 5
    if padding:
        text = text + b"~" * padding
    digits = text.translate(_TABLE)  # one C pass: every character to its value
    bad = digits.find(_INVALID)
    # Groups are checked in order, as base64 does: an overflow before a bad character wins.
    whole = digits if bad < 0 else digits[: bad - bad % 5]
    groups = iter(whole)
    words = [
        (((a * 85 + b) * 85 + c) * 85 + d) * 85 + e
        for a, b, c, d, e in zip(groups, groups, groups, groups, groups, strict=False)  # whole groups
    ]
    if words and max(words) > _MAX_WORD:
        start = next(i for i, word in enumerate(words) if word > _MAX_WORD) * 5
        raise ValueError(f"base85 overflow in hunk starting at byte {start}")
    if bad >= 0:
        raise ValueError(f"bad base85 character at position {bad}")
    out = struct.pack(f">{len(words)}I", *words)
    return out[:-padding] if padding else out
