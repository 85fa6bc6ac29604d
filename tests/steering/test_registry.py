"""The method registry: one file plus one entry reaches every entry point; cells are named by
every argument; one vocabulary."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import textwrap

import httpx
import pytest

from steer_away.evaluation.report import write_report
from steer_away.evaluation.sweep import SweepConfig, cell_key, run_sweep
from steer_away.generation import GenerationConfig, generate
from steer_away.steering.framework.arguments import MethodArgsError
from steer_away.steering.framework.method import Unsteered
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import (
    MethodEntry,
    UnknownMethodError,
    build_method,
    default_method,
    get_method,
    method_names,
    register,
    unregister,
)

# A complete new method, written as its own file: a logit bias toward one token.
NEW_METHOD_FILE = '''
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from steer_away.steering.framework.arguments import MethodArgs, Strength
from steer_away.steering.framework.method import Capabilities, PreparedBatch, SteeringMethod


class _Biased(PreparedBatch):
    capabilities = Capabilities(combines=True)  # its combine() turns the branch into scores

    def __init__(self, branches, token_id, alpha):
        super().__init__(branches)
        self.token_id, self.alpha = token_id, alpha

    def combine(self, logits):
        scores = logits[0].clone()
        scores[:, self.token_id] += self.alpha
        return scores


class TokenBias(SteeringMethod):
    name = "token-bias"
    capabilities = _Biased.capabilities

    def __init__(self, token_id, alpha):
        self.token_id, self.alpha = token_id, alpha

    def prepare(self, lm, conversations, rows):
        return _Biased([list(conversations)], self.token_id, self.alpha)


@dataclass(frozen=True)
class TokenBiasArgs(MethodArgs):
    strength: ClassVar[Strength] = Strength("alpha")  # labels show it as α=…, cells and reports as their α
    alpha: float = field(default=100.0, metadata={"help": "logit bonus"})
    token_id: int = field(default=5, metadata={"help": "the token to favour"})

    def validate(self):
        if self.token_id < 0:
            raise ValueError("token_id must be >= 0")


def build(args, resources, name):
    return TokenBias(args.token_id, args.alpha)
'''

NAME = "token-bias"


@pytest.fixture
def new_method(tmp_path):
    path = tmp_path / "token_bias_method.py"
    path.write_text(textwrap.dedent(NEW_METHOD_FILE))
    spec = importlib.util.spec_from_file_location("token_bias_method", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["token_bias_method"] = module
    spec.loader.exec_module(module)
    # the one registry entry
    register(MethodEntry(NAME, "test: favour one token", module.TokenBiasArgs, module.build))
    yield module
    unregister(NAME)
    sys.modules.pop("token_bias_method", None)


def sweep_raw(model_dir, out, **method_args):
    return {"sweep": {"name": "t", "out": str(out), "model": str(model_dir), "device": "cpu",
                      "users_per_sensitivity": 1, "prompts_per_category": 1, "max_new_tokens": 4, "batch_size": 4,
                      "mmlu_limit": 4},
            "methods": [{"name": "unsteered"}, {"name": NAME, **method_args}]}


def test_new_method_reaches_generate_sweep_report_cli_and_server(new_method, tiny_lm, tiny_model_dir, tmp_path,
                                                                 capsys):
    # generate, through the registry
    method = build_method(NAME, {"token_id": 7}, SteeringResources(tiny_lm))
    out = generate(tiny_lm, ["the quick brown fox"], method=method,
                   config=GenerationConfig(max_new_tokens=4, stop_on_eos=False))[0]
    assert out.token_ids == [7, 7, 7, 7]

    # sweep + report: a grid over its own arguments, labelled by them
    config = SweepConfig.from_dict(sweep_raw(tiny_model_dir, tmp_path / "run", alpha=[50.0, 100.0], token_id=9))
    result = run_sweep(config, show_progress=False)
    assert len(result.computed) == 3
    tables = write_report(tmp_path / "run" / "results.sqlite", tmp_path / "report")
    rows = [r for r in tables.main if r.method == NAME]
    assert sorted(r.alpha for r in rows) == [50.0, 100.0] and {r.settings for r in rows} == {"token_id=9"}
    assert f"| {NAME} | 50 | token_id=9 |" in (tmp_path / "report" / "report.md").read_text()

    # cli: --method takes the new name and its argument flags exist
    from steer_away.cli import main

    assert main(["generate", "--model", str(tiny_model_dir), "--device", "cpu", "--prompt", "hi", "--method", NAME,
                 "--token-id", "7", "--max-tokens", "3"]) == 0
    expected = tiny_lm.tokenizer.decode([7, 7, 7], skip_special_tokens=True).strip()
    assert capsys.readouterr().out.strip() == expected
    assert main(["generate", "--model", str(tiny_model_dir), "--prompt", "hi", "--method", NAME,
                 "--gate", "prefill"]) == 2
    assert "--gate does not apply to token-bias" in capsys.readouterr().err

    # server: a request names it
    from steer_away.server import create_app, serve_in_thread

    server, thread, url = serve_in_thread(create_app(tiny_lm))
    try:
        r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "steering": {"method": NAME}})
        assert r.status_code == 200, r.text
        assert r.json()["steering"]["method"] == NAME
        assert r.json()["choices"][0]["message"]["content"] == tiny_lm.tokenizer.decode([5, 5, 5]).strip()
        assert NAME in httpx.get(url + "/health").json()["methods"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_changing_any_argument_recomputes_that_cell(new_method, tiny_model_dir, tmp_path):
    base = {"alpha": 100.0, "token_id": 5}
    run = tmp_path / "run"
    first = run_sweep(SweepConfig.from_dict(sweep_raw(tiny_model_dir, run, **base)), show_progress=False)
    assert len(first.computed) == 2
    changes = {"alpha": 50.0, "token_id": 6}
    assert set(changes) == {f.name for f in dataclasses.fields(new_method.TokenBiasArgs)}
    for field, value in changes.items():
        again = run_sweep(SweepConfig.from_dict(sweep_raw(tiny_model_dir, run, **{**base, field: value})),
                          show_progress=False)
        assert len(again.computed) == 1, field  # only the changed cell; the baseline is reused
    unchanged = run_sweep(SweepConfig.from_dict(sweep_raw(tiny_model_dir, run, **base)), show_progress=False)
    assert unchanged.computed == []


# Another valid value for each string argument of the shipped methods (numbers are changed by +1).
OTHER_VALUES = {"layers": "seed", "gate": "prefill", "intervention": "add-keep-norm", "scale": "relative",
                "default_category": "strict", "category_map": "tolerant=tolerant-inverted", "over": "eads",
                "judge": "detoxify"}


def test_every_argument_of_every_method_is_part_of_the_cell_key():
    for name in method_names():
        entry = get_method(name)
        args = entry.make_args()
        key = cell_key(name, args, "fp")
        for f in dataclasses.fields(args):
            value = getattr(args, f.name)
            other = value + 1.0 if isinstance(value, (int, float)) else 1.0 if f.name == "alpha" \
                else OTHER_VALUES[f.name]
            changed = dataclasses.replace(args, **{f.name: other})
            assert cell_key(name, changed, "fp") != key, (name, f.name)
        assert cell_key(name, args, "other-fingerprint") != key


def test_args_from_strings_and_errors_name_the_source():
    caa = get_method("caa-population")
    args = caa.make_args({"alpha": "0.75", "gate": "3", "layers": "15-20"})
    assert args.alpha == 0.75 and args.gate == "3" and args.layers == "15-20"
    with pytest.raises(MethodArgsError, match="run.toml: unknown argument 'alhpa'; did you mean 'alpha'"):
        caa.make_args({"alhpa": 1.0}, where="run.toml")
    with pytest.raises(MethodArgsError, match="argument 'alpha': expected float"):
        caa.make_args({"alpha": "strong"})
    with pytest.raises(MethodArgsError, match="alpha must be finite"):
        caa.make_args({"alpha": float("nan")})
    with pytest.raises(MethodArgsError, match="alpha must be finite"):
        get_method("eads").make_args({"alpha": "inf"})
    with pytest.raises(UnknownMethodError, match="did you mean 'caa-bt'"):
        get_method("caa-bbt")


def test_one_default_alpha_per_method_and_labels():
    assert get_method("caa-population").default_strength == 0.5
    assert get_method("eads").default_strength is None  # from the user's steering category
    assert get_method("unsteered").default_strength is None
    entry = get_method("caa-dislike")
    assert entry.label(entry.make_args({"alpha": 1.0, "gate": "prefill"})) == "caa-dislike α=1 gate=prefill"


def test_no_method_name_outside_steering():
    """The product's modules name no method: the registry is the only vocabulary."""
    import pathlib
    import re

    import steer_away

    root = pathlib.Path(steer_away.__file__).parent
    names = [n for n in method_names() if n != NAME]
    pattern = re.compile("|".join(rf"[\"']{re.escape(n)}[\"']" for n in names))
    offenders = []
    for path in root.rglob("*.py"):
        if path.parts[len(root.parts)] == "steering":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []


