"""What the fuzz tests throw at our readers: any JSON-like value (with non-finite numbers, lone surrogates,
huge integers, deep nesting), random bytes, truncations of a valid file; and the one property they check."""

import math

from hypothesis import strategies as st

from steer_away.errors import InputError

texts = st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "\ud800", "tea \udfff time", "\x00", "é" * 3]))
numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 10**30, math.nan, math.inf]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(texts, inner, max_size=4)), max_leaves=12)


def structures(keys: list[str]) -> st.SearchStrategy[dict]:
    """Objects of our files' own keys (so the reader gets past 'unknown key') with values of any type."""
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


def truncations(data: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(min_value=0, max_value=max(len(data) - 1, 0)).map(lambda n: data[:n])


def flips(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with one byte changed."""
    return st.tuples(st.integers(0, max(len(data) - 1, 0)), st.integers(0, 255)).map(
        lambda ib: data[:ib[0]] + bytes([ib[1]]) + data[ib[0] + 1:])


def one_line_input_error(err: BaseException) -> None:
    """The property: a refusal is our InputError family (or a missing file), in one line."""
    assert isinstance(err, (InputError, FileNotFoundError)), f"{type(err).__name__}: {err}"
    assert "\n" not in str(err).strip(), str(err)
