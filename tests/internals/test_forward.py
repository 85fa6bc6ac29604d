"""Our forward passes use the cache argument transformers expects: no deprecation warning, and the
installed transformers is one our declared range admits (CI installs the newest it allows)."""

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
