"""Offline default scorer: the Jigsaw BiLSTM shipped in the `toxic-comment-classifier` wheel.

Its own code needs TensorFlow; the network is small (embedding, one bidirectional LSTM, two dense
layers), so we rebuild it in torch from the wheel's weight file. Keras and torch share the LSTM
gate order (input, forget, cell, output), so kernels transfer by transposition. The tokenizer is
a pickled Keras object: we read it with an unpickler that builds nothing but plain containers.
"""

from __future__ import annotations

import builtins
import collections
import importlib.util
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from steer_away.scoring.base import ScorerError, ToxicityScorer

# Jigsaw label -> Perspective attribute, in the classifier's output order.
JIGSAW_LABELS = (("toxic", "TOXICITY"), ("severe_toxic", "SEVERE_TOXICITY"), ("obscene", "PROFANITY"),
           ("threat", "THREAT"), ("insult", "INSULT"), ("identity_hate", "IDENTITY_ATTACK"))
_MAXLEN = 100


class _TokenizerState:
    """Stands in for keras' Tokenizer: receives its attributes, runs none of its code."""


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = frozenset({("collections", "OrderedDict"), ("collections", "defaultdict"), ("builtins", "int"),
                          ("builtins", "dict"), ("builtins", "list"), ("builtins", "str"), ("builtins", "float")})

    def find_class(self, module: str, name: str) -> object:
        if name == "Tokenizer" and module.startswith("keras"):
            return _TokenizerState
        if (module, name) in self._ALLOWED:
            return getattr(collections if module == "collections" else builtins, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the tokenizer pickle")


def _package_dir() -> Path:
    spec = importlib.util.find_spec("toxic_classifier")
    if spec is None or not spec.submodule_search_locations:
        raise ScorerError("the offline scorer needs 'toxic-comment-classifier' "
                          "(pip install --no-deps toxic-comment-classifier==0.3.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class _BiLSTMClassifier(torch.nn.Module):
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        super().__init__()
        emb = torch.from_numpy(weights["embedding"])
        self.embedding = torch.nn.Embedding.from_pretrained(emb, freeze=True)
        units = weights["forward/1"].shape[0]
        self.lstm = torch.nn.LSTM(emb.shape[1], units, batch_first=True, bidirectional=True)
        for direction, suffix in (("forward", ""), ("backward", "_reverse")):
            getattr(self.lstm, f"weight_ih_l0{suffix}").data = torch.from_numpy(weights[f"{direction}/0"].T.copy())
            getattr(self.lstm, f"weight_hh_l0{suffix}").data = torch.from_numpy(weights[f"{direction}/1"].T.copy())
            getattr(self.lstm, f"bias_ih_l0{suffix}").data = torch.from_numpy(weights[f"{direction}/2"].copy())
            getattr(self.lstm, f"bias_hh_l0{suffix}").data.zero_()
        self.dense = torch.nn.Linear(2 * units, weights["dense/0"].shape[1])
        self.dense.weight.data = torch.from_numpy(weights["dense/0"].T.copy())
        self.dense.bias.data = torch.from_numpy(weights["dense/1"].copy())
        self.out = torch.nn.Linear(weights["dense_1/0"].shape[0], weights["dense_1/0"].shape[1])
        self.out.weight.data = torch.from_numpy(weights["dense_1/0"].T.copy())
        self.out.bias.data = torch.from_numpy(weights["dense_1/1"].copy())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(self.embedding(ids))
        pooled = seq.max(dim=1).values
        return torch.sigmoid(self.out(torch.relu(self.dense(pooled))))


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    import h5py

    with h5py.File(path, "r") as f:
        layers = f["layers"]
        out = {"embedding": layers["embedding/vars/0"][()]}
        for direction in ("forward", "backward"):
            for i in range(3):
                out[f"{direction}/{i}"] = layers[f"bidirectional/{direction}_layer/cell/vars/{i}"][()]
        for name in ("dense", "dense_1"):
            for i in range(2):
                out[f"{name}/{i}"] = layers[f"{name}/vars/{i}"][()]
    return {k: v.astype(np.float32) for k, v in out.items()}


class JigsawBiLSTMScorer(ToxicityScorer):
    """Six Jigsaw toxicity probabilities per text, on the CPU, with no network or key."""

    backend = "jigsaw-bilstm"
    attributes = tuple(attr for _, attr in JIGSAW_LABELS)

    def __init__(self, model_dir: str | Path | None = None) -> None:
        folder = Path(model_dir) if model_dir else _package_dir()
        try:
            with open(folder / "tokenizer.pickle", "rb") as handle:
                state = _SafeUnpickler(handle).load()
            weights = _read_weights(folder / "model.weights.h5")
        except (OSError, KeyError, pickle.UnpicklingError) as err:
            raise ScorerError(f"cannot read the offline toxicity model in {folder}: {err}") from err
        self._word_index: dict[str, int] = state.word_index
        self._num_words: int = state.num_words
        self._filters = str.maketrans({c: state.split for c in state.filters})
        self._split: str = state.split
        self._lower: bool = state.lower
        self._net = _BiLSTMClassifier(weights).eval()

    def token_ids(self, text: str) -> list[int]:
        """Keras `texts_to_sequences` semantics: lower-case, strip filters, keep ids < num_words."""
        if self._lower:
            text = text.lower()
        words = [w for w in text.translate(self._filters).split(self._split) if w]
        ids = [self._word_index.get(w) for w in words]
        return [i for i in ids if i is not None and i < self._num_words]

    def _pad(self, texts: Sequence[str]) -> torch.Tensor:
        batch = torch.zeros((len(texts), _MAXLEN), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.token_ids(text)[-_MAXLEN:]  # Keras pre-truncates and pre-pads
            if ids:
                batch[row, _MAXLEN - len(ids):] = torch.tensor(ids)
        return batch

    @torch.inference_mode()
    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self._net(self._pad(texts)).double().numpy()
