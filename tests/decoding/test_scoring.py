"""Scoring runs the decoder's own rules: the same edits, gated per position as the decode loop gates
them, and the same `steered_scores`."""

import pytest
import torch

from steer_away.chat import as_conversation, plain_text, render_chat
from steer_away.decoding import DecodeLoop, DecodeRequest, GenerationConfig
from steer_away.decoding.runner import batch_edits, gate_open
from steer_away.decoding.sampler import steered_scores
from steer_away.generation import token_continuation_scores
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.methods.activation import ActivationSteering
from steer_away.steering.methods.logits import EADS
from steer_away.steering.vectors.vector import SteeringVector


def vector(seed):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(32, generator=g) * 3 for l in (1, 2)}, "tiny-random-llama", 32, 4)


class Recording(DecodeLoop):
    """A decode loop that keeps each request's scores at every step (what its greedy pick came from)."""

    def __init__(self, lm):
        super().__init__(lm)
        self.scores = []
        real = self.sampler.sample

        def sample(requests, logits, rows):
            (request,) = requests
            state = request.state
            branch_logits = logits[rows[0]].view(len(rows[0]), 1, -1).float()
            self.scores.append(torch.log_softmax(steered_scores(state.prepared, branch_logits, [request.tokens]), -1)[0])
            return real(requests, logits, rows)

        self.sampler.sample = sample


@pytest.mark.parametrize("gate", ["prefill", 3, "all"])
def test_a_continuation_scores_what_the_decoder_gave_each_of_its_tokens(tiny_lm, gate):
    """Greedy-decode under a gated CAA vector, then score the answer as a continuation: each token's
    log-probability is the one the decoder picked it with (edits on at the steps the gate opens)."""
    method = ActivationSteering(vector(3), alpha=4.0, gate=gate)
    context = render_chat(tiny_lm.tokenizer, as_conversation("tell me about the sea"))
    loop = Recording(tiny_lm)
    request = loop.add(DecodeRequest(plain_text(context), method, RowSteering(),
                                     GenerationConfig(max_new_tokens=8, stop_on_eos=False)))
    loop.run()
    decoded = sum(float(scores[token]) for scores, token in zip(loop.scores, request.tokens))
    ids = tiny_lm.tokenizer(context, add_special_tokens=False)["input_ids"]
    (scored,), = token_continuation_scores(tiny_lm, [ids], [[request.tokens]], method)
    assert scored.tokens == 8 and scored.loglik == pytest.approx(decoded, abs=1e-3) and scored.greedy
    (plain,), = token_continuation_scores(tiny_lm, [ids], [[request.tokens]])
    assert plain.loglik != pytest.approx(decoded, abs=1e-2)  # the edits mattered


def test_batch_edits_follow_the_gate_position_by_position(tiny_lm):
    method = ActivationSteering(vector(1), alpha=2.0, gate=3)
    prepared = method.prepare(tiny_lm, [as_conversation("hi"), as_conversation("thank you")], [RowSteering()] * 2)
    assert [gate_open(prepared.edits, s) for s in range(5)] == [True, True, True, False, False]
    edits = batch_edits(prepared, range(1, 6), tiny_lm)  # positions fed at steps 1..5
    hidden = torch.zeros(2, 5, 32)
    edits[1](hidden)
    delta = prepared.edits.deltas[1]
    assert torch.equal(hidden[:, :2], delta.expand(2, 2, 32)) and not hidden[:, 2:].any()
    assert batch_edits(prepared, [4, 5], tiny_lm) == {}  # every position gated off: no edit at all


def test_next_token_scores_are_the_methods_combined_scores(tiny_lm):
    from steer_away.generation import next_token_scores

    method = EADS(alpha=1.5)
    scores = next_token_scores(tiny_lm, ["hi", "the quick brown fox"], method)
    for i, prompt in enumerate(["hi", "the quick brown fox"]):
        loop = Recording(tiny_lm)
        loop.add(DecodeRequest(prompt, method, RowSteering(), GenerationConfig(max_new_tokens=1)))
        loop.run()
        torch.testing.assert_close(torch.log_softmax(scores[i], -1), loop.scores[0], rtol=1e-4, atol=1e-4)
