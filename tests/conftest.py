"""Shared test fixtures. Every model here is tiny and random-weight, built by the tests themselves;
only tests marked `slow` load the embedded SmolLM2."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from steer_away.models import LoadedModel, _finish
from steer_away.random_model import synthetic_tokenizer


def make_tokenizer() -> PreTrainedTokenizerFast:
    """The synthetic tokenizer (a byte-level BPE of ~400 tokens trained on a few of our sentences)."""
    return synthetic_tokenizer()


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def tiny_config(arch: str, vocab: int):
    from transformers import GemmaConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  initializer_range=0.3, eos_token_id=2, pad_token_id=0, bos_token_id=1)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        return MistralConfig(**common)
    if arch == "gemma":
        return GemmaConfig(**common, head_dim=8)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_embd=32, n_layer=4, n_head=4, n_positions=256,
                          initializer_range=0.3, eos_token_id=2, pad_token_id=0, bos_token_id=1)
    raise ValueError(arch)


def make_tiny_lm(arch: str, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, len(tokenizer)))
    return _finish(model, tokenizer, f"tiny-random-{arch}", "test")


@pytest.fixture(scope="session")
def tiny_lm(tokenizer) -> LoadedModel:
    return make_tiny_lm("llama", tokenizer)


@pytest.fixture(scope="session")
def embedded_lm() -> LoadedModel:
    from steer_away.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """The tiny random Llama saved as a Hugging Face folder, for code that loads models by path."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    lm = make_tiny_lm("llama", tokenizer)
    lm.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
