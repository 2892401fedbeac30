"""value_bytes: the prefilter is never wrong when it says "no", on slices, nulls and every string type."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from include.etl.reading.value_bytes import all_ascii, may_contain, value_bytes

TYPES = [pa.string(), pa.large_string(), pa.binary(), pa.large_binary()]


def _array(values: list[str | None], kind: pa.DataType) -> pa.Array:
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return pa.array([None if v is None else v.encode() for v in values], kind)
    return pa.array(values, kind)


@pytest.mark.parametrize("kind", TYPES)
def test_the_bytes_are_the_values_of_a_slice_only(kind: pa.DataType) -> None:
    values = _array(["a\\b", "cd", None, "é\x00", "tail\n"], kind)
    assert value_bytes(values) == "a\\bcdé\x00tail\n".encode()
    middle = values.slice(1, 2)  # "cd", None: the neighbours' backslash, NUL and line break are outside
    assert value_bytes(middle) == b"cd"
    assert not may_contain(middle, b"\\", b"\x00", b"\n")
    assert all_ascii(middle)
    assert may_contain(values.slice(3), b"\x00")
    assert not all_ascii(values.slice(3, 1))


@pytest.mark.parametrize("kind", TYPES)
def test_empty_and_all_null_arrays_hold_nothing(kind: pa.DataType) -> None:
    for values in (pa.array([], kind), pa.nulls(3, kind), _array(["x", "y"], kind).slice(2)):
        assert value_bytes(values) == b""
        assert all_ascii(values)
        assert not may_contain(values, b"\x00")


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError, match="string or binary"):
        value_bytes(pa.array([1, 2]))


@given(
    st.lists(st.one_of(st.none(), st.text(alphabet="ab \\\x00\n\r\té\u00a0", max_size=6)), max_size=12),
    st.integers(0, 12),
    st.integers(0, 12),
)
def test_a_no_is_always_right(values: list[str | None], start: int, length: int) -> None:
    """Against pyarrow's own kernels on the same slice: "no" from the prefilter means no value matches."""
    array = pa.array(values, pa.string()).slice(start, length)
    for needle in ("\\", "\x00", "\n", "\r"):
        found = pc.any(pc.match_substring(array, needle)).as_py() or False
        assert may_contain(array, needle.encode()) or not found
        if not array.null_count:  # no null slots: the bytes are exactly the values'
            assert may_contain(array, needle.encode()) == found
    ascii_kernel = pc.all(pc.string_is_ascii(array)).as_py() is not False
    assert all_ascii(array) == ascii_kernel
