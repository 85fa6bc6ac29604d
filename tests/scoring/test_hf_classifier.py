"""The `hf:` scorer on synthetic tiny classifiers the tests save themselves (offline, seconds)."""

import logging

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from steer_away.models import resolve_device
from steer_away.scoring import hf_classifier, make_scorer
from steer_away.scoring.base import ATTRIBUTES, ScorerError
from steer_away.scoring.hf_classifier import (
    HFClassifierScorer,
    activation_for,
    default_label_mapping,
    explicit_label_mapping,
    hub_pin,
    parse_label_mapping,
)
from tests.scoring.tiny_classifier import JIGSAW_ORDER, save_classifier, save_gpt2_classifier

TEXTS = ["you are a rude idiot", "thank you for the careful reply", "we cook a slow dinner tonight",
         "i hate this", "", "the garden plan is not very good " * 6]  # the last one is longer than the model allows


def direct_logits(folder, texts):
    """The saved model's own logits, one text at a time (no padding), as the reference."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return torch.cat([model(**tokenizer(t, truncation=True, return_tensors="pt")).logits for t in texts])


@pytest.fixture(scope="module")
def six_label(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("six"), JIGSAW_ORDER, multi_label=True)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return save_classifier(tmp_path_factory.mktemp("binary"), ("neutral", "toxic"))


def test_multi_label_model_reads_each_attribute_from_its_own_column_through_a_sigmoid(six_label):
    scorer = HFClassifierScorer(str(six_label))
    assert scorer.attributes == ATTRIBUTES and scorer.activation == "sigmoid"
    scores = scorer.score(TEXTS)
    assert scores.shape == (len(TEXTS), 6) and ((scores >= 0) & (scores <= 1)).all()
    expected = torch.sigmoid(direct_logits(six_label, TEXTS)).double().numpy()
    label_of = {"TOXICITY": "toxic", "SEVERE_TOXICITY": "severe_toxic", "INSULT": "insult", "PROFANITY": "obscene",
                "THREAT": "threat", "IDENTITY_ATTACK": "identity_hate"}
    for i, attribute in enumerate(ATTRIBUTES):
        np.testing.assert_allclose(scores[:, i], expected[:, JIGSAW_ORDER.index(label_of[attribute])], atol=1e-5)
    assert np.ptp(scores, axis=1).max() > 0.05  # the columns differ, so a wrong column would be caught


def test_binary_model_reports_toxicity_as_the_softmax_of_the_toxic_class(binary):
    scorer = HFClassifierScorer(str(binary))
    assert scorer.attributes == ("TOXICITY",) and scorer.activation == "softmax"
    logits = direct_logits(binary, TEXTS)
    np.testing.assert_allclose(scorer.score(TEXTS)[:, 0], torch.softmax(logits, -1)[:, 1].numpy(), atol=1e-5)
    assert not np.allclose(scorer.score(TEXTS)[:, 0], torch.sigmoid(logits[:, 1]).numpy(), atol=1e-3)


def test_unnamed_binary_labels_read_label_1_as_toxic_with_a_warning(tmp_path, caplog):
    folder = save_classifier(tmp_path / "unnamed", None, num_labels=2, seed=3)
    with caplog.at_level(logging.WARNING, logger=hf_classifier.__name__):
        scorer = HFClassifierScorer(str(folder))
    assert scorer.label_names == ["LABEL_0", "LABEL_1"] and scorer.attributes == ("TOXICITY",)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"hf classifier '{folder}' has unnamed labels: TOXICITY is taken as P(LABEL_1); check its model card, "
        "or pass labels='LABEL_0=TOXICITY'"]
    expected = torch.softmax(direct_logits(folder, TEXTS[:3]), -1)[:, 1].numpy()
    np.testing.assert_allclose(scorer.score(TEXTS[:3])[:, 0], expected, atol=1e-5)


def test_configs_without_a_problem_type_read_toxicity_labels_as_independent(tmp_path):
    old_six = save_classifier(tmp_path / "old-six", JIGSAW_ORDER, record_problem_type=False)
    scorer = HFClassifierScorer(str(old_six))
    assert scorer.model.config.problem_type is None and scorer.activation == "sigmoid"
    np.testing.assert_allclose(scorer.score(TEXTS[:2])[:, 0], torch.sigmoid(direct_logits(old_six, TEXTS[:2]))[:, 0],
                               atol=1e-5)
    assert HFClassifierScorer(str(save_classifier(tmp_path / "old-binary", ("neutral", "toxic"),
                                                  record_problem_type=False))).activation == "softmax"
    assert activation_for("single_label_classification", JIGSAW_ORDER) == "softmax"  # the config has the last word
    assert activation_for(None, ("toxicity",)) == "sigmoid"


def test_a_regression_model_reports_its_outputs_clipped_to_probabilities(tmp_path):
    """transformers' pipeline applies no function to a regression head; a sigmoid would squash its scores."""
    folder = save_classifier(tmp_path / "regression", ("toxicity",), regression=True, seed=1)
    scorer = HFClassifierScorer(str(folder))
    assert activation_for("regression", ("toxicity",)) == scorer.activation == "none"
    outputs = direct_logits(folder, TEXTS)[:, 0].numpy()
    assert (outputs < 0).any() and ((outputs > 0.1) & (outputs < 1)).any()  # both the clip and the identity show
    np.testing.assert_allclose(scorer.score(TEXTS)[:, 0], np.clip(outputs, 0, 1), atol=1e-5)


