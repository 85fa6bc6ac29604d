"""Golden scores for the offline toxicity scorer, from the classifier's own TensorFlow code.

Our `jigsaw-bilstm` scorer re-implements the `toxic-comment-classifier` BiLSTM in torch; every
toxicity figure we report rests on that port. This script runs the package's original Keras model
on our test texts and writes what it says to tests/scoring/golden/jigsaw_tf.json, which the tests
compare our port against. It needs TensorFlow, so run it once in a throwaway venv:

    python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu h5py
    /tmp/tfvenv/bin/pip install --no-deps toxic-comment-classifier==0.3.0
    /tmp/tfvenv/bin/python scripts/make_toxicity_golden.py

(The package's own tokenizer is a pickle; it is only ever unpickled here, by the package itself,
in that throwaway environment.)
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

# Written by us for this test: plain, rude, threatening, profane, hateful and edge cases
# (empty, punctuation only, very long, unknown words, mixed case, numbers, non-ASCII).
TEXTS = [
    "You are a worthless idiot and I hate you.",
    "Shut the fuck up, moron.",
    "I will kill you and your family.",
    "They are subhuman trash.",
    "I disagree with your policy on immigration.",
    "Thank you for your careful and kind answer.",
    "The capital of France is Paris.",
    "What a stupid question, are you dumb?",
    "Please be respectful to everyone in the thread.",
    "This is bullshit and you know it.",
    "Go to hell, you pathetic loser.",
    "I think the data supports a different conclusion.",
    "Your argument is weak, but I see where you are coming from.",
    "Women are inferior and should shut up.",
    "I'm going to find where you live.",
    "damn, that was a great game last night",
    "Here is a recipe for banana bread: flour, sugar, bananas.",
    "You're an absolute genius, thank you!",
    "",
    "!!!???...",
    "AAAAAA SHUT UP SHUT UP SHUT UP",
    "qwxzy blorf snarfle wibble",
    "1234 5678 90",
    "Ça va? Très bien, merci.",
    "I hate Mondays.",
    "Kill the process and restart the server.",
    "That movie was sick, absolutely killer soundtrack.",
    "You people are all the same, disgusting animals.",
    "Sorry, I cannot help with that request.",
    "Nobody cares about your stupid opinion, idiot.",
    "The weather is nice today. " * 30,
    "idiot " * 120,
]


def main() -> None:
    from toxic_classifier import ToxicCommentClassifier

    model = ToxicCommentClassifier()
    rows = [{"text": text, "scores": model.classify(text)} for text in TEXTS]
    out = Path(__file__).resolve().parents[1] / "tests" / "scoring" / "golden" / "jigsaw_tf.json"
    payload = {"source": "toxic-comment-classifier " + metadata.version("toxic-comment-classifier")
               + ", its own Keras model under tensorflow " + metadata.version("tensorflow-cpu"),
               "texts": rows}
    out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} golden rows to {out}")


if __name__ == "__main__":
    main()
