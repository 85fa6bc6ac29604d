"""Synthetic tiny text classifiers saved as Hugging Face folders: random weights, a vocabulary we wrote,
no download. Their scores mean nothing; tests check how the scorer reads them."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

WORDS = ["you", "are", "a", "kind", "rude", "idiot", "thank", "for", "the", "answer", "i", "hate", "this", "recipe",
         "dinner", "tonight", "we", "cook", "slow", "friend", "careful", "reply", "plan", "garden", "rain", "is", "not",
         "very", "good", "bad"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
JIGSAW_ORDER = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAX_LENGTH = 16  # small on purpose: a long text must be truncated or the position table overflows


def _spread(model: torch.nn.Module) -> torch.nn.Module:
    """Random init gives near-equal logits; spread them so columns (and texts) differ clearly."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0 if p.ndim > 1 else 1.0)
    return model


def save_classifier(folder: Path, labels: tuple[str, ...] | None, *, multi_label: bool = False, seed: int = 0,
                    num_labels: int = 2, with_head: bool = True, record_problem_type: bool = True,
                    regression: bool = False) -> Path:
    """A 2-layer, hidden-size-32 BERT classifier in `folder`; `labels=None` keeps transformers' LABEL_i names;
    `record_problem_type=False` saves a config like those written before transformers recorded it;
    `regression=True` a regression head (a score per label, no activation at training)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}, model_max_length=MAX_LENGTH)
    tokenizer.save_pretrained(folder)
    named = {} if labels is None else {"id2label": dict(enumerate(labels)),
                                       "label2id": {label: i for i, label in enumerate(labels)}}
    config = BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_LENGTH,
                        num_labels=len(labels) if labels else num_labels,
                        **named)
    if regression:
        config.problem_type = "regression"
    elif record_problem_type:
        config.problem_type = "multi_label_classification" if multi_label else "single_label_classification"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config) if with_head else BertModel(config)
    _spread(model).save_pretrained(folder)
    return folder


def save_gpt2_classifier(folder: Path, labels: tuple[str, ...], *, seed: int = 0, with_eos: bool = True) -> Path:
    """A 2-layer GPT-2 classifier whose tokenizer, like GPT-2's, has an end-of-text token and no padding
    token (a word-level vocabulary of ours instead of GPT-2's BPE); the config sets no pad_token_id either.
    `with_eos=False`: no end-of-text token either."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "[UNK]", *WORDS])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"} if with_eos else {}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]", model_max_length=MAX_LENGTH,
                                        **special)
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(folder)
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=MAX_LENGTH,
                        bos_token_id=0, eos_token_id=0, pad_token_id=None, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
                        problem_type="single_label_classification")
    torch.manual_seed(seed)
    _spread(GPT2ForSequenceClassification(config)).save_pretrained(folder)
    return folder
