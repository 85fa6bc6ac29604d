"""What streaming costs in detokenisation: the whole answer re-decoded at every token (before) vs
incremental detokenisation (server/streaming.py), on the embedded model's tokenizer.

An answer of --tokens tokens (real text, multi-byte characters included) is streamed one token at
a time both ways, round-robin, medians of --repeats; the script checks that both send the same
text and prints the time per answer and per token early and late in the answer (flat when the cost
per token does not grow with the answer), and the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import base_parser, print_table
from steer_away.models import load_model
from steer_away.server.streaming import IncrementalDetokenizer

PARAGRAPH = ("Steering a model toward each user's tolerance means the same question can get a blunt answer for "
             "one person and a careful one for another — naïve défaults help nobody, 東京 or anywhere. ")


class WholeAnswer:
    """The server before: decode everything so far at every token, send what is new."""

    def __init__(self, tokenizer: object) -> None:
        self.tokenizer, self.text = tokenizer, ""

    def push(self, tokens: list[int]) -> str:
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)  # type: ignore[attr-defined]
        if len(text) > len(self.text) and not text.endswith("\ufffd"):
            new, self.text = text[len(self.text):], text
            return new
        return ""


def stream(make: Callable[[object], WholeAnswer | IncrementalDetokenizer], tokenizer: object, ids: list[int]
           ) -> tuple[str, list[float]]:
    """The text sent and the seconds each token cost."""
    way = make(tokenizer)
    seconds = []
    for n in range(1, len(ids) + 1):
        start = time.perf_counter()
        way.push(ids[:n])
        seconds.append(time.perf_counter() - start)
    return way.text, seconds


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(tokens=512, repeats=5)
    args = parser.parse_args()
    tokenizer = load_model(args.model, device="cpu").tokenizer
    ids = tokenizer(PARAGRAPH * 40, add_special_tokens=False)["input_ids"][:args.tokens]
    ways: dict[str, Callable[[object], WholeAnswer | IncrementalDetokenizer]] = {
        "whole answer each token (before)": WholeAnswer, "incremental (now)": IncrementalDetokenizer}
    runs: dict[str, list[list[float]]] = {name: [] for name in ways}
    texts = {}
    for _ in range(args.repeats):  # round-robin
        for name, make in ways.items():
            texts[name], seconds = stream(make, tokenizer, ids)
            runs[name].append(seconds)
    assert len(set(texts.values())) == 1, "the two ways sent different text"
    window = len(ids) // 8

    def median(values: list[float]) -> float:
        return statistics.median(values)

    rows, totals = [], {}
    for name, per_run in runs.items():
        totals[name] = median([sum(r) for r in per_run])
        first = median([sum(r[:window]) / window for r in per_run])
        last = median([sum(r[-window:]) / window for r in per_run])
        rows.append([name, f"{1000 * totals[name]:.1f}", f"{1e6 * first:.0f}", f"{1e6 * last:.0f}"])
    print_table(f"detokenising a streamed {len(ids)}-token answer, the same text both ways (one run, medians of "
                f"{args.repeats})", ["way", "ms per answer", f"µs/token, first {window}", f"µs/token, last {window}"],
                rows)
    before, now = totals.values()
    print(f"\nincremental ÷ before: {now / before:.3f} of the detokenisation time per answer")


if __name__ == "__main__":
    main()
