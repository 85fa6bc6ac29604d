"""Perplexity of generated answers under the unsteered model, conditioned on their prompt."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from steer_away import internals
from steer_away.chat import Conversation, as_conversation, encode, render_chat
from steer_away.evaluation.metrics import perplexity
from steer_away.models import LanguageModel


@torch.inference_mode()
def answer_perplexities(lm: LanguageModel, prompts: Sequence[str | Conversation], answers: Sequence[str],
                        batch_size: int = 8) -> list[float]:
    """One perplexity per answer (NaN for an empty answer); hooks must not be active here."""
    out: list[float] = []
    for start in range(0, len(answers), batch_size):
        chunk_p = [render_chat(lm.tokenizer, as_conversation(p)) for p in prompts[start:start + batch_size]]
        chunk_a = list(answers[start:start + batch_size])
        ids, mask = encode(lm, [p + a for p, a in zip(chunk_p, chunk_a)])
        logits = internals.forward_full(lm.model, ids, mask).float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # nll[t] is for token t+1
        lengths = mask.sum(-1)
        for row, (prompt, answer) in enumerate(zip(chunk_p, chunk_a)):
            n_prompt = len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            n_total = int(lengths[row])
            n_answer = n_total - n_prompt
            if not answer.strip() or n_answer <= 0:
                out.append(float("nan"))
                continue
            out.append(perplexity(nll[row, -n_answer:].tolist()))
    return out
