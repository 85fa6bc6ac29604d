"""Incremental detokenisation: the streamed pieces add up to the whole answer, never split a
character, and cost a bounded amount of decoding per token."""

from steer_away.server.streaming import IncrementalDetokenizer
from tests.conftest import make_tokenizer

TEXT = ("the quick brown fox — naïve café, 東京 and 😀 emoji; " * 6).strip()


class CountingTokenizer:
    """Wraps a tokenizer and counts how many token ids it was asked to decode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded = tokenizer, 0

    def decode(self, ids, skip_special_tokens=True):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)


def test_pieces_add_up_to_the_whole_text_and_never_end_mid_character():
    tok = make_tokenizer()
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(TEXT) // 2  # multi-byte characters are several byte tokens here
    stream = IncrementalDetokenizer(tok)
    pieces = [stream.push(ids[:n]) for n in range(1, len(ids) + 1)]
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True) == stream.text
    assert not any("\ufffd" in piece for piece in pieces)
    assert sum(1 for piece in pieces if piece == "") > 0  # it waited for a character's last byte


def test_special_tokens_are_not_streamed():
    tok = make_tokenizer()
    ids = tok("thank you", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    stream = IncrementalDetokenizer(tok)
    text = "".join(stream.push(ids[:n]) for n in range(1, len(ids) + 1))
    assert text == "thank you"


def test_decoding_work_per_token_does_not_grow_with_the_answer():
    counting = CountingTokenizer(make_tokenizer())
    ids = counting.tokenizer(TEXT * 4, add_special_tokens=False)["input_ids"]
    stream = IncrementalDetokenizer(counting)
    for n in range(1, len(ids) + 1):
        stream.push(ids[:n])
    # re-decoding the whole answer at every token would cost about len(ids)**2 / 2 token decodes
    assert counting.decoded < 8 * len(ids) < len(ids) ** 2 / 2
