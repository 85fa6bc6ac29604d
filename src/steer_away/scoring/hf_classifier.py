"""Any Hugging Face text-classification toxicity model as a scorer: `hf:<hub id or local folder>`.

Labels we read, case-insensitive, with '-' and ' ' read as '_' (`LABEL_TABLE`):

    toxic, toxicity                    -> TOXICITY
    severe_toxic, severe_toxicity      -> SEVERE_TOXICITY
    obscene, profanity                 -> PROFANITY
    insult, insults                    -> INSULT
    threat, threats                    -> THREAT
    identity_hate, identity_attack     -> IDENTITY_ATTACK

A two-label model whose labels carry no names (LABEL_0, LABEL_1) reports TOXICITY = P(LABEL_1), the
"class 1 is the positive class" convention: check its model card. Other labels (neutral, non_toxic,
nothing, hate, ...) are not reported unless `labels` names them, e.g. `labels="hate=TOXICITY"`; an
explicit `labels` replaces the table. A model from which we cannot read TOXICITY is refused.

Probabilities follow the model's own training objective, read from its config (`activation_for`,
as transformers' text-classification pipeline reads it): `problem_type` "multi_label_classification"
(independent labels, as Jigsaw's six) or a single logit -> a sigmoid per label;
"single_label_classification" (mutually exclusive classes) -> a softmax over all its labels, so a
binary {neutral, toxic} model's TOXICITY is P(toxic); "regression" -> the outputs as they are
("none"), clipped to [0, 1] because every attribute we report is a probability (a regression head
trained on [0, 1] targets can stray slightly outside). A config without a `problem_type` (saved
before transformers recorded one) gets a sigmoid when two or more of its labels are toxicity
attributes (one text can be toxic and insulting: such labels are independent), else a softmax.
`activation="sigmoid" | "softmax" | "none"` (`?activation=...` in the name) overrides the guess.

Texts longer than the model's limit are cut on the right: their end, where toxicity often sits in a
continuation, is not scored. A tokenizer without a padding token (GPT-2 style) pads with its
end-of-text token.

Scores are cached by `backend`, which names the model and its exact revision: `hf:<id>@<commit>` for
a hub model (the commit the files came from, online or from the local cache) and
`hf:<folder name>@sha256:<16 hex>` for a local folder, a hash of every file in it (not dotfiles nor
*.md), so retraining a local model never reuses its old scores. A `labels` mapping other than the
table's, and an activation other than the guess, are part of the key too.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import hf_hub_download
from rich.markup import escape
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from steer_away.models import ModelLoadError, looks_like_path, resolve_device
from steer_away.scoring.base import ATTRIBUTES, ScorerError, ToxicityScorer

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
LABEL_TABLE: dict[str, str] = {
    "toxic": "TOXICITY", "toxicity": "TOXICITY",
    "severe_toxic": "SEVERE_TOXICITY", "severe_toxicity": "SEVERE_TOXICITY",
    "obscene": "PROFANITY", "profanity": "PROFANITY",
    "insult": "INSULT", "insults": "INSULT",
    "threat": "THREAT", "threats": "THREAT",
    "identity_hate": "IDENTITY_ATTACK", "identity_attack": "IDENTITY_ATTACK",
}
UNNAMED_BINARY = ("label_0", "label_1")  # transformers' default names: no names were given at training
ACTIVATIONS = ("sigmoid", "softmax", "none")  # "none": the outputs as they are (regression), clipped to [0, 1]
SPEC_OPTIONS = ("device", "labels", "batch_size", "activation")  # what `hf:<model>?key=value&...` may set
_COMMIT = re.compile(r"[0-9a-f]{40}")
_HUB_KEY = re.compile(rf"{HF_PREFIX}([^@;?]+)@([0-9a-f]{{40}})(?:;|$)")
_HUGE_MAX_LENGTH = 100_000  # tokenizers with no limit of their own report ~1e30


def _norm(label: str) -> str:
    return label.strip().lower().replace("-", "_").replace(" ", "_")


def _cause(err: BaseException) -> str:
    """The first line of an exception, for a one-line error (hub errors run over many lines)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


