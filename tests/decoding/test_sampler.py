"""Token picking for a group of requests: the same tokens as one request at a time."""

import torch

from steer_away.decoding.request import DecodeRequest, GenerationConfig, RunState
from steer_away.decoding.sampler import Sampler
from steer_away.steering.framework.method import Capabilities, PreparedBatch


class Shifted(PreparedBatch):
    """Two branches; the score is the first minus the second (a stand-in for a contrastive method)."""

    capabilities = Capabilities(combines=True)

    def combine(self, logits):
        return logits[0] - logits[1]


GREEDY = GenerationConfig(max_new_tokens=4)


def request(prepared, config=GREEDY):
    r = DecodeRequest("hi", config=config)
    r.state = RunState(prepared, ["hi"] * prepared.num_branches)
    return r


def test_group_picks_equal_picks_made_one_request_at_a_time():
    gen = torch.Generator().manual_seed(0)
    plain, shifted = PreparedBatch([["a"]]), Shifted([["a"], ["b"]])
    requests = [request(plain), request(shifted), request(plain), request(shifted)]
    logits = torch.randn(6, 50, generator=gen)  # rows: 1 + 2 + 1 + 2
    tokens = Sampler().sample(requests, logits, [[0], [1, 2], [3], [4, 5]])
    expected = [int(logits[0].argmax()), int((logits[1] - logits[2]).argmax()), int(logits[3].argmax()),
                int((logits[4] - logits[5]).argmax())]
    assert tokens == expected
    assert plain.passes_logits_through and not shifted.passes_logits_through


def test_a_seeded_draw_does_not_depend_on_its_group():
    config = GenerationConfig(max_new_tokens=4, do_sample=True, temperature=0.7, top_p=0.9)
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))

    def seeded(prepared):
        r = request(prepared, config)
        r.generator = torch.Generator().manual_seed(5)
        return r

    alone = Sampler().sample([seeded(PreparedBatch([["a"]]))], logits[2:3], [[0]])
    grouped = Sampler().sample([request(Shifted([["a"], ["b"]])), seeded(PreparedBatch([["a"]]))], logits, [[0, 1], [2]])
    assert grouped[1] == alone[0]


def test_processors_are_built_once_per_sampling_configuration():
    sampler = Sampler()
    config = GenerationConfig(do_sample=True, temperature=0.5)
    assert sampler.processors(config) is sampler.processors(GenerationConfig(do_sample=True, temperature=0.5))
    assert len(sampler.processors(config)) == 1


def test_a_request_whose_rows_are_not_adjacent_reads_its_own_rows():
    """After rows leave, a request's branches may sit in any slots (the last rows move into freed ones)."""
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(2))
    tokens = Sampler().sample([request(Shifted([["a"], ["b"]])), request(PreparedBatch([["a"]]))], logits, [[4, 1], [2]])
    assert tokens == [int((logits[4] - logits[1]).argmax()), int(logits[2].argmax())]


def test_a_rule_written_but_not_declared_is_refused():
    import pytest

    with pytest.raises(TypeError, match="combines=True"):
        class Undeclared(PreparedBatch):
            def combine(self, logits):
                return logits[0] * 2
