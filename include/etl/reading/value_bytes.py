"""The bytes of an Arrow string or binary array's values, to rule a check out in one pass.

Cleaning asks of every column whether some value holds a NUL, a backslash, a line break or a character
beyond ASCII. Most columns hold none: one `memchr` (or `bytes.isascii`) over the values' bytes answers
for the whole array, where a per-value kernel walks every value. The answer is a prefilter, never the
check itself: bytes of null slots are included, so a "yes" may be a false alarm that the exact check
(a pyarrow kernel on the values) then settles; a "no" is always right.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_LARGE = (pa.large_string(), pa.large_binary())


def value_bytes(values: pa.Array) -> bytes:
    """All value bytes of `values` (a string or binary array, slices included), concatenated.

    Shape: one `bytes` of the array's data between its first and last offset (null slots' bytes, if any,
    included). Raises TypeError for an array that is not string or binary.
    """
    if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type) or values.type in _LARGE):
        raise TypeError(f"value_bytes needs a string or binary array, not {values.type}")
    if len(values) == 0:
        return b""
    offsets, data = values.buffers()[1:3]
    if data is None:
        return b""
    width = np.int64 if values.type in _LARGE else np.int32
    size = np.dtype(width).itemsize
    first, last = np.frombuffer(offsets, dtype=width, count=len(values) + 1, offset=values.offset * size)[[0, -1]]
    return bytes(data.slice(int(first), int(last - first)).to_pybytes())


def may_contain(values: pa.Array, *needles: bytes) -> bool:
    """False if no value of `values` holds any of `needles` (certain); True if some might."""
    data = value_bytes(values)
    return any(needle in data for needle in needles)


def all_ascii(values: pa.Array) -> bool:
    """True if every value of `values` is ASCII (certain); False if some might not be."""
    return value_bytes(values).isascii()
