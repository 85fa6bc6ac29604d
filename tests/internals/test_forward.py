"""Our forward passes use the cache argument transformers expects: no deprecation warning, and the
installed transformers is one our declared range admits (CI installs the newest it allows)."""

import os
import re
import warnings
from importlib.metadata import requires, version

import pytest
import torch
from packaging.specifiers import SpecifierSet

from steer_away import internals
from steer_away.generation import GenerationConfig, generate
from tests.conftest import make_tiny_lm

ARCHS = ["llama", "qwen2", "mistral", "gemma", "gpt2"]


def declared_transformers_range() -> SpecifierSet:
    for requirement in requires("steer-away") or []:
        found = re.fullmatch(r"transformers\s*([<>=!~,.\d\s]+)", requirement.split(";")[0].strip())
        if found:
            return SpecifierSet(found.group(1).replace(" ", ""))
    raise AssertionError("steer-away declares no transformers requirement")


def test_installed_transformers_is_in_the_declared_range():
    declared = declared_transformers_range()
    assert "5.23.0" not in declared  # `cache=` is unknown before 5.24: the range must say so
    assert version("transformers") in declared


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_forward_passes_raise_no_deprecation_warning(arch, tokenizer):
    lm = make_tiny_lm(arch, tokenizer)
    ids = torch.tensor([[5, 6, 7, 8], [0, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        cache = internals.new_kv_cache(lm.model)
        internals.forward_step(lm.model, ids, mask, cache)
        internals.forward_positions(lm.model, torch.tensor([[3, 4], [5, 6]]),
                                    torch.cat([mask, torch.ones((2, 2), dtype=torch.long)], -1), cache)
        internals.prefix_kv(lm.model, ids[:1])
        generate(lm, ["a b c"], config=GenerationConfig(max_new_tokens=3))
    deprecations = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations, [str(w.message) for w in deprecations]


def test_grouped_attention_on_the_cpu_changes_no_logit(tiny_lm, monkeypatch):
    """The tiny Llama has 2 key / value heads for 4 query heads: a masked, left-padded batch with a cache scores
    bit-identically whether transformers copies the grouped heads or torch reads them as they are."""
    monkeypatch.delenv(internals.forward.GROUPED_SDPA, raising=False)
    internals.prefer_grouped_attention(torch.device("cuda"))
    assert internals.forward.GROUPED_SDPA not in os.environ  # never on CUDA
    internals.prefer_grouped_attention(torch.device("cpu"))
    assert os.environ[internals.forward.GROUPED_SDPA] == "1"
    ids = torch.randint(5, 200, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :2] = 0
    logits = {}
    for grouped in ("0", "1"):
        monkeypatch.setenv(internals.forward.GROUPED_SDPA, grouped)
        cache = internals.new_kv_cache(tiny_lm.model, capacity=12)
        first = internals.forward_step(tiny_lm.model, ids[:, :7], mask[:, :7], cache)
        later = internals.forward_positions(tiny_lm.model, ids[:, 7:], mask, cache)
        logits[grouped] = (first, later)
    assert torch.equal(logits["0"][0], logits["1"][0]) and torch.equal(logits["0"][1], logits["1"][1])