def test_sweep_config_round_trips_for_ray_workers():
    raw = {"sweep": {"name": "x"}, "methods": [{"name": "caa-dislike", "alpha": [0.5, 1.0], "gate": "prefill"}]}
    config = SweepConfig.from_dict(raw)
    again = SweepConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert [a.identity() for g in again.methods for a in g.expand()] == \
        [a.identity() for g in config.methods for a in g.expand()]


def _built(**personalised):
    """Stand-ins for the methods a server built: name -> a method that is personalised or not."""
    methods = {}
    for name, flag in personalised.items():
        method = Unsteered()
        method.personalised = flag
        methods[name.replace("_", "-")] = method
    return methods


def test_one_default_method_policy_for_generate_and_the_server():
    # generate: nothing built yet
    assert default_method(with_vectors=False) == "unsteered"
    assert default_method(with_vectors=True) == "caa-population"
    # the server: what it built from its files
    every = _built(unsteered=False, caa_population=False, caa_dislike=True, caa_bt=True, eads=True, acd=True)
    assert default_method(True, every) == "caa-dislike"  # the first that steers each user with their own vector
    assert default_method(False, every) == "unsteered"  # no vectors given: the baseline, whatever was built
    population_only = _built(unsteered=False, caa_population=False, caa_dislike=False, eads=True)
    assert default_method(True, population_only) == "caa-population"  # banks without users: the first vector method
    failed = _built(unsteered=False, eads=True, acd=True)  # every vector bank failed to load
    assert default_method(True, failed) == "unsteered"