def test_an_explicit_activation_overrides_the_guess_and_keys_its_own_scores(binary, six_label, tmp_path):
    logits = direct_logits(binary, TEXTS[:3])
    guessed = make_scorer(f"hf:{binary}", cache_path=tmp_path / "s.sqlite")
    sigmoid = make_scorer(f"hf:{binary}?activation=sigmoid", cache_path=tmp_path / "s.sqlite")
    assert sigmoid.inner.activation == "sigmoid" and sigmoid.backend == f"{guessed.backend};activation=sigmoid"
    np.testing.assert_allclose(sigmoid.score(TEXTS[:3])[:, 0], torch.sigmoid(logits[:, 1]).numpy(), atol=1e-5)
    as_guessed = HFClassifierScorer(str(binary), activation="softmax")  # the guess itself: the same scores, one key
    assert as_guessed.backend == guessed.backend
    raw = HFClassifierScorer(str(six_label), activation="None")
    assert raw.backend.endswith(";activation=none")
    np.testing.assert_allclose(raw.score(TEXTS[:3])[:, 0], direct_logits(six_label, TEXTS[:3])[:, 0].clamp(0, 1),
                               atol=1e-5)
    with pytest.raises(ScorerError, match="activation 'tanh' is not one of sigmoid, softmax, none"):
        make_scorer(f"hf:{binary}?activation=tanh", cache_path=tmp_path / "s.sqlite")


def test_a_gpt2_style_classifier_pads_with_its_end_of_text_token(tmp_path, caplog):
    folder = save_gpt2_classifier(tmp_path / "gpt2-style", ("neutral", "toxic"))
    with caplog.at_level(logging.INFO, logger=hf_classifier.__name__):
        scorer = HFClassifierScorer(str(folder))
    assert scorer.tokenizer.pad_token == "<|endoftext|>" and scorer.model.config.pad_token_id == 0
    assert any("no padding token, padding with its end-of-text token" in r.getMessage() for r in caplog.records)
    texts = ["you are a rude idiot", "thank you", "i hate this recipe", "", "   "]  # different lengths: padded
    np.testing.assert_allclose(scorer.score(texts[:3])[:, 0], torch.softmax(direct_logits(folder, texts[:3]), -1)[:, 1],
                               atol=1e-5)  # the model reads each text's last real token, not the padding
    np.testing.assert_allclose(scorer.score(texts), np.concatenate([scorer.score([t]) for t in texts]), atol=1e-5)
    # its tokenizer adds no token of its own: an empty text is read as the end-of-text token alone
    np.testing.assert_allclose(scorer.score(["", "   "]), scorer.score(["<|endoftext|>"] * 2), atol=1e-6)
    with pytest.raises(ScorerError, match="neither a padding nor an end-of-text token"):
        HFClassifierScorer(str(save_gpt2_classifier(tmp_path / "no-eos", ("neutral", "toxic"), with_eos=False)))


