"""steer-away as a model of lm-evaluation-harness, registered as `steer-away`: any lm-eval task
(multiple choice, perplexity, generation) runs under any registered steering method.

    steer-away lm-eval --model steer-away --model_args method=caa-dislike,user=u0001,vectors=runs/v \\
        --tasks mmlu --batch_size 16

lm-eval 0.4.13 finds models only in its own registry (it has no plug-in entry point for models
yet), so `steer-away lm-eval` registers this one and then hands every argument to lm-eval's own
command line; from Python, importing this module registers it for `lm_eval.simple_evaluate`.

Requests keep lm-eval's own tokenisation (`TemplateLM`: trailing spaces of a context move to its
continuation, which is what the whole text's tokens leave after the context's), so unsteered our
log-likelihoods are lm-eval's `hf` model's. Contexts are plain text fed as given; with
`--apply_chat_template` lm-eval renders them through the model's chat template first. A method's
extra branches (EADS, ACD) see their system prompt, rendered through the template, before the
same context tokens.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  lm-eval's own models first: it fills its registry lazily only while empty
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from steer_away.chat import plain_text
from steer_away.errors import InputError
from steer_away.generation import GenerationConfig, generate, token_continuation_scores
from steer_away.models import LanguageModel, load_model
from steer_away.resources import mmlu_fixture_path
from steer_away.steering.base import RowSteering, SteeringMethod
from steer_away.steering.registry import build_method, default_method
from steer_away.steering.resources import SteeringResources

log = logging.getLogger(__name__)

MODEL_NAME = "steer-away"
DEFAULT_BATCH_SIZE = 16  # continuation rows per forward pass; "auto" picks this too
DEFAULT_MAX_GEN_TOKENS = 256  # lm-eval's own default for generate_until
ROLLING_TOKENS = 4096  # window tokens scored per pass in perplexity tasks (their logits: 0.8 GB at 49k vocab)


def _batch_size(value: object) -> int:
    """An lm-eval batch size: a positive integer, or 'auto' / 'auto:N' (our default: we do not probe memory)."""
    text = str(value)
    if text.startswith("auto"):
        return DEFAULT_BATCH_SIZE
    if not text.isdigit() or int(text) < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', got {value!r}")
    return int(text)


@register_model(MODEL_NAME)
class SteerAwayLM(TemplateLM):
    """lm-eval's view of one steered model: every request is scored or answered for one user.

    `model_args`: model (hub id, folder, .gguf; default the embedded SmolLM2-135M-Instruct), method
    (a registered steering method), user, vectors, profiles, categories, allow_other_model,
    max_length, and any argument of the chosen method (alpha, layers, gate, ...).
    """

    def __init__(self, model: str | LanguageModel | None = None, method: str | None = None, user: str | None = None,
                 vectors: str | None = None, profiles: str | None = None, categories: str | None = None,
                 allow_other_model: bool = False, device: str | None = None, batch_size: int | str = DEFAULT_BATCH_SIZE,
                 max_length: int | None = None, **method_args: Any) -> None:
        super().__init__()
        if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("device %s asked for but CUDA is not available: running on the CPU", device)
            device = "cpu"  # lm-eval's command line asks for cuda unless told otherwise, as its hf model we fall back
        lm = load_model(model, device=device) if model is None or isinstance(model, str) else model
        name = method or default_method(with_vectors=vectors is not None)
        resources = SteeringResources(lm, profiles=profiles, vectors=vectors, categories=categories,
                                      allow_other_model=bool(allow_other_model))
        self.lm = lm
        self.method: SteeringMethod = build_method(name, method_args, resources)
        self.row = RowSteering(user_id=None if user is None else str(user))
        self.tokenizer = lm.tokenizer
        self.batch_size = _batch_size(batch_size)
        configured = getattr(lm.model.config, "max_position_embeddings", None)
        self.max_length = int(max_length or configured or 2048)

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        """What an empty context starts from: BOS where the tokenizer has one, as lm-eval's hf model does."""
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.lm.model_id.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"])

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      continue_final_message=not add_generation_prompt))

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Continuations of one context share its encoding; contexts of like length share a batch."""
        by_context: dict[tuple[int, ...], list[int]] = {}
        for index, (_, context_ids, continuation_ids) in enumerate(requests):
            fitted, _ = self._fit(context_ids, continuation_ids)
            by_context.setdefault(tuple(fitted), []).append(index)
        contexts = sorted(by_context, key=len, reverse=True)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        bar = tqdm(total=len(requests), desc="steer-away: scoring", disable=disable_tqdm)
        batch: list[tuple[int, ...]] = []
        for position, context in enumerate(contexts):
            batch.append(context)
            rows = sum(len(by_context[c]) for c in batch)
            if rows >= self.batch_size or position == len(contexts) - 1:
                members = [by_context[c] for c in batch]
                continuations = [[self._fit(requests[i][1], requests[i][2])[1] for i in own] for own in members]
                scored = token_continuation_scores(self.lm, batch, continuations, self.method,
                                                   [self.row] * len(batch))
                for own, scores in zip(members, scored):
                    for index, score in zip(own, scores):
                        results[index] = (score.loglik, score.greedy)
                        self.cache_hook.add_partial("loglikelihood", requests[index][0], results[index])
                bar.update(rows)
                batch = []
        bar.close()
        return results

    def _fit(self, context: Sequence[int], continuation: Sequence[int]) -> tuple[list[int], list[int]]:
        """Context and continuation within max_length, dropping the context's oldest tokens as lm-eval's hf does."""
        if len(continuation) > self.max_length:
            raise InputError(f"a continuation of {len(continuation)} tokens exceeds max_length {self.max_length}")
        keep = self.max_length + 1 - len(continuation)
        return list(context)[-keep:], list(continuation)

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Whole-text log-likelihood over disjoint windows of max_length tokens, as lm-eval scores perplexity."""
        out: list[float] = []
        for request in tqdm(requests, desc="steer-away: rolling", disable=disable_tqdm):
            (text,) = request.args
            windows = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            total, start = 0.0, 0
            while start < len(windows):  # a pass's logits are (tokens, vocab): a token budget, not a row count
                stop = start + 1
                while stop < len(windows) and sum(len(t) for _, t in windows[start:stop + 1]) <= ROLLING_TOKENS:
                    stop += 1
                chunk = windows[start:stop]
                scored = token_continuation_scores(self.lm, [c for c, _ in chunk], [[t] for _, t in chunk],
                                                   self.method, [self.row] * len(chunk))
                total += sum(own[0].loglik for own in scored)
                start = stop
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Answers through the decode loop the server runs, cut at the first stop string."""
        out: list[str] = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(index)
        bar = tqdm(total=len(requests), desc="steer-away: generating", disable=disable_tqdm)
        for members in groups.values():
            kwargs = dict(requests[members[0]].args[1])
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.get("temperature") or 0.0)  # lm-eval's 0.0 means greedy, as in its hf model
            do_sample = bool(kwargs.get("do_sample", temperature > 0))
            config = GenerationConfig(max_new_tokens=int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKENS)),
                                      do_sample=do_sample, temperature=temperature if do_sample else 1.0,
                                      top_p=float(kwargs.get("top_p", 1.0)))
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                prompts = [plain_text(requests[i].args[0]) for i in chunk]
                answers = generate(self.lm, prompts, self.method, [self.row] * len(chunk), config)
                for index, answer in zip(chunk, answers):
                    out[index] = _cut(answer.text, until)
                    self.cache_hook.add_partial("generate_until", requests[index].args, out[index])
                bar.update(len(chunk))
        bar.close()
        return out


def local_tasks(questions: Path | None = None) -> dict[str, dict[str, Any]]:
    """lm-eval task configs over our own MMLU-format questions (default: the 240 we wrote, synthetic).

    `steer_away_mmlu` shows the options and scores the letters, as lm-eval's `mmlu` does;
    `steer_away_cloze` scores each option's own text after "Answer:" (acc and acc_norm), as its
    `arc_easy` does: the format our sweep's cloze utility follows, in lm-eval's wording.
    """
    data = {"dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str((questions or mmlu_fixture_path()).resolve())}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_target": "answer"}
    letters = "\n".join(f"{letter}. {{{{choices[{i}]}}}}" for i, letter in enumerate("ABCD"))
    return {
        "steer_away_mmlu": {**data, "task": "steer_away_mmlu",
                            "doc_to_text": "{{question.strip()}}\n" + letters + "\nAnswer:",
                            "doc_to_choice": ["A", "B", "C", "D"],
                            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]},
        "steer_away_cloze": {**data, "task": "steer_away_cloze",
                             "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "{{choices}}",
                             "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                             for m in ("acc", "acc_norm")]},
    }


def write_local_tasks(folder: Path, questions: Path | None = None) -> Path:
    """The local tasks as YAML files in `folder` (JSON is YAML), for lm-eval's --include_path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in local_tasks(questions).items():
        (folder / f"{name}.yaml").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    return folder


def _cut(text: str, until: Sequence[str]) -> str:
    """The text before the first stop string in it."""
    ends = [text.find(stop) for stop in until if stop and stop in text]
    return text[:min(ends)] if ends else text


__all__ = ["MODEL_NAME", "SteerAwayLM", "local_tasks", "write_local_tasks"]
