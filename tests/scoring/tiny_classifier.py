"""Synthetic tiny text classifiers saved as Hugging Face folders: random weights, a vocabulary we wrote,
no download. Their scores mean nothing; tests check how the scorer reads them."""

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

WORDS = ["you", "are", "a", "kind", "rude", "idiot", "thank", "for", "the", "answer", "i", "hate", "this", "recipe",
         "dinner", "tonight", "we", "cook", "slow", "friend", "careful", "reply", "plan", "garden", "rain", "is", "not",
         "very", "good", "bad"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
JIGSAW_ORDER = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAX_LENGTH = 16  # small on purpose: a long text must be truncated or the position table overflows


def save_classifier(folder: Path, labels: tuple[str, ...] | None, *, multi_label: bool = False, seed: int = 0,
                    num_labels: int = 2, with_head: bool = True, record_problem_type: bool = True) -> Path:
    """A 2-layer, hidden-size-32 BERT classifier in `folder`; `labels=None` keeps transformers' LABEL_i names;
    `record_problem_type=False` saves a config like those written before transformers recorded it."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(folder)
    named = {} if labels is None else {"id2label": dict(enumerate(labels)),
                                       "label2id": {label: i for i, label in enumerate(labels)}}
    config = BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_LENGTH,
                        num_labels=len(labels) if labels else num_labels,
                        **named)
    if record_problem_type:
        config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if with_head else BertModel(config)
    with torch.no_grad():  # random init gives near-equal logits; spread them so columns differ clearly
        for p in model.parameters():
            p.mul_(8.0 if p.ndim > 1 else 1.0)
    model.save_pretrained(folder)
    return folder
