"""Typed command-line flags, fuzzed: any text is a value in range or argparse's one-line refusal."""

import argparse
import math

from hypothesis import given
from hypothesis import strategies as st

from steer_away.cli import flags

words = st.one_of(st.text(max_size=12), st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "99999", "0x10",
                                                         "", " 3 ", "\udcff", "1_000"]))


def parsed_or_refused(parse, text):
    try:
        return parse(text)
    except argparse.ArgumentTypeError as err:
        assert "\n" not in str(err)
        return None


@given(words)
def test_counts(text):
    value = parsed_or_refused(flags.count(1), text)
    assert value is None or (isinstance(value, int) and value >= 1)


@given(words)
def test_numbers(text):
    value = parsed_or_refused(flags.number(0, 1), text)
    assert value is None or (math.isfinite(value) and 0 <= value <= 1)


@given(words)
def test_ports(text):
    value = parsed_or_refused(flags.port, text)
    assert value is None or 1 <= value <= 65535


@given(words)
def test_texts_and_keys(text):
    for parse in (flags.text, flags.key):
        value = parsed_or_refused(parse, text)
        assert value is None or "\udcff" not in value
    assert parsed_or_refused(flags.key, "  ") is None
