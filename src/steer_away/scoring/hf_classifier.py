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

Probabilities follow the model's own training objective, read from its config (`activation_for`):
`problem_type` "multi_label_classification" (independent labels, as Jigsaw's six) or a single logit
-> a sigmoid per label; "single_label_classification" (mutually exclusive classes) -> a softmax over
all its labels, so a binary {neutral, toxic} model's TOXICITY is P(toxic). A config without a
`problem_type` (saved before transformers recorded one) gets a sigmoid when two or more of its labels
are toxicity attributes (one text can be toxic and insulting: such labels are independent), else a
softmax.

Scores are cached by `backend`, which names the model and its exact revision: `hf:<id>@<commit>` for
a hub model (the commit the files came from, online or from the local cache) and
`hf:<folder name>@sha256:<16 hex>` for a local folder, a hash of every file in it (not dotfiles nor
*.md), so retraining a local model never reuses its old scores. A `labels` mapping other than the
table's is part of the key too.
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
SPEC_OPTIONS = ("device", "labels", "batch_size")  # what `hf:<model>?key=value&...` may set
_COMMIT = re.compile(r"[0-9a-f]{40}")
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
    """'sigmoid' or 'softmax', by the rule in the module docstring."""
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


def looks_local(model: str) -> bool:
    """A folder, not a hub id ('name' or 'org/name')."""
    path = Path(model).expanduser()
    return path.exists() or path.is_absolute() or model.startswith((".", "~")) or "\\" in model or model.count("/") > 1


def pick_device(device: str) -> torch.device:
    """'auto' is the first GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ScorerError(f"hf scorer: unknown device '{device}' ({_cause(err)})") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ScorerError(f"hf scorer: device '{device}' asked for, but torch sees no CUDA GPU")
    return chosen


def _locate(model: str, revision: str | None) -> tuple[str, str | None, str]:
    """(what to load, the commit to load it at, '<name>@<revision>' for the cache key)."""
    if looks_local(model):
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
                 device: str = "cpu", batch_size: int = 32) -> None:
        if not model.strip():
            raise ScorerError("the hf scorer needs a model: hf:<hub id or local folder>, e.g. hf:unitary/toxic-bert")
        if batch_size < 1:
            raise ScorerError(f"hf scorer: batch_size must be >= 1, got {batch_size}")
        self.device = pick_device(device)
        self.preferred_batch_size = batch_size
        source, commit, identity = _locate(model, revision)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, revision=commit)
            self.model, info = AutoModelForSequenceClassification.from_pretrained(
                source, revision=commit, dtype=torch.float32, output_loading_info=True)
        except Exception as err:  # not a classifier config, unreadable weights, unknown architecture, ...
            raise ScorerError(f"cannot load hf classifier '{model}': {_cause(err)}") from err
        if info["missing_keys"]:
            raise ScorerError(f"hf classifier '{model}' is not a trained sequence classifier: its weights lack "
                              f"{', '.join(sorted(info['missing_keys'])[:3])} (architectures: {self.model.config.architectures})")
        if self.tokenizer.pad_token is None:
            raise ScorerError(f"hf classifier '{model}': its tokenizer has no padding token, so texts cannot be batched")
        self.model.to(self.device).eval()
        config = self.model.config
        self.label_names = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.mapping = self._mapping(model, labels)
        self.attributes = self.mapping.attributes
        self.activation = activation_for(config.problem_type, self.label_names)
        limit = self.tokenizer.model_max_length
        if not limit or limit > _HUGE_MAX_LENGTH:  # minus 2: RoBERTa-style position ids start after the padding id
            limit = getattr(config, "max_position_embeddings", 514) - 2
        self.max_length = int(limit)
        self.backend = f"{HF_PREFIX}{identity}" + self._key_suffix(labels)
        log.info(escape(f"toxicity scorer {self.backend}: {self.mapping.describe(self.label_names)} "
                        f"({self.activation}), on {self.device}"))

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
        """From the text after 'hf:': `<model>[@<revision>][?device=cuda&labels=toxic=TOXICITY,...&batch_size=64]`
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
        if "@" in model and not looks_local(model):
            model, _, given["revision"] = model.rpartition("@")
        clash = sorted(given.keys() & options.keys())
        if clash:
            raise ScorerError(f"hf scorer: {', '.join(clash)} given both in '{HF_PREFIX}{spec}' and as an argument")
        return cls(model, **given, **options)

    @torch.inference_mode()
    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
        logits = self.model(**encoded).logits.float()
        probabilities = torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=-1)
        return probabilities[:, list(self.mapping.columns)].double().cpu().numpy()
