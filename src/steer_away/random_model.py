"""Randomly initialised models of a real shape, built on the device with nothing downloaded: the
compute of Llama-3.1-8B for benchmarks on a machine without its weights (or without a network),
and tiny models for tests. Their text means nothing; their speed and memory are the real ones.

The tokenizer is a small byte-level BPE trained on a few sentences of ours, with a chat template in
the ChatML style, so that every method (EADS' system prompts included) runs as on a real model.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from steer_away.models import LoadedModel, _finish, resolve_device

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "you are a worthless idiot and I hate you",
    "thank you for the kind and careful answer",
    "what is the capital of France? Paris is the capital.",
    "please be respectful, polite and helpful to everyone",
    "shut up, nobody cares about your stupid opinion",
] * 5

# Llama-3.1-8B's published configuration (config.json of meta-llama/Llama-3.1-8B-Instruct), without its
# RoPE scaling for contexts beyond 8k, which changes no cost at the lengths we measure.
LLAMA_3_1_8B: dict[str, Any] = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                                    rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
# The same architecture at a size a CPU runs in seconds (SmolLM2-135M's depth, a quarter of its width).
TINY_LLAMA: dict[str, Any] = dict(vocab_size=512, hidden_size=144, intermediate_size=384, num_hidden_layers=30,
                                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                                  rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
SHAPES = {"llama-3.1-8b": LLAMA_3_1_8B, "tiny": TINY_LLAMA}


def synthetic_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few of our own sentences (~400 tokens, synthetic)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def random_llama(shape: str = "tiny", device: str | None = None, dtype: torch.dtype | None = None,
                 seed: int = 0) -> LoadedModel:
    """A Llama of a named shape (`SHAPES`) with random weights, created directly on the device in `dtype`
    (default: bf16 on a GPU, float32 on the CPU), with the synthetic tokenizer."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    target = resolve_device(device)
    dtype = dtype or (torch.bfloat16 if target.type == "cuda" else torch.float32)
    tokenizer = synthetic_tokenizer()
    config = LlamaConfig(**SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, initializer_range=0.02)
    torch.manual_seed(seed)
    with target:  # created on the device, in `dtype`: an 8B model never exists in float32 or on the host
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return _finish(model, tokenizer, f"random-{shape}", "random")