@dataclass(frozen=True)
class LabelMapping:
    """Which output column of the classifier each reported attribute reads, in ATTRIBUTES order."""

    attributes: tuple[str, ...]
    columns: tuple[int, ...]

    def describe(self, labels: Sequence[str]) -> str:
        """As `labels=` takes it: 'toxic=TOXICITY,insult=INSULT'."""
        return ",".join(f"{labels[c]}={a}" for a, c in zip(self.attributes, self.columns))


def _ordered(found: Mapping[str, int]) -> LabelMapping:
    attributes = tuple(a for a in ATTRIBUTES if a in found)
    return LabelMapping(attributes, tuple(found[a] for a in attributes))


def default_label_mapping(labels: Sequence[str]) -> LabelMapping:
    """The table's reading of a model's labels (may lack TOXICITY; the caller decides)."""
    names = [_norm(label) for label in labels]
    if tuple(names) == UNNAMED_BINARY:
        return LabelMapping(("TOXICITY",), (1,))
    found: dict[str, int] = {}
    for column, name in enumerate(names):
        attribute = LABEL_TABLE.get(name)
        if attribute is None:
            continue
        if attribute in found:
            raise ScorerError(f"labels '{labels[found[attribute]]}' and '{labels[column]}' both read as {attribute}; "
                              "choose with labels='<label>=ATTRIBUTE,...'")
        found[attribute] = column
    return _ordered(found)


def parse_label_mapping(text: str) -> dict[str, str]:
    """'toxic=TOXICITY,insult=INSULT' -> {'toxic': 'TOXICITY', 'insult': 'INSULT'}."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        label, sep, attribute = item.rpartition("=")
        if not sep or not label.strip() or not attribute.strip():
            raise ScorerError(f"labels: '{item}' is not <model label>=<attribute> (e.g. toxic=TOXICITY)")
        pairs[label.strip()] = attribute.strip()
    return pairs


def explicit_label_mapping(labels: Sequence[str], wanted: str | Mapping[str, str]) -> LabelMapping:
    """The caller's reading of a model's labels; every name must exist on both sides."""
    pairs = parse_label_mapping(wanted) if isinstance(wanted, str) else dict(wanted)
    columns = {_norm(label): column for column, label in enumerate(labels)}
    found: dict[str, int] = {}
    for label, attribute in pairs.items():
        column = columns.get(_norm(label))
        if column is None:
            raise ScorerError(f"labels: the model has no label '{label}' (its labels: {', '.join(labels)})")
        attribute = attribute.upper()
        if attribute not in ATTRIBUTES:
            raise ScorerError(f"labels: '{attribute}' is not an attribute (choose from {', '.join(ATTRIBUTES)})")
        if attribute in found:
            raise ScorerError(f"labels: two labels map to {attribute}")
        found[attribute] = column
    return _ordered(found)


def activation_for(problem_type: str | None, labels: Sequence[str]) -> str:
    """One of ACTIVATIONS, by the rule in the module docstring."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or len(labels) == 1:
        return "sigmoid"
    if problem_type is None and sum(_norm(label) in LABEL_TABLE for label in labels) >= 2:
        return "sigmoid"
    return "softmax"


def folder_fingerprint(folder: Path) -> str:
    """16 hex digits of a SHA-256 over the names and bytes of every file directly in `folder`
    (dotfiles and *.md excepted): config, weights and tokenizer, whatever their format."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() == ".md":
            continue
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _device(device: str) -> torch.device:
    """`resolve_device`'s choice, refused as a ScorerError when it cannot be used."""
    try:
        return resolve_device(device)
    except ModelLoadError:  # a GPU asked for that this machine does not have
        raise ScorerError(f"hf scorer: device '{device}' asked for, but torch sees no CUDA GPU") from None
    except (RuntimeError, ValueError) as err:
        raise ScorerError(f"hf scorer: unknown device '{device}' ({_cause(err)})") from err


def _activation(activation: str | None) -> str | None:
    if activation is None:
        return None
    if activation.lower() not in ACTIVATIONS:
        raise ScorerError(f"hf scorer: activation '{activation}' is not one of {', '.join(ACTIVATIONS)}")
    return activation.lower()


