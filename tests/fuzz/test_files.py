"""Every file reader, fuzzed: a sweep config, a prompt file, a profiles file, a vector file, a GGUF control
vector, PRISM-shaped records and a results store. Each either reads the file or refuses it with one line of
our InputError family; nothing else (a traceback is the command line's 500)."""

import json
import sqlite3
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from steer_away.data.prism import load_prism
from steer_away.data.prompts import read_eval_prompts
from steer_away.evaluation.store import ResultsStore
from steer_away.evaluation.sweep.config import SweepConfig
from steer_away.profiles import load_profiles
from steer_away.steering.vectors.vector import SteeringVector
from tests.fuzz.strategies import flips, one_line_input_error, structures, truncations, values

SWEEP_KEYS = ["name", "out", "device", "scorer", "users_per_sensitivity", "prompts_per_category", "max_new_tokens",
              "batch_size", "holdout", "seed", "mmlu", "utility", "mmlu_subjects", "mmlu_limit", "prompts", "bt_l2"]


def reads_or_refuses(read, data: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        try:
            return read(path)
        except Exception as err:
            one_line_input_error(err)
            return None


def toml_value(value) -> str:
    """A Python value as TOML, where TOML can say it (no null, no NaN in arrays we skip)."""
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value).replace(
        "nan", "nan").replace("inf", "inf")


@given(st.binary(max_size=300))
def test_a_sweep_config_of_random_bytes(data):
    reads_or_refuses(SweepConfig.from_toml, data, ".toml")


@given(structures(SWEEP_KEYS), st.sampled_from(["unsteered", "caa-population", "nope", ""]))
def test_a_sweep_config_with_values_of_any_type(table, method):
    lines = ["[sweep]"]
    for key, value in table.items():
        if value is None or (isinstance(value, (list, dict)) and any(v is None for v in
                                                                     (value if isinstance(value, list) else value.values()))):
            continue  # TOML has no null
        if isinstance(value, dict):
            continue
        try:
            lines.append(f"{key} = {toml_value(value)}")
        except (TypeError, ValueError):
            continue
    lines += ["[[methods]]", f"name = {json.dumps(method)}"]
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    reads_or_refuses(SweepConfig.from_toml, data, ".toml")


@given(st.lists(st.one_of(values, structures(["id", "prompt", "category", "cluster", "conversation_type"])),
                min_size=1, max_size=4))
def test_a_prompt_file_of_any_json_lines(records):
    data = "\n".join(json.dumps(r) for r in records).encode()
    reads_or_refuses(read_eval_prompts, data, ".jsonl")


@given(st.binary(max_size=200))
def test_a_prompt_file_of_random_bytes(data):
    reads_or_refuses(read_eval_prompts, data, ".txt")


PROFILE = {"user_id": "u1", "attributes": ["TOXICITY"], "preferred": [0.1], "rejected": [0.2], "dislike": 0.1,
           "stated_safety": None, "sensitivity": "strict", "ideal_point": [0.0], "n_pairs": 1, "n_conversations": 1}


@given(st.one_of(values, st.fixed_dictionaries({"format": st.just("steer-away/profiles@1"),
                                                "profiles": st.lists(structures(list(PROFILE)), max_size=3)})))
def test_a_profiles_file_of_any_json(payload):
    reads_or_refuses(load_profiles, json.dumps(payload).encode(), ".json")


@given(st.binary(max_size=300))
def test_a_vector_file_of_random_bytes(data):
    reads_or_refuses(SteeringVector.load, data, ".safetensors")


def _valid_vector_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = SteeringVector({1: torch.ones(4)}, "m", 4, 3).save(Path(folder) / "v.safetensors")
        return path.read_bytes()


VECTOR = _valid_vector_bytes()


@given(st.one_of(truncations(VECTOR), flips(VECTOR)))
def test_a_damaged_vector_file(data):
    reads_or_refuses(SteeringVector.load, data, ".safetensors")


@given(st.integers(0, 5), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=64))
def test_a_gguf_header_with_any_counts(version, tensors, pairs, rest):
    data = b"GGUF" + struct.pack("<IQQ", version, tensors, pairs) + rest
    reads_or_refuses(lambda path: SteeringVector.import_gguf(path, num_layers=30), data, ".gguf")


SURVEY = ["user_id", "stated_prefs", "system_string"]
CONVERSATION = ["conversation_id", "user_id", "conversation_type", "opening_prompt", "conversation_history"]


@given(st.lists(st.one_of(values, structures(SURVEY)), max_size=3),
       st.lists(st.one_of(values, structures(CONVERSATION)), max_size=3), st.binary(max_size=40))
def test_prism_records_of_any_shape(survey, conversations, junk):
    def read(folder: Path):
        return load_prism(folder)

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "survey.jsonl").write_bytes(b"\n".join(json.dumps(r).encode() for r in survey) + b"\n" + junk)
        (root / "conversations.jsonl").write_bytes(b"\n".join(json.dumps(r).encode() for r in conversations))
        try:
            read(root)
        except Exception as err:
            one_line_input_error(err)


CELL_COLUMNS = ["key", "method", "alpha", "settings", "spec", "status", "summary", "finished_at"]
# What SQLite can hold (64-bit integers, text without lone surrogates), including JSON of any value.
cell_values = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(),
                        st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                        values.map(json.dumps), st.sampled_from(['{"fingerprint": "f"}', '{"n": 1}', "[0.1]", "0.5"]))


@given(st.lists(st.tuples(*[cell_values] * 8), min_size=1, max_size=3),
       st.lists(st.tuples(st.just("k"), st.text(max_size=4), cell_values, cell_values), max_size=3))
def test_a_results_store_with_damaged_rows(cells, answers):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.sqlite"
        ResultsStore(path).close()
        db = sqlite3.connect(path)
        for row in cells:
            db.execute("INSERT OR IGNORE INTO cells VALUES (?,?,?,?,?,'done',?,?)", (*row[:5], *row[6:]))
        for cell, row_id, toxicity, n in answers:
            db.execute("INSERT OR IGNORE INTO answers (cell, row_id, user_id, prompt_id, category, prompt, answer, "
                       "toxicity, distance, perplexity, n_tokens) VALUES (?,?,'u','p','c','q','a',?,0.1,2.0,?)",
                       (cell, row_id, toxicity, n))
        db.commit()
        db.close()
        try:
            store = ResultsStore(path, create=False)
            store.cells()
            store.answers("k")
            store.close()
        except Exception as err:
            one_line_input_error(err)


@pytest.mark.parametrize("damage", ["drop a column", "not sqlite"])
def test_a_store_that_is_not_ours_is_refused_in_one_line(tmp_path, damage):
    path = tmp_path / "results.sqlite"
    if damage == "not sqlite":
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE cells (key TEXT, method TEXT, alpha REAL, settings TEXT, spec TEXT, status TEXT, "
                   "summary TEXT)")
        db.commit()
        db.close()
    with pytest.raises(Exception) as caught:
        ResultsStore(path, create=False).cells()
    one_line_input_error(caught.value)
