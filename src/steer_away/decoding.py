"""The decode loop every generation runs through: offline batches and the server alike.

Requests join and leave at step boundaries (continuous batching). A request that joins has its
prompt prefilled at the next boundary, together with whatever else joins then, and its keys and
values are appended to the running batch's cache (left-padded to a common width; the padding is
masked and positions follow the mask, so each row attends exactly as it would alone). A request
that ends, or is cancelled, leaves at once and its rows are cut out of the cache.

Each request keeps its own steering. A method's branches (base, expert, anti-expert, …) are rows of
the shared forward batch, combined per request before its token is picked. Residual-stream edits
(CAA) are data, not hooks (`PreparedBatch.edits`): the loop stacks every request's α·v into one
tensor per layer and intervention, zero for rows that are not steered there or whose gate (counted
on the request's own step clock) is closed, and installs them for one forward pass at a time in a
scope that removes itself. Every registered method can therefore share a step with every other:
the interventions leave a row with a zero edit exactly as it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from steer_away import internals
from steer_away.chat import Conversation, as_conversation, encode, render_chat, render_prefix
from steer_away.models import LanguageModel
from steer_away.steering.base import PreparedBatch, RowSteering, SteeringMethod, Unsteered


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False  # greedy by default, as in the CAA study, to remove sampling noise
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_on_eos: bool = True  # False: always max_new_tokens tokens (benchmarks need equal lengths)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")

    def score_processors(self) -> LogitsProcessorList:
        """The edits applied to the steered scores before a token is drawn, in transformers'
        `LogitsProcessor` convention (`(input_ids, scores) -> scores`), so any of theirs can join."""
        processors = LogitsProcessorList()
        if self.do_sample:
            if self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
        return processors


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (end-of-sequence token), "length", or "cancelled"


def stop_token_ids(lm: LanguageModel) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


# --- encoding, with shared prefixes ------------------------------------------------------------

_PREFIX_KV: OrderedDict[tuple[int, str], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
_PREFIX_KV_SIZE = 16  # shared prefixes kept (a category's expert and anti-expert contexts: a few MiB each)


def _shared_kv(lm: LanguageModel, text: str, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    key = (id(lm.model), text)
    if key in _PREFIX_KV:
        _PREFIX_KV.move_to_end(key)
        return _PREFIX_KV[key]
    kv = internals.prefix_kv(lm.model, torch.tensor([ids], device=lm.device))
    _PREFIX_KV[key] = kv
    while len(_PREFIX_KV) > _PREFIX_KV_SIZE:
        _PREFIX_KV.popitem(last=False)
    return kv


def encode_rows(lm: LanguageModel, texts: Sequence[str], prefixes: Sequence[Conversation | None]
                ) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Token ids to feed, the attention mask and a KV cache for rows of text.

    Rows with a shared prefix (a category's system prompt and example exchanges) start from that
    prefix's keys and values, computed once and kept, and feed only the rest of their text: the
    rows become [padding][prefix][padding][own tokens], with the padding masked and positions
    following the mask, so every row sees exactly the tokens it would see unshared. A row whose
    text does not split cleanly at the prefix (tokens merging across the boundary) is fed whole.
    """
    if all(p is None for p in prefixes):
        ids, mask = encode(lm, texts)
        return ids, mask, internals.new_kv_cache(lm.model)
    tok = lm.tokenizer
    prefix_ids: list[list[int]] = []
    own_ids: list[list[int]] = []
    shared: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
    for text, messages in zip(texts, prefixes):
        whole = tok(text, add_special_tokens=False)["input_ids"]
        head = render_prefix(tok, messages) if messages else ""
        if head and text.startswith(head):
            first = tok(head, add_special_tokens=False)["input_ids"]
            if whole[:len(first)] == first and len(first) < len(whole):
                prefix_ids.append(first)
                own_ids.append(whole[len(first):])
                shared.append(_shared_kv(lm, head, first))
                continue
        prefix_ids.append([])
        own_ids.append(whole)
        shared.append(None)
    if all(kv is None for kv in shared):
        ids, mask = encode(lm, texts)
        return ids, mask, internals.new_kv_cache(lm.model)
    width_p = max(len(p) for p in prefix_ids)
    width_s = max(len(o) for o in own_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = len(texts)
    ids = torch.full((rows, width_s), pad, dtype=torch.long)
    mask = torch.zeros((rows, width_p + width_s), dtype=torch.long)
    for r, (p, o) in enumerate(zip(prefix_ids, own_ids)):
        ids[r, width_s - len(o):] = torch.tensor(o)
        mask[r, width_p - len(p):width_p] = 1
        mask[r, width_p + width_s - len(o):] = 1
    reference = next(kv for kv in shared if kv is not None)
    layers = []
    for index, (keys, values) in enumerate(reference):
        k = keys.new_zeros((rows, keys.shape[1], width_p, keys.shape[3]))
        v = values.new_zeros((rows, values.shape[1], width_p, values.shape[3]))
        for r, kv in enumerate(shared):
            if kv is not None:
                length = kv[index][0].shape[2]
                k[r, :, width_p - length:] = kv[index][0][0]
                v[r, :, width_p - length:] = kv[index][1][0]
        layers.append((k, v))
    return ids.to(lm.device), mask.to(lm.device), internals.kv_cache_from(lm.model, layers)


def encode_prepared(lm: LanguageModel, prepared: PreparedBatch, texts: Sequence[str]
                    ) -> tuple[torch.Tensor, torch.Tensor, object]:
    """`encode_rows` for a prepared batch's texts (branch-major, as `prepared.branches`)."""
    flat = [p for branch in (prepared.prefixes or []) for p in branch] or [None] * len(texts)
    return encode_rows(lm, texts, flat)


def pick(scores: torch.Tensor, config: GenerationConfig, processors: LogitsProcessorList,
         history: torch.Tensor, generator: torch.Generator | None) -> int:
    """Greedy, or one draw from the processed distribution with the request's own generator."""
    if not config.do_sample:
        return int(scores.argmax(dim=-1))
    scores = processors(history, scores.float())  # type: ignore[arg-type]  # LongTensor is an alias of Tensor
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


# --- requests and the loop ---------------------------------------------------------------------


@dataclass(eq=False)
class DecodeRequest:
    """One conversation to answer, steered by `method` for `row`; the loop fills in the rest.

    `on_token(id)` is called with each new token as it is picked (not with a stop token), from the
    thread that runs the loop. `generator` draws this request's samples: seeded, its text does not
    depend on what shares its steps.
    """

    conversation: Conversation
    method: SteeringMethod = field(default_factory=Unsteered)
    row: RowSteering = field(default_factory=RowSteering)
    config: GenerationConfig = field(default_factory=GenerationConfig)
    generator: torch.Generator | None = None
    on_token: Callable[[int], None] | None = None
    tokens: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str | None = None  # set when it ends: "stop", "length" or "cancelled"
    steps: int = 0  # forward passes it has been through; 0 is its prefill
    joined_at: int = -1  # the loop step at which it was prefilled
    prepared: PreparedBatch | None = None
    texts: list[str] = field(default_factory=list)
    _next: int = 0  # the token to feed at the next step
    _cancel: bool = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def width(self) -> int:
        """Rows this request takes in a forward pass: one per branch."""
        return self.prepared.num_branches if self.prepared is not None else 1

    def result(self, lm: LanguageModel) -> Generation:
        return Generation(text=lm.tokenizer.decode(self.tokens, skip_special_tokens=True).strip(),
                          token_ids=list(self.tokens), prompt_tokens=self.prompt_tokens,
                          finish_reason=self.finish_reason or "length")


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _residual_edits(requests: Sequence[DecodeRequest], rows: int, lm: LanguageModel
                    ) -> dict[int, Callable[[torch.Tensor], None]]:
    """One in-place edit per layer for a forward pass over `requests`' rows, in order; a request
    whose gate is closed at its current step contributes zeros."""
    stacked: dict[tuple[int, object], torch.Tensor] = {}
    start = 0
    for request in requests:
        edits = request.prepared.edits if request.prepared is not None else None
        if edits is not None and (edits.gate is None or edits.gate(request.steps)):
            for layer, delta in edits.deltas.items():
                key = (layer, edits.intervention)
                if key not in stacked:
                    stacked[key] = torch.zeros((rows, 1, delta.shape[-1]), device=lm.device, dtype=lm.dtype)
                stacked[key][start:start + request.width] = delta
        start += request.width
    by_layer: dict[int, list[Callable[[torch.Tensor], None]]] = {}
    for (layer, intervention), delta in stacked.items():
        by_layer.setdefault(layer, []).append(intervention(delta))  # type: ignore[operator]
    return {layer: fns[0] if len(fns) == 1 else _chain(fns) for layer, fns in by_layer.items()}


def _chain(fns: list[Callable[[torch.Tensor], None]]) -> Callable[[torch.Tensor], None]:
    def edit(hidden: torch.Tensor) -> None:
        for fn in fns:
            fn(hidden)

    return edit


class DecodeLoop:
    """A running batch that requests join and leave at step boundaries; `step()` advances it by one
    token. Not thread-safe: one thread owns a loop (and the model) and calls everything on it."""

    def __init__(self, lm: LanguageModel) -> None:
        self.lm = lm
        self._stops = set(stop_token_ids(lm))
        self._pending: list[DecodeRequest] = []
        self._active: list[DecodeRequest] = []  # in row order
        self._cache: object | None = None
        self._mask: torch.Tensor | None = None  # (rows, cache width) of the running batch
        self._edit_key: tuple[object, ...] | None = None
        self._edits: dict[int, Callable[[torch.Tensor], None]] = {}
        self.steps = 0

    # -- membership --

    def add(self, request: DecodeRequest) -> DecodeRequest:
        """Queue a request to join at the next step; a method that cannot serve it raises here."""
        prepared = request.method.prepare(self.lm, [as_conversation(request.conversation)], [request.row])
        request.prepared = prepared
        request.texts = [render_chat(self.lm.tokenizer, branch[0]) for branch in prepared.branches]
        self._pending.append(request)
        return request

    def cancel(self, request: DecodeRequest) -> None:
        """End a request at the next step boundary (a client that left); it keeps what it has."""
        request._cancel = True

    @property
    def active(self) -> list[DecodeRequest]:
        return list(self._active)

    @property
    def pending(self) -> list[DecodeRequest]:
        return list(self._pending)

    def __len__(self) -> int:
        return len(self._active) + len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._active and not self._pending

    def run(self) -> None:
        while not self.idle:
            self.step()

    # -- one step --

    @torch.inference_mode()
    def step(self) -> list[DecodeRequest]:
        """Cancelled requests leave, running ones decode one token, joiners are prefilled (their
        first token); returns the requests that ended in this step."""
        ended = [r for r in self._pending + self._active if r._cancel]
        for request in ended:
            request.finish_reason = "cancelled"
        self._pending = [r for r in self._pending if not r._cancel]
        self._retire()
        if self._active:
            self._decode()
        joining, self._pending = self._pending, []
        if joining:
            self._prefill(joining)
        now_done = [r for r in self._active if r.done]
        self._retire()
        self.steps += 1
        return ended + now_done

    def _decode(self) -> None:
        assert self._mask is not None
        rows = sum(r.width for r in self._active)
        ids = torch.tensor([r._next for r in self._active for _ in range(r.width)], device=self.lm.device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((rows, 1))], dim=-1)
        for request in self._active:
            request.steps += 1
        key = tuple((id(r), r.prepared.edits.gate(r.steps) if r.prepared and r.prepared.edits
                     and r.prepared.edits.gate else None) for r in self._active)
        if key != self._edit_key:
            self._edits, self._edit_key = _residual_edits(self._active, rows, self.lm), key
        logits = internals.forward_step(self.lm.model, ids[:, None], self._mask, self._cache, self._edits)
        self._accept(self._active, logits)

    def _prefill(self, joining: list[DecodeRequest]) -> None:
        texts = [t for r in joining for t in r.texts]
        prefixes: list[Conversation | None] = []
        for request in joining:
            assert request.prepared is not None
            own = request.prepared.prefixes
            prefixes += [branch[0] for branch in own] if own else [None] * request.width
        ids, mask, cache = encode_rows(self.lm, texts, prefixes)
        rows = len(texts)
        start = 0
        for request in joining:
            request.prompt_tokens = int(mask[start].sum())
            request.joined_at = self.steps
            start += request.width
        logits = internals.forward_step(self.lm.model, ids, mask, cache, _residual_edits(joining, rows, self.lm))
        self._accept(joining, logits)
        self._merge(joining, cache, mask)

    def _accept(self, requests: list[DecodeRequest], logits: torch.Tensor) -> None:
        """Pick each request's token from its rows' logits (combined by its method)."""
        greedy = logits.argmax(dim=-1).tolist()
        start = 0
        for request in requests:
            prepared, config, width = request.prepared, request.config, request.width
            assert prepared is not None
            plain = width == 1 and type(prepared).combine is PreparedBatch.combine
            if plain and not config.do_sample:
                token = greedy[start]
            else:
                scores = prepared.combine(logits[start:start + width].view(width, 1, -1))
                history = torch.tensor([request.tokens], dtype=torch.long)
                token = pick(scores, config, config.score_processors(), history, request.generator)
            start += width
            if config.stop_on_eos and token in self._stops:
                request.finish_reason = "stop"
                continue
            request.tokens.append(token)
            request._next = token
            if request.on_token is not None:
                request.on_token(token)
            if len(request.tokens) >= config.max_new_tokens:
                request.finish_reason = "length"

    # -- the running batch's cache --

    def _merge(self, joining: list[DecodeRequest], cache: object, mask: torch.Tensor) -> None:
        if self._cache is None or self._mask is None:
            self._active, self._cache, self._mask = joining, cache, mask
        else:
            width = max(self._mask.shape[1], mask.shape[1])
            layers = [(torch.cat([_pad_left(k0, width, 2), _pad_left(k1, width, 2)]),
                       torch.cat([_pad_left(v0, width, 2), _pad_left(v1, width, 2)]))
                      for (k0, v0), (k1, v1) in zip(internals.kv_layers(self._cache), internals.kv_layers(cache))]
            self._mask = torch.cat([_pad_left(self._mask, width, 1), _pad_left(mask, width, 1)])
            self._cache = internals.kv_cache_from(self.lm.model, layers)
            self._active = self._active + joining
        self._edit_key = None

    def _retire(self) -> None:
        """Cut ended requests' rows out of the cache, and columns that are padding for every row."""
        if not any(r.done for r in self._active):
            return
        keep: list[int] = []
        start = 0
        for request in self._active:
            if not request.done:
                keep.extend(range(start, start + request.width))
            start += request.width
        self._active = [r for r in self._active if not r.done]
        self._edit_key = None
        if not self._active or self._mask is None or self._cache is None:
            self._active, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        first = int((mask.sum(0) > 0).nonzero()[0])
        self._mask = mask[:, first:]
        layers = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:])
                  for k, v in internals.kv_layers(self._cache)]
        self._cache = internals.kv_cache_from(self.lm.model, layers)


def requests_for(prompts: Sequence[str | Conversation], method: SteeringMethod | None,
                 rows: Sequence[RowSteering] | None, config: GenerationConfig,
                 seeds: Sequence[int | None] | None = None, device: torch.device | str = "cpu"
                 ) -> list[DecodeRequest]:
    """One request per prompt. Sampling draws from one generator per seeded row, else one generator
    (`config.seed`) shared by the batch in row order."""
    rows = list(rows) if rows is not None else [RowSteering()] * len(prompts)
    if len(rows) != len(prompts):
        raise ValueError(f"{len(rows)} steering rows for {len(prompts)} prompts")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    shared = torch.Generator(device=device).manual_seed(config.seed) if config.do_sample and config.seed is not None else None
    out = []
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        generator = shared
        if config.do_sample and seeds is not None and seeds[i] is not None:
            generator = torch.Generator(device=device).manual_seed(int(seeds[i]))  # type: ignore[arg-type]
        out.append(DecodeRequest(as_conversation(prompt), method or Unsteered(), row, config, generator))
    return out
