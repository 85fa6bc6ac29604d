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
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import lm_eval.models  # noqa: F401  lm-eval's own models first: it fills its registry lazily only while empty
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, resolve_max_length
from tqdm import tqdm

from steer_away.chat import plain_text
from steer_away.errors import InputError
from steer_away.generation import ContinuationScore, GenerationConfig, generate, token_continuation_scores
from steer_away.models import LanguageModel, load_model
from steer_away.resources import mmlu_fixture_path
from steer_away.steering.framework.method import RowSteering, SteeringMethod
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import build_method, default_method

log = logging.getLogger(__name__)

MODEL_NAME = "steer-away"
DEFAULT_BATCH_SIZE = 16  # continuation rows per forward pass; "auto" picks this too
DEFAULT_MAX_GEN_TOKENS = 256  # lm-eval's own default for generate_until
ROLLING_TOKENS = 4096  # window tokens scored per pass in perplexity tasks (their logits: 0.8 GB at 49k vocab)


def _dtype(name: str | None) -> torch.dtype | None:
    """A dtype by name ('float32', 'bfloat16', 'float16'); None or 'auto': our default for the device."""
    if name is None or name == "auto":
        return None
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise InputError(f"dtype {name!r} is not a floating-point torch dtype (float32, bfloat16, float16, auto)")
    return value


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

    `model_args`: model (hub id, folder, .gguf; default the embedded SmolLM2-135M-Instruct; `pretrained`
    is read as `model`, as lm-eval's hf model names it), dtype, method (a registered steering method),
    user, vectors, profiles, categories, allow_other_model, max_length, and any argument of the chosen
    method (alpha, layers, gate, ...).
    """

    def __init__(self, model: str | LanguageModel | None = None, method: str | None = None, user: str | None = None,
                 vectors: str | None = None, profiles: str | None = None, categories: str | None = None,
                 allow_other_model: bool = False, device: str | None = None, dtype: str | None = None,
                 batch_size: int | str = DEFAULT_BATCH_SIZE, max_batch_size: int | None = None,
                 max_length: int | None = None, pretrained: str | None = None, **method_args: Any) -> None:
        super().__init__()
        if pretrained is not None and model is not None:
            raise InputError("give the model once: model=… (pretrained=… is read as the same)")
        model = model if model is not None else pretrained
        if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
            log.warning("device %s asked for but CUDA is not available: running on the CPU", device)
            device = "cpu"  # lm-eval's command line asks for cuda unless told otherwise; its hf model falls back too
        lm = load_model(model, device=device, dtype=_dtype(dtype)) if model is None or isinstance(model, str) else model
        name = method or default_method(with_vectors=vectors is not None)
        resources = SteeringResources(lm, profiles=profiles, vectors=vectors, categories=categories,
                                      allow_other_model=bool(allow_other_model))
        self.lm = lm
        self.method: SteeringMethod = build_method(name, method_args, resources)
        self.row = RowSteering(user_id=None if user is None else str(user))
        if self.method.personalised and (user is None or str(user) not in resources.profiles()):
            log.warning("%s steers each user by their profile; user %r has none, so the method's default "
                        "for unknown users applies", name, user)
        self.tokenizer = lm.tokenizer
        self.batch_size = _batch_size(batch_size)  # lm-eval's max_batch_size bounds its "auto" search: we do none
        self.max_length = int(max_length or resolve_max_length(lm.model.config, lm.tokenizer))
        self.ruled_out = 0  # continuations the method gave −∞ (ACD's plausibility cut-off), for the log

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        """What an empty context starts from: BOS where the tokenizer has one, as lm-eval's hf model does."""
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_gen_toks(self) -> int:
        return DEFAULT_MAX_GEN_TOKENS

    @property
    def tokenizer_name(self) -> str:
        return self.lm.model_id.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """As lm-eval's hf model encodes: the tokenizer's own special tokens (a BOS for Llama's) unless
        told otherwise, and none added to a text that already starts with BOS."""
        options = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            options = {"add_special_tokens": False}
        return list(self.tokenizer.encode(string, **options))

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        def render(history: list[dict[str, str]]) -> str:
            return str(self.tokenizer.apply_chat_template(history, tokenize=False,
                                                          add_generation_prompt=add_generation_prompt,
                                                          continue_final_message=not add_generation_prompt))
        try:
            return render(chat_history)
        except jinja2.exceptions.TemplateError:  # templates without a system role (Gemma's): as lm-eval's hf model
            log.warning("the chat template refuses a system message: rendering without it")
            return render([m for m in chat_history if m["role"] != "system"])

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """Continuations of one context share its encoding; contexts of like length share a batch."""
        fitted = [self._fit(context, continuation) for _, context, continuation in requests]
        by_context: dict[tuple[int, ...], list[int]] = {}
        for index, (context_ids, _) in enumerate(fitted):
            by_context.setdefault(tuple(context_ids), []).append(index)
        contexts = sorted(by_context, key=len, reverse=True)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        bar = tqdm(total=len(requests), desc="steer-away: scoring", disable=disable_tqdm)
        batch: list[tuple[int, ...]] = []
        for position, context in enumerate(contexts):
            batch.append(context)
            if sum(len(by_context[c]) for c in batch) >= self.batch_size or position == len(contexts) - 1:
                members = [by_context[c] for c in batch]
                scored = self._score(list(batch), [[fitted[i][1] for i in own] for own in members])
                for own, scores in zip(members, scored):
                    for index, score in zip(own, scores):
                        results[index] = (score.loglik, score.greedy)
                        self.cache_hook.add_partial("loglikelihood", requests[index][0], results[index])
                bar.update(sum(map(len, members)))
                batch = []
        bar.close()
        if self.ruled_out:
            log.warning("%s ruled out %d continuations (log-likelihood −inf); where it rules out every choice of a "
                        "question, lm-eval picks the first", self.method.name, self.ruled_out)
        return results

    def _score(self, contexts: list[Sequence[int]], continuations: list[list[list[int]]]) -> list[list[ContinuationScore]]:
        scored = token_continuation_scores(self.lm, contexts, continuations, self.method, [self.row] * len(contexts),
                                           max_length=self.max_length)
        self.ruled_out += sum(not math.isfinite(s.loglik) for own in scored for s in own)
        return scored

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
            while start < len(windows):  # a pass's logits are (tokens, vocab) per branch: a token budget
                stop = start + 1
                while stop < len(windows) and sum(len(t) for _, t in windows[start:stop + 1]) <= ROLLING_TOKENS:
                    stop += 1
                chunk = windows[start:stop]
                total += sum(own[0].loglik for own in self._score([c for c, _ in chunk], [[t] for _, t in chunk]))
                start = stop
            out.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Answers through the decode loop the server runs, ending at the first stop string, as lm-eval's
        hf model reads the request: its generation arguments normalised by lm-eval, the context
        left-truncated to leave room for max_gen_toks, the answer decoded without special tokens."""
        out: list[str] = [""] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(index)
        bar = tqdm(total=len(requests), desc="steer-away: generating", disable=disable_tqdm)
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        for members in groups.values():
            kwargs = normalize_gen_kwargs(dict(requests[members[0]].args[1]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks, do_sample = int(kwargs.pop("max_gen_toks")), bool(kwargs.pop("do_sample", False))
            temperature, top_p = float(kwargs.pop("temperature", 0.0) or 0.0), float(kwargs.pop("top_p", 1.0) or 1.0)
            if kwargs:
                log.warning("generation arguments steer-away does not apply, ignored: %s", ", ".join(sorted(kwargs)))
            if max_gen_toks >= self.max_length:
                raise InputError(f"max_gen_toks {max_gen_toks} leaves no room for a context in max_length {self.max_length}")
            config = GenerationConfig(max_new_tokens=max_gen_toks, do_sample=do_sample and temperature > 0,
                                      temperature=temperature if do_sample and temperature > 0 else 1.0, top_p=top_p,
                                      stop=tuple(until))
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                prompts = [plain_text(self._context_text(requests[i].args[0], self.max_length - max_gen_toks))
                           for i in chunk]
                answers = generate(self.lm, prompts, self.method, [self.row] * len(chunk), config)
                for index, answer in zip(chunk, answers):
                    out[index] = _cut(self.tokenizer.decode(answer.token_ids, skip_special_tokens=True), until)
                    self.cache_hook.add_partial("generate_until", requests[index].args, out[index])
                bar.update(len(chunk))
        bar.close()
        return out

    def _context_text(self, context: str, room: int) -> str:
        """The context as lm-eval's hf model feeds it (its special tokens, its `room` latest tokens), as the
        text our decoder encodes to those tokens."""
        ids = self.tok_encode(context)
        if len(ids) <= room and ids == self.tokenizer.encode(context, add_special_tokens=False):
            return context
        return str(self.tokenizer.decode(ids[-room:], skip_special_tokens=False))


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
