"""Shared options are defined once and present, with the same defaults, on every command that had them."""

import argparse

import pytest

from steer_away.cli import build_parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every leaf command, by its full name ('vectors extract')."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                nested = _subparsers(child)
                if nested:
                    out.update({f"{name} {k}": v for k, v in nested.items()})
                else:
                    out[name] = child
    return out


COMMANDS = _subparsers(build_parser())


def _options(command: str) -> dict[str, argparse.Action]:
    return {s: a for a in COMMANDS[command]._actions for s in a.option_strings}


@pytest.mark.parametrize("flag, commands", [
    ("--model", ["generate", "calibrate", "categories check", "vectors extract", "vectors compose",
                 "vectors import-gguf", "serve"]),
    ("--scorer", ["calibrate", "categories check", "vectors compose", "data stats", "profiles build"]),
    ("--score-cache", ["calibrate", "categories check", "vectors compose", "data stats", "profiles build"]),
    ("--prism", ["calibrate", "categories check", "vectors extract", "data stats", "profiles build"]),
    ("--batch-size", ["calibrate", "categories check", "vectors extract"]),
    ("--vectors", ["generate", "calibrate", "serve"]),
    ("--categories", ["generate", "calibrate", "categories check", "serve"]),
])
def test_shared_option_is_the_same_everywhere(flag, commands):
    actions = [_options(c)[flag] for c in commands]
    first = actions[0]
    for action in actions[1:]:
        assert (action.dest, action.default, action.type, action.help) == \
               (first.dest, first.default, first.type, first.help)


def test_defaults_kept():
    parse = build_parser().parse_args
    assert parse(["calibrate"]).scorer == "jigsaw-bilstm"
    assert parse(["calibrate"]).batch_size == 8 and parse(["calibrate"]).max_tokens == 40
    assert parse(["generate", "--prompt", "hi"]).max_tokens == 128
    assert parse(["vectors", "extract"]).seed == 0 and parse(["generate", "--prompt", "hi"]).seed is None


def test_vectors_is_the_name_and_vector_an_alias():
    parse = build_parser().parse_args
    assert parse(["generate", "--prompt", "hi", "--vector", "v"]).vectors == "v"
    assert parse(["generate", "--prompt", "hi", "--vectors", "v"]).vectors == "v"
    assert parse(["serve", "--vectors", "v"]).vectors == "v"
    assert parse(["calibrate", "--vector", "v"]).vectors == "v"


def test_method_argument_flags_come_from_the_argument_dataclasses():
    from steer_away.steering.registry import get_method, method_names

    fields = {f for n in method_names() for f in get_method(n).args.field_help()}
    for command in ("generate", "calibrate"):
        options = _options(command)
        assert {f"--{f.replace('_', '-')}" for f in fields} <= set(options)


def test_debug_is_global():
    assert build_parser().parse_args(["--debug", "methods"]).debug
    assert not build_parser().parse_args(["methods"]).debug