def hub_pin(backend: str) -> str | None:
    """'hf:<id>@<commit>' when `backend` is the cache key of a hub model, the name that loads that revision
    again; None for any other scorer (a local folder has no revision to pin)."""
    match = _HUB_KEY.match(backend)
    return f"{HF_PREFIX}{match[1]}@{match[2]}" if match else None


def _locate(model: str, revision: str | None) -> tuple[str, str | None, str]:
    """(what to load, the commit to load it at, '<name>@<revision>' for the cache key)."""
    if looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ScorerError(f"hf classifier '{model}': no such folder")
        if revision:
            raise ScorerError(f"hf classifier '{model}': a local folder has no revision (got '{revision}')")
        return str(folder), None, f"{folder.resolve().name}@sha256:{folder_fingerprint(folder)}"
    try:  # the hub answers with the commit it serves, or the local cache with the one it holds
        config_path = Path(hf_hub_download(model, "config.json", revision=revision))
    except Exception as err:  # unknown repo, no network and not cached, gated, ...
        raise ScorerError(f"hf classifier '{model}' (not a local folder): {_cause(err)}") from err
    commit = config_path.parent.name
    if not _COMMIT.fullmatch(commit):
        raise ScorerError(f"hf classifier '{model}': cannot tell which commit was loaded ({config_path})")
    return model, commit, f"{model}@{commit}"


