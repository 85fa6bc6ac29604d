"""Conversations as the model sees them: chat-template rendering and left-padded encoding.

Kept below both generation and steering, so that every module that needs to turn a conversation
into token ids (decoding, activation extraction, perplexity) shares one rendering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steer_away.models import LanguageModel

Message = dict[str, str]
Conversation = list[Message]

# The role of a message rendered verbatim, outside any chat template: a raw prompt (lm-evaluation-harness's
# tasks are plain text). Messages before it (a method's system prompt) render through the template.
PLAIN_TEXT = "text"


def plain_text(text: str) -> Conversation:
    return [{"role": PLAIN_TEXT, "content": text}]


def as_conversation(prompt: str | Conversation) -> Conversation:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_chat(tokenizer: Any, conversation: Conversation) -> str:
    """The prompt text for a conversation, ending where the assistant's answer starts (a conversation
    ending in plain text ends with that text: the answer continues it)."""
    if conversation and conversation[-1]["role"] == PLAIN_TEXT:
        head = conversation[:-1]
        return (render_prefix(tokenizer, head) if head else "") + conversation[-1]["content"]
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False))
    # Base models without a template (e.g. GPT-2): a plain transcript.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
    return "\n".join(lines) + "\nAssistant:"


def render_prefix(tokenizer: Any, messages: Conversation) -> str:
    """The text the leading `messages` of a longer conversation render to (no generation prompt)."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False))
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages)


def encode(lm: LanguageModel, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids and attention mask, on the model's device."""
    batch = lm.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return batch["input_ids"].to(lm.device), batch["attention_mask"].to(lm.device)


def token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
