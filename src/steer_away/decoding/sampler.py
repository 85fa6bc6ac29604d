"""From the forward pass's logits to one token per request: combine each request's branches by its
method (and let it re-weight them by the answer so far, if it reads it), then pick greedily or draw
with the request's own generator.

Greedy picks are made for the whole group at once: one argmax over every row that decodes from the
model's own scores, one over the stacked combined scores of the rest. Draws stay per request, each
from its own generator, so a seeded answer does not depend on what shares its step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessorList

from steer_away.decoding.request import DecodeRequest, GenerationConfig, RunState


class Sampler:
    """Picks tokens; keeps one list of score processors per (temperature, top-p) in use."""

    def __init__(self) -> None:
        self._processors: dict[tuple[bool, float, float], LogitsProcessorList] = {}

    def processors(self, config: GenerationConfig) -> LogitsProcessorList:
        key = (config.do_sample, config.temperature, config.top_p)  # all the processors depend on
        if key not in self._processors:
            self._processors[key] = config.score_processors()
        return self._processors[key]

    def sample(self, requests: Sequence[DecodeRequest], logits: torch.Tensor) -> list[int | None]:
        """One token per request; `logits` holds every request's branch rows in order, (rows, vocab).

        A request whose own part raises (its method's rule, its scorer, its draw) gets None and is
        failed with what it raised; the others get their tokens as if it were not there."""
        tokens: list[int | None] = [None] * len(requests)
        plain_rows: list[tuple[int, int]] = []  # (request index, row)
        combined: list[tuple[int, torch.Tensor]] = []  # greedy requests whose method combines branches
        start = 0
        for i, request in enumerate(requests):
            state = RunState.of(request)
            width, config = state.width, request.config
            rows, start = logits[start:start + width], start + width
            if state.plain and not config.do_sample:
                plain_rows.append((i, start - width))
                continue
            try:
                scores = state.prepared.combine(rows.view(width, 1, -1))
                if state.reads_answer:
                    scores = state.prepared.rescore(scores, [request.tokens])
                if config.do_sample:
                    tokens[i] = self._draw(scores, request)
                else:
                    combined.append((i, scores))
            except Exception as err:  # this request's own rule or draw: it alone fails
                request.fail(err)
        if plain_rows:
            every_row = len(plain_rows) == logits.shape[0]  # each row its own request: no gather needed
            picked = (logits if every_row else logits[[row for _, row in plain_rows]]).argmax(dim=-1).tolist()
            for (i, _), token in zip(plain_rows, picked):
                tokens[i] = int(token)
        if combined:
            picked = torch.cat([scores for _, scores in combined]).argmax(dim=-1).tolist()
            for (i, _), token in zip(combined, picked):
                tokens[i] = int(token)
        return tokens

    def _draw(self, scores: torch.Tensor, request: DecodeRequest) -> int:
        # A tracked log-likelihood is under the method's own scores, before temperature and top-p.
        own = torch.log_softmax(scores.float(), dim=-1) if request.loglik is not None else None
        history = torch.tensor([request.tokens], dtype=torch.long)
        scores = self.processors(request.config)(history, scores.float())  # type: ignore[arg-type]
        probs = torch.softmax(scores, dim=-1)  # multinomial itself refuses inf, NaN or an all-zero row
        token = int(torch.multinomial(probs, 1, generator=request.generator))
        if own is not None and request.loglik is not None:
            request.loglik += float(own[0, token])
        return token