class HFClassifierScorer(ToxicityScorer):
    """A transformers sequence classifier, batched and under inference mode, on the device asked for."""

    def __init__(self, model: str, *, revision: str | None = None, labels: str | Mapping[str, str] | None = None,
                 activation: str | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        if not model.strip():
            raise ScorerError("the hf scorer needs a model: hf:<hub id or local folder>, e.g. hf:unitary/toxic-bert")
        if batch_size < 1:
            raise ScorerError(f"hf scorer: batch_size must be >= 1, got {batch_size}")
        self.device = _device(device)
        chosen_activation = _activation(activation)
        self.preferred_batch_size = batch_size
        source, commit, identity = _locate(model, revision)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=commit)
            self.model, info = AutoModelForSequenceClassification.from_pretrained(
                source, revision=commit, dtype=torch.float32, output_loading_info=True)
        except Exception as err:  # not a classifier config, unreadable weights, unknown architecture, ...
            raise ScorerError(f"cannot load hf classifier '{model}': {_cause(err)}") from err
        missing = sorted(info["missing_keys"])
        if missing:  # transformers would score with randomly initialised weights in their place
            more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            raise ScorerError(f"hf classifier '{model}': classifier weights missing: {', '.join(missing[:4])}{more} "
                              f"(architectures: {self.model.config.architectures}); is it a trained sequence classifier?")
        self._pad_with_eos(model)
        self.model.to(self.device).eval()
        config = self.model.config
        self.label_names = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.mapping = self._mapping(model, labels)
        self.attributes = self.mapping.attributes
        guess = activation_for(config.problem_type, self.label_names)
        self.activation = chosen_activation or guess
        limit = self.tokenizer.model_max_length
        if not limit or limit > _HUGE_MAX_LENGTH:  # minus 2: RoBERTa-style position ids start after the padding id
            limit = getattr(config, "max_position_embeddings", 514) - 2
        self.max_length = int(limit)
        self.backend = f"{HF_PREFIX}{identity}" + self._key_suffix(labels)
        if self.activation != guess:  # other probabilities from the same weights: their own scores
            self.backend += f";activation={self.activation}"
        log.info(escape(f"toxicity scorer {self.backend}: {self.mapping.describe(self.label_names)} "
                        f"({self.activation}), on {self.device}"))

    def _pad_with_eos(self, model: str) -> None:
        """GPT-2-style classifiers have no padding token and are batched with their end-of-text token; the
        model must know it too, as it reads the last token that is not padding."""
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ScorerError(f"hf classifier '{model}': its tokenizer has neither a padding nor an end-of-text "
                                  "token, so texts cannot be batched")
            self.tokenizer.pad_token = self.tokenizer.eos_token
            log.info(escape(f"hf classifier '{model}': no padding token, padding with its end-of-text token "
                            f"'{self.tokenizer.eos_token}'"))
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _mapping(self, model: str, labels: str | Mapping[str, str] | None) -> LabelMapping:
        how = "reading its labels with our table"
        if labels is not None:
            mapping, how = explicit_label_mapping(self.label_names, labels), "with the labels given"
        else:
            mapping = default_label_mapping(self.label_names)
            if tuple(_norm(n) for n in self.label_names) == UNNAMED_BINARY:
                log.warning(escape(f"hf classifier '{model}' has unnamed labels: TOXICITY is taken as P(LABEL_1); "
                                   "check its model card, or pass labels='LABEL_0=TOXICITY'"))
        if "TOXICITY" not in mapping.attributes:
            example = self.label_names[-1]
            raise ScorerError(f"hf classifier '{model}': no TOXICITY {how} (its labels: {', '.join(self.label_names)}); "
                              f"name the toxic label: hf:{model}?labels={example}=TOXICITY on the command line, "
                              f"labels='{example}=TOXICITY' from Python")
        return mapping

    def _key_suffix(self, labels: str | Mapping[str, str] | None) -> str:
        """A mapping other than the table's reads other columns: it must not share the table's scores."""
        if labels is None:
            return ""
        try:
            default: LabelMapping | None = default_label_mapping(self.label_names)
        except ScorerError:
            default = None
        return "" if self.mapping == default else f";labels={self.mapping.describe(self.label_names)}"

    @classmethod
    def from_spec(cls, spec: str, **options: Any) -> HFClassifierScorer:
        """From the text after 'hf:': `<model>[@<revision>][?device=cuda&labels=toxic=TOXICITY,...&batch_size=64
        &activation=sigmoid]`
        (the form a command line or a TOML file can carry); `options` are the same keywords from Python."""
        model, _, query = spec.partition("?")
        given: dict[str, Any] = {}
        for item in filter(None, query.split("&")):
            key, sep, value = item.partition("=")
            if not sep or key not in SPEC_OPTIONS:
                raise ScorerError(f"hf scorer option '{item}': expected key=value with key one of {', '.join(SPEC_OPTIONS)}")
            given[key] = value
        if "batch_size" in given:
            try:
                given["batch_size"] = int(given["batch_size"])
            except ValueError:
                raise ScorerError(f"hf scorer: batch_size must be a whole number, got '{given['batch_size']}'") from None
        if "@" in model and not looks_like_path(model):
            model, _, given["revision"] = model.rpartition("@")
        clash = sorted(given.keys() & options.keys())
        if clash:
            raise ScorerError(f"hf scorer: {', '.join(clash)} given both in '{HF_PREFIX}{spec}' and as an argument")
        return cls(model, **given, **options)

    def _encode(self, texts: Sequence[str]) -> Any:
        """The padded batch, on the model's device. A tokenizer that adds no token of its own (GPT-2's) leaves an
        empty text nothing to classify: it is read as the end-of-text token alone, a document with nothing in it,
        the same in any batch."""
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        empty = encoded["attention_mask"].sum(dim=1) == 0
        if empty.any():
            if encoded["input_ids"].shape[1] == 0:  # every text is empty: make room for one token
                for key, value in encoded.items():
                    encoded[key] = torch.full((len(texts), 1), self.tokenizer.pad_token_id if key == "input_ids" else 0,
                                              dtype=value.dtype)
            column = -1 if self.tokenizer.padding_side == "left" else 0
            filler = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else self.tokenizer.pad_token_id
            encoded["input_ids"][empty, column] = filler
            encoded["attention_mask"][empty, column] = 1
        return encoded.to(self.device)

    @torch.inference_mode()
    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        logits = self.model(**self._encode(texts)).logits.float()
        if self.activation == "sigmoid":
            probabilities = torch.sigmoid(logits)
        elif self.activation == "softmax":
            probabilities = torch.softmax(logits, dim=-1)
        else:
            probabilities = logits.clamp(0.0, 1.0)
        return probabilities[:, list(self.mapping.columns)].double().cpu().numpy()