def test_a_hub_model_is_keyed_by_the_commit_its_files_came_from(tmp_path, monkeypatch):
    """A synthetic hub cache: the snapshot folder of a commit holds a saved tiny classifier."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = save_classifier(tmp_path / "hub" / "models--org--name" / "snapshots" / commit, ("neutral", "toxic"))
    asked = []

    def download(repo_id, filename, *, revision=None):
        asked.append((repo_id, filename, revision))
        return str(snapshot / filename)

    monkeypatch.setattr(hf_classifier, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    scorer = make_scorer("hf:org/name", cache_path=tmp_path / "s.sqlite")
    assert scorer.backend == f"hf:org/name@{commit}" and asked == [("org/name", "config.json", None)]
    assert hub_pin(scorer.backend) == f"hf:org/name@{commit}" and hub_pin(f"{scorer.backend};labels=x=TOXICITY")
    assert hub_pin(make_scorer(f"hf:{snapshot}", cache_path=tmp_path / "s.sqlite").backend) is None  # a folder
    expected = torch.softmax(direct_logits(snapshot, TEXTS[:3]), -1)[:, 1].numpy()
    np.testing.assert_allclose(scorer.score(TEXTS[:3])[:, 0], expected, atol=1e-5)
    assert make_scorer("hf:org/name@main", cache_path=tmp_path / "s.sqlite").backend == scorer.backend
    assert asked[-1] == ("org/name", "config.json", "main")


def test_a_batch_scores_like_one_text_at_a_time(six_label):
    scorer = HFClassifierScorer(str(six_label))
    one_by_one = np.concatenate([scorer.score([t]) for t in TEXTS])
    np.testing.assert_allclose(scorer.score(TEXTS), one_by_one, atol=1e-5)  # padding changes nothing


def test_long_texts_are_truncated_to_the_model_length(six_label):
    scorer = HFClassifierScorer(str(six_label))
    assert scorer.max_length == 16
    long_text = "the garden plan is not very good " * 40
    prefix = " ".join(long_text.split()[:14])  # 14 words + [CLS] + [SEP] = the 16 positions the model has
    np.testing.assert_allclose(scorer.score([long_text]), scorer.score([prefix]), atol=1e-6)


def test_labels_we_cannot_read_are_refused_naming_them_and_the_way_out(tmp_path):
    folder = save_classifier(tmp_path / "hate", ("nothing", "hate"))
    with pytest.raises(ScorerError, match=r"no TOXICITY .*its labels: nothing, hate.*labels=hate=TOXICITY") as caught:
        make_scorer(f"hf:{folder}", cache_path=tmp_path / "s.sqlite")
    assert "hate" in str(caught.value) and str(folder) in str(caught.value)
    scorer = make_scorer(f"hf:{folder}?labels=hate=TOXICITY", cache_path=tmp_path / "s.sqlite")
    expected = torch.softmax(direct_logits(folder, TEXTS[:2]), -1)[:, 1].numpy()
    np.testing.assert_allclose(scorer.score(TEXTS[:2])[:, 0], expected, atol=1e-5)
    assert scorer.backend.endswith(";labels=hate=TOXICITY")  # another reading of the model: its own cache key


def test_an_explicit_mapping_replaces_the_table(six_label):
    scorer = HFClassifierScorer(str(six_label), labels={"toxic": "TOXICITY", "insult": "INSULT"})
    assert scorer.attributes == ("TOXICITY", "INSULT")
    full = HFClassifierScorer(str(six_label)).score(TEXTS[:3])
    np.testing.assert_allclose(scorer.score(TEXTS[:3]), full[:, [0, 2]], atol=1e-6)
    swapped = HFClassifierScorer(str(six_label), labels="insult=TOXICITY, toxic=INSULT")
    np.testing.assert_allclose(swapped.score(TEXTS[:3]), full[:, [2, 0]], atol=1e-6)
    assert swapped.backend != scorer.backend != HFClassifierScorer(str(six_label)).backend


def test_label_mapping_rules():
    assert parse_label_mapping("toxic=TOXICITY, insult=INSULT,") == {"toxic": "TOXICITY", "insult": "INSULT"}
    table = default_label_mapping(["Non-Toxic", "Toxic", "Identity Attack"])
    assert (table.attributes, table.columns) == (("TOXICITY", "IDENTITY_ATTACK"), (1, 2))
    with pytest.raises(ScorerError, match="both read as TOXICITY"):
        default_label_mapping(["toxic", "toxicity"])
    with pytest.raises(ScorerError, match="no label 'hateful'.*its labels: nothing, hate"):
        explicit_label_mapping(["nothing", "hate"], "hateful=TOXICITY")
    with pytest.raises(ScorerError, match="'RUDENESS' is not an attribute"):
        explicit_label_mapping(["nothing", "hate"], "hate=rudeness")
    with pytest.raises(ScorerError, match="not <model label>=<attribute>"):
        parse_label_mapping("hate")


def test_cache_key_names_the_weights_and_a_second_scorer_makes_no_forward_call(tmp_path):
    folder = save_classifier(tmp_path / "model", JIGSAW_ORDER, multi_label=True, seed=0)
    cache = tmp_path / "scores.sqlite"
    first = make_scorer(f"hf:{folder}", cache_path=cache)
    assert first.backend.startswith("hf:model@sha256:") and len(first.backend.split("sha256:")[1]) == 16
    scores = first.score(TEXTS)
    assert first.backend_calls == len(TEXTS)

    second = make_scorer(f"hf:{folder}", cache_path=cache)
    forwards = []
    second.inner.model.register_forward_hook(lambda *_: forwards.append(1))
    np.testing.assert_allclose(second.score(TEXTS), scores)
    assert second.backend == first.backend and second.backend_calls == 0 and forwards == []

    save_classifier(folder, JIGSAW_ORDER, multi_label=True, seed=1)  # retrained in place
    retrained = make_scorer(f"hf:{folder}", cache_path=cache)
    assert retrained.backend != first.backend
    new_scores = retrained.score(TEXTS)
    assert retrained.backend_calls == len(TEXTS) and not np.allclose(new_scores, scores, atol=1e-3)


def test_options_from_the_name_and_from_python(six_label, tmp_path, monkeypatch):
    scorer = make_scorer(f"hf:{six_label}?device=cpu&batch_size=2", cache_path=tmp_path / "s.sqlite")
    assert scorer.batch_size == 2 and scorer.inner.device == torch.device("cpu")
    auto = make_scorer(f"hf:{six_label}", cache_path=tmp_path / "s.sqlite", device="auto")
    assert auto.inner.device == resolve_device("auto")
    assert next(auto.inner.model.parameters()).device.type == resolve_device("auto").type
    with pytest.raises(ScorerError, match="unknown device 'gpu0'"):
        HFClassifierScorer(str(six_label), device="gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ScorerError, match="device 'cuda' asked for, but torch sees no CUDA GPU"):
        HFClassifierScorer(str(six_label), device="cuda")
    assert HFClassifierScorer(str(six_label), device="auto").device == torch.device("cpu")
    with pytest.raises(ScorerError, match="expected key=value with key one of device, labels, batch_size, activation"):
        make_scorer(f"hf:{six_label}?colour=red", cache_path=tmp_path / "s.sqlite")
    with pytest.raises(ScorerError, match="device given both"):
        make_scorer(f"hf:{six_label}?device=cpu", cache_path=tmp_path / "s.sqlite", device="cpu")
    with pytest.raises(ScorerError, match="batch_size must be a whole number"):
        make_scorer(f"hf:{six_label}?batch_size=many", cache_path=tmp_path / "s.sqlite")


def test_loading_errors_are_one_line_scorer_errors(tmp_path, monkeypatch):
    with pytest.raises(ScorerError, match="needs a model"):
        make_scorer("hf:", cache_path=tmp_path / "s.sqlite")
    with pytest.raises(ScorerError, match=r"hf classifier '.*missing': no such folder"):
        make_scorer(f"hf:{tmp_path / 'missing'}", cache_path=tmp_path / "s.sqlite")
    for path in ("org/name/extra", "toxic.gguf"):  # paths by load_model's rule, not hub ids
        with pytest.raises(ScorerError, match=rf"hf classifier '{path}': no such folder"):
            make_scorer(f"hf:{path}", cache_path=tmp_path / "s.sqlite")
    headless = save_classifier(tmp_path / "headless", JIGSAW_ORDER, with_head=False)
    with pytest.raises(ScorerError, match=r"classifier weights missing: classifier\.bias, classifier\.weight "
                                          r"\(architectures: \['BertModel'\]\)") as caught:
        HFClassifierScorer(str(headless))
    assert "\n" not in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScorerError, match="cannot load hf classifier") as caught:
        HFClassifierScorer(str(tmp_path / "empty"))
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as with no network and no cached copy
    with pytest.raises(ScorerError, match=r"hf classifier 'steer-away-tests/no-such-model' \(not a local folder\)") as hub:
        make_scorer("hf:steer-away-tests/no-such-model@v1", cache_path=tmp_path / "s.sqlite")
    assert "\n" not in str(hub.value)