NEW_METHODS = ("rerank", "guided", "profile-prompt")


def test_the_reranking_guided_and_prompting_methods_reach_generate_sweep_report_and_server(
        tiny_lm, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEER_AWAY_CACHE", str(tmp_path / "cache"))  # the default scorer's score cache
    from steer_away.cli import main
    from steer_away.console import results

    with results.capture() as captured:  # a result: on stdout
        assert main(["methods"]) == 0
    listed = captured.get().replace("\n", " ")
    for name, argument in (("rerank", "candidates=4"), ("guided", "top_k=10"), ("profile-prompt", "examples=False")):
        assert name in listed and argument in listed

    # generate, through the registry and the command line
    resources = SteeringResources(tiny_lm)
    for name in NEW_METHODS:
        (out,) = generate(tiny_lm, ["the quick brown fox"], method=build_method(name, None, resources),
                          config=GenerationConfig(max_new_tokens=4, stop_on_eos=False))
        assert len(out.token_ids) == 4
        assert main(["generate", "--model", str(tiny_model_dir), "--device", "cpu", "--prompt", "hi", "--method", name,
                     "--max-tokens", "3"]) == 0

    # sweep + report: every new method is a cell, with its cost measured beside the baseline's
    raw = sweep_raw(tiny_model_dir, tmp_path / "run")
    raw["methods"] = [{"name": "unsteered"}, *({"name": n} for n in NEW_METHODS)]
    assert len(run_sweep(SweepConfig.from_dict(raw), show_progress=False).computed) == 4
    tables = write_report(tmp_path / "run" / "results.sqlite", tmp_path / "report")
    rows = {r.method: r for r in tables.main}
    assert set(rows) == {"unsteered", *NEW_METHODS}
    assert all(r.cost_same_run and r.cost_ratio > 0 for r in rows.values())  # NaN unless every cell was timed
    assert "| rerank | - | - |" in (tmp_path / "report" / "report.md").read_text()

    # the methods that read the shipped category file have its digest in their cell keys; the others do not
    from steer_away.evaluation.sweep import EvalContext
    from steer_away.evaluation.sweep import cells as cells_module

    config = SweepConfig.from_dict({**raw, "methods": [*raw["methods"], {"name": "eads"}]})
    before = {c.method: c.key for c in EvalContext(config, tiny_lm).cells()}
    edited = tmp_path / "categories.toml"
    edited.write_text(cells_module.steering_categories_path().read_text().replace("This user", "The user"))
    monkeypatch.setattr(cells_module, "steering_categories_path", lambda: edited)
    after = {c.method: c.key for c in EvalContext(config, tiny_lm).cells()}
    assert {m for m in before if before[m] != after[m]} == {"eads", "profile-prompt"}

    # server: a sampled request with a seed gives the same answer twice
    from steer_away.server import create_app, serve_in_thread

    server, thread, url = serve_in_thread(create_app(tiny_lm))
    try:
        for name in NEW_METHODS:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0.9,
                    "seed": 5, "user": "nobody", "steering": {"method": name}}
            first, second = (httpx.post(url + "/v1/chat/completions", timeout=60, json=body) for _ in range(2))
            assert first.status_code == 200, first.text
            assert first.json()["steering"]["method"] == name
            assert first.json()["choices"][0]["message"]["content"] == \
                second.json()["choices"][0]["message"]["content"]
        # rerank: another seed, other draws (so the seed is what decides them); streamed, the same text
        body = {"messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 8,
                "temperature": 1.5, "steering": {"method": "rerank"}}
        texts = {httpx.post(url + "/v1/chat/completions", timeout=60, json={**body, "seed": seed}).json()[
            "choices"][0]["message"]["content"] for seed in range(6)}
        assert len(texts) > 1
        plain = httpx.post(url + "/v1/chat/completions", timeout=60, json={**body, "seed": 7}).json()
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=60,
                          json={**body, "seed": 7, "stream": True}) as streamed:
            chunks = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks).strip() == \
            plain["choices"][0]["message"]["content"]
        assert set(NEW_METHODS) <= set(httpx.get(url + "/health").json()["methods"])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_every_method_declares_what_its_decoding_does(tiny_lm):
    """Capabilities are data the decoder reads: each registered method's prepared batch declares the
    rules it overrides (a class that does not is refused when it is defined), and a method chooses
    among whole answers exactly when it says so."""
    import dataclasses

    from steer_away.steering.framework.method import Capabilities, PreparedBatch, RowSteering

    resources = SteeringResources(tiny_lm)
    for name in method_names():
        if get_method(name).needs.vector_bank is not None:
            continue  # CAA methods need a vector store; their batches are plain PreparedBatch ones
        method = build_method(name, None, resources)
        prepared = method.prepare(tiny_lm, [[{"role": "user", "content": "hi"}]], [RowSteering()])
        declared = prepared.capabilities
        assert declared.combines == (type(prepared).combine is not PreparedBatch.combine), name
        assert declared.rescores == (type(prepared).rescore is not PreparedBatch.rescore), name
        assert dataclasses.replace(method.capabilities, chooses_answers=False) == declared, name
        assert method.capabilities.chooses_answers == (method.answer_choice() is not None), name
    assert build_method("eads", None, resources).capabilities == Capabilities(combines=True)
    assert build_method("rerank", {"over": "eads"}, resources).capabilities == Capabilities(combines=True,
                                                                                          chooses_answers=True)
