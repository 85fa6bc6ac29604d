"""Incremental detokenisation for streamed answers: each new token costs a decode of a few tokens,
not of the whole answer so far (which made streaming quadratic in the answer's length)."""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """The text a growing list of token ids adds, a few tokens at a time.

    Two offsets into the token list, as text-generation servers keep them: the text of
    `tokens[prefix:read]` was already sent; decoding `tokens[prefix:]` and removing that text gives
    what is new. Decoding from `prefix` (not from `read`) keeps the context a tokenizer needs to
    place spaces and to finish a character split over several byte tokens; nothing is sent while
    the text ends in half a character.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.prefix = 0
        self.read = 0
        self.text = ""  # everything sent so far

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, tokens: list[int]) -> str:
        """The new text once `tokens` (the whole answer so far) has grown; "" while there is none."""
        before = self._decode(tokens[self.prefix:self.read])
        after = self._decode(tokens[self.prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        new = after[len(before):]
        self.prefix, self.read = self.read, len(tokens)
        self.text += new
        return new
