import io
import pickle

import pytest

from steer_away.scoring.jigsaw import JigsawBiLSTMScorer, _SafeUnpickler


@pytest.fixture(scope="module")
def scorer():
    return JigsawBiLSTMScorer()


def test_clear_cases(scorer):
    toxic, benign = scorer.score(["You are a worthless idiot and I hate you.",
                                  "I disagree with your policy on immigration."])
    names = scorer.attributes
    assert toxic[names.index("TOXICITY")] > 0.95 and toxic[names.index("INSULT")] > 0.8
    assert benign[names.index("TOXICITY")] < 0.05
    assert scorer.score(["They are subhuman trash."])[0, 0] > 0.5  # non-profane toxicity


def test_keras_tokenisation(scorer):
    assert scorer.token_ids("The, the THE!") == [1, 1, 1]
    assert scorer.token_ids("zzqqxxnotaword") == []
    assert all(i < 20000 for i in scorer.token_ids("a fairly ordinary sentence with common words"))


def test_batch_equals_single(scorer):
    texts = ["hello there friend", "shut up, idiot", "a" * 5]
    batch = scorer.score(texts)
    for row, text in enumerate(texts):
        assert abs(scorer.score([text])[0] - batch[row]).max() < 1e-6


def test_unpickler_refuses_code():
    payload = pickle.dumps(print)  # builtins.print: a callable, not a container
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _SafeUnpickler(io.BytesIO(payload)).load()


def test_port_matches_the_classifiers_own_tensorflow_code(scorer):
    """Every toxicity figure rests on our torch port: it must say what the original Keras model says.

    tests/scoring/golden/jigsaw_tf.json was written by scripts/make_toxicity_golden.py running the
    package's own code under TensorFlow (in a throwaway venv); these are its outputs, not ours.
    """
    import json
    from pathlib import Path

    from steer_away.scoring.jigsaw import JIGSAW_LABELS

    golden = json.loads((Path(__file__).parent / "golden" / "jigsaw_tf.json").read_text(encoding="utf-8"))
    rows = golden["texts"]
    assert len(rows) >= 30
    ours = scorer.score([r["text"] for r in rows])
    expected = [[r["scores"][label] for label, _ in JIGSAW_LABELS] for r in rows]
    worst = float(abs(ours - expected).max())
    assert worst < 1e-4, worst
    # the golden set spans the range: clearly toxic and clearly benign texts are both in it
    toxic = [e[0] for e in expected]
    assert max(toxic) > 0.95 and min(toxic) < 0.05
