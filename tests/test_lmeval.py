"""Our lm-evaluation-harness model against lm-eval's own `hf` model (the oracle, unsteered) and against
whole-text forward passes combined per position (steered), on tiny random models we build here."""

import json

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from steer_away.chat import plain_text, render_prefix  # noqa: E402
from steer_away.cli import main  # noqa: E402
from steer_away.errors import InputError  # noqa: E402
from steer_away.lmeval import MODEL_NAME, SteerAwayLM, write_local_tasks  # noqa: E402
from steer_away.steering.framework.method import PreparedBatch, RowSteering, SteeringMethod  # noqa: E402
from steer_away.steering.methods.activation import ActivationSteering  # noqa: E402
from steer_away.steering.methods.logits import ACD, EADS  # noqa: E402
from tests.conftest import make_tiny_lm, make_tokenizer  # noqa: E402
from tests.evaluation.utility.test_cloze import random_vector  # noqa: E402

REQUESTS = [("the quick brown fox", " jumps over"), ("the quick brown fox ", "jumps over the lazy dog"),
            ("", "thank you for the kind"), ("what is the capital of France?", " Paris is the capital."),
            ("what is the capital of France?", " nobody cares"), ("please be", " respectful")]
ROLLING_TEXT = " ".join(["the quick brown fox jumps over the lazy dog, thank you"] * 5)


def instances(kind, args):
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def steered(lm, method, user=None, max_length=24):
    adapter = SteerAwayLM(model=lm, batch_size=3, max_length=max_length)
    adapter.method, adapter.row = method, RowSteering(user_id=user)
    return adapter


def test_registered_under_its_name():
    assert get_model(MODEL_NAME) is SteerAwayLM
    assert get_model("hf") is HFLM  # registering ours leaves lm-eval's own models reachable


def test_unsteered_requests_equal_lm_evals_hf_model(tiny_lm):
    """Same tokenisation (trailing spaces move to the continuation, an empty context starts from BOS),
    same log-likelihoods and greedy flags, same rolling windows, same greedy generations."""
    ours = SteerAwayLM(model=tiny_lm, batch_size=3, max_length=24)
    hf = HFLM(pretrained=tiny_lm.model, tokenizer=tiny_lm.tokenizer, batch_size=3, max_length=24)
    got = ours.loglikelihood(instances("loglikelihood", REQUESTS), disable_tqdm=True)
    want = hf.loglikelihood(instances("loglikelihood", REQUESTS), disable_tqdm=True)
    assert [g for _, g in got] == [g for _, g in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-4)
    rolling = instances("loglikelihood_rolling", [(ROLLING_TEXT,)])  # several 24-token windows
    assert ours.loglikelihood_rolling(rolling, disable_tqdm=True) == pytest.approx(
        hf.loglikelihood_rolling(rolling, disable_tqdm=True), abs=1e-3)
    prompts = [("the quick brown", {"until": ["dog"], "max_gen_toks": 8}), ("what is the", {"max_gen_toks": 6})]
    assert ours.generate_until(instances("generate_until", prompts), disable_tqdm=True) == \
        hf.generate_until(instances("generate_until", prompts), disable_tqdm=True)


def reference_loglik(lm, method, row, context, continuation):
    """One request alone: every branch's whole text ([its system prompt] + context + continuation)
    without a cache, under the method's edits at every position, branches combined per position."""
    tok = lm.tokenizer
    context_ids = tok(context, add_special_tokens=False)["input_ids"]
    continuation_ids = tok(context + continuation, add_special_tokens=False)["input_ids"][len(context_ids):]
    prepared = method.prepare(lm, [plain_text(context)], [row])
    per_branch = []
    for (conversation,) in prepared.branches:
        head = tok(render_prefix(tok, conversation[:-1]), add_special_tokens=False)["input_ids"] \
            if len(conversation) > 1 else []
        ids = torch.tensor([head + context_ids + continuation_ids])
        with torch.inference_mode(), prepared.scope(lm.model):
            logits = lm.model(ids).logits[0].float()
        start = len(head) + len(context_ids) - 1
        per_branch.append(logits[start:start + len(continuation_ids)])
    stacked = torch.stack(per_branch)
    return sum(float(torch.log_softmax(prepared.combine(stacked[:, j][:, None, :]).float(), -1)[0, t])
               for j, t in enumerate(continuation_ids))


@pytest.mark.parametrize("kind", ["eads", "per-user-caa"])
def test_steered_requests_match_the_whole_text_reference(tiny_lm, kind):
    if kind == "eads":
        method, row = EADS(alpha=1.5), RowSteering()
    else:
        method = ActivationSteering({"u0": random_vector(0), "u1": random_vector(1)}, alpha=2.0,
                                    default=random_vector(2))
        row = RowSteering("u1")
    requests = [r for r in REQUESTS if r[0]]
    got = steered(tiny_lm, method, row.user_id, max_length=2048).loglikelihood(  # EADS adds ~500 tokens of examples
        instances("loglikelihood", requests), disable_tqdm=True)
    want = [reference_loglik(tiny_lm, method, row, c.rstrip(), c[len(c.rstrip()):] + x) for c, x in requests]
    assert [ll for ll, _ in got] == pytest.approx(want, abs=1e-3)
    plain = SteerAwayLM(model=tiny_lm, max_length=2048).loglikelihood(instances("loglikelihood", requests),
                                                                     disable_tqdm=True)
    assert [ll for ll, _ in got] != pytest.approx([ll for ll, _ in plain], abs=1e-2)  # steering changed them


def test_a_method_that_rewrites_the_prompt_is_refused(tiny_lm):
    class Rewrites(SteeringMethod):
        name = "rewrites"

        def prepare(self, lm, conversations, rows):
            return PreparedBatch([[[*c, {"role": "user", "content": "and more"}] for c in conversations]])

    with pytest.raises(InputError, match="rewrites the prompt"):
        steered(tiny_lm, Rewrites()).loglikelihood(instances("loglikelihood", REQUESTS[:1]), disable_tqdm=True)


def test_arguments_lm_eval_passes_are_taken(tiny_lm, tiny_model_dir):
    assert SteerAwayLM(model=tiny_lm, batch_size="auto:4", max_batch_size=64).batch_size == 16
    assert SteerAwayLM(model=tiny_lm, batch_size="5").batch_size == 5
    with pytest.raises(InputError, match="batch_size"):
        SteerAwayLM(model=tiny_lm, batch_size="0")
    by_habit = SteerAwayLM(pretrained=str(tiny_model_dir), dtype="float16", device="cpu")  # hf's names for them
    assert by_habit.lm.dtype == torch.float16 and by_habit.max_length == 256  # the config's max_position_embeddings
    with pytest.raises(InputError, match="dtype"):
        SteerAwayLM(pretrained=str(tiny_model_dir), dtype="int8")


LONG = " ".join(["the quick brown fox jumps over the lazy dog, thank you for the kind and careful answer"] * 30)


def bos_tokenizer():
    """Our test tokenizer, made to prepend BOS as Llama's do."""
    from tokenizers import processors

    tok = make_tokenizer()
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<|im_start|> $A",
                                                                 special_tokens=[("<|im_start|>", bos)])
    assert tok("a b")["input_ids"][0] == bos
    return tok


@pytest.mark.parametrize("arch", ["gpt2", "llama-bos"])
def test_long_contexts_and_bos_tokenizers_as_lm_evals_hf_model(arch):
    """GPT-2's learned positions (256) fail on any token past max_length: contexts of ~600 tokens are
    truncated as hf truncates them, rolling windows and generation prompts too; a tokenizer that adds
    BOS gets it where hf's encoding puts it."""
    lm = make_tiny_lm("gpt2", make_tokenizer()) if arch == "gpt2" else make_tiny_lm("llama", bos_tokenizer())
    ours = SteerAwayLM(model=lm, batch_size=3)
    hf = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=3)
    assert ours.max_length == hf.max_length
    requests = [(LONG, " dog"), (LONG, " the lazy dog, thank"), ("what is the", " capital of France?")]
    got = ours.loglikelihood(instances("loglikelihood", requests), disable_tqdm=True)
    want = hf.loglikelihood(instances("loglikelihood", requests), disable_tqdm=True)
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-3)
    rolling = instances("loglikelihood_rolling", [(LONG,)])
    assert ours.loglikelihood_rolling(rolling, disable_tqdm=True) == pytest.approx(
        hf.loglikelihood_rolling(rolling, disable_tqdm=True), abs=1e-2)
    prompts = [(LONG, {"until": ["zzz"], "max_new_tokens": 5}), ("what is the", {"until": ["\n"], "max_gen_toks": 6})]
    assert ours.generate_until(instances("generate_until", prompts), disable_tqdm=True) == \
        hf.generate_until(instances("generate_until", prompts), disable_tqdm=True)


def test_generation_ends_at_a_stop_string_as_hf_cuts_it(tiny_lm):
    """A stop string found in hf's 12-token answer: ours ends there (fewer tokens generated) with the same text."""
    hf = HFLM(pretrained=tiny_lm.model, tokenizer=tiny_lm.tokenizer)
    ours = SteerAwayLM(model=tiny_lm)
    full = hf.generate_until(instances("generate_until", [("the quick brown", {"max_gen_toks": 12})]),
                             disable_tqdm=True)[0]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    request = instances("generate_until", [("the quick brown", {"until": [stop], "max_gen_toks": 12})])
    assert ours.generate_until(request, disable_tqdm=True) == hf.generate_until(request, disable_tqdm=True)


def test_results_reach_lm_evals_request_cache(tiny_lm, tmp_path, monkeypatch):
    """--use_cache: the second run of the same requests is answered from lm-eval's cache, not the model."""
    from lm_eval.api.model import CachingLM

    ours = SteerAwayLM(model=tiny_lm, max_length=64)
    first = CachingLM(ours, str(tmp_path / "cache.db")).loglikelihood(instances("loglikelihood", REQUESTS))
    monkeypatch.setattr(ours, "_score", lambda *a: pytest.fail("the model ran again"))
    assert CachingLM(ours, str(tmp_path / "cache.db")).loglikelihood(instances("loglikelihood", REQUESTS)) == first


def test_continuations_a_method_rules_out_are_counted_and_logged(tiny_lm, caplog):
    adapter = steered(tiny_lm, ACD(alpha=0.5), max_length=2048)
    got = adapter.loglikelihood(instances("loglikelihood", [r for r in REQUESTS if r[0]]), disable_tqdm=True)
    impossible = sum(ll == float("-inf") for ll, _ in got)
    assert impossible and adapter.ruled_out == impossible
    assert f"acd ruled out {impossible} continuations" in caplog.text


def write_questions(path):
    questions = [{"id": f"t{i}", "question": f"which word is number {i}?", "answer": i % 4,
                  "choices": ["the quick fox", "a lazy dog", "kind answer", "capital"]} for i in range(6)]
    path.write_text("".join(json.dumps(q) + "\n" for q in questions))
    return path


@pytest.mark.parametrize("chat", [False, True])
def test_local_tasks_run_by_name_and_score_as_hf_does(tiny_lm, tmp_path, chat):
    """`simple_evaluate(model="steer-away")` on our local tasks (6 synthetic questions): every request's
    log-likelihood and the accuracies equal lm-eval's hf model's on the same weights, plain and in chat
    form (lm-eval renders the template; two few-shot examples as turns behind a system instruction)."""
    folder = write_local_tasks(tmp_path / "tasks", write_questions(tmp_path / "q.jsonl"))
    tasks = TaskManager(include_path=str(folder))
    chat_args = {"apply_chat_template": True, "fewshot_as_multiturn": True, "num_fewshot": 2,
                 "system_instruction": "Be brief."} if chat else {}
    results, logliks = {}, {}
    for name, model in (("ours", MODEL_NAME), ("hf", HFLM(pretrained=tiny_lm.model, tokenizer=tiny_lm.tokenizer))):
        args = {"model": tiny_lm} if name == "ours" else None
        out = lm_eval.simple_evaluate(model=model, model_args=args, tasks=["steer_away_cloze", "steer_away_mmlu"],
                                      task_manager=tasks, batch_size=4, device="cpu", log_samples=True, **chat_args)
        results[name] = {t: {k: v for k, v in r.items() if k.startswith("acc")} for t, r in out["results"].items()}
        logliks[name] = {t: [r[0][0] for s in rows for r in s["resps"]] for t, rows in out["samples"].items()}
        if chat:
            assert "<|im_start|>system\nBe brief." in out["samples"]["steer_away_cloze"][0]["arguments"][0][0]
    assert results["ours"] == results["hf"]
    for task, scores in logliks["ours"].items():
        assert len(scores) == 24 and scores == pytest.approx(logliks["hf"][task], abs=1e-4)
    assert set(results["ours"]["steer_away_cloze"]) >= {"acc,none", "acc_norm,none"}


def test_command_line_passes_everything_to_lm_eval(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEER_AWAY_CACHE", str(tmp_path / "cache"))
    code = main(["lm-eval", "--model", MODEL_NAME, "--model_args", f"model={tiny_model_dir}",
                 "--tasks", "steer_away_cloze", "--limit", "3", "--device", "cpu", "--batch_size", "2"])
    assert code == 0
    assert (tmp_path / "cache" / "lmeval_tasks" / "steer_away_cloze.yaml").is_file()
    out = capsys.readouterr().out
    assert "steer_away_cloze" in out and "acc_norm" in out


@pytest.mark.slow
def test_oracle_on_the_embedded_model(embedded_lm, tmp_path):
    """SmolLM2-135M on 40 of our questions per task: every request's log-likelihood within 1e-3 of
    lm-eval's hf model on the same weights (float32 on the CPU; measured: about 2e-5) and the same picks."""
    tasks = TaskManager(include_path=str(write_local_tasks(tmp_path / "tasks")))
    samples = {}
    for name, model in (("ours", MODEL_NAME), ("hf", HFLM(pretrained=embedded_lm.model,
                                                           tokenizer=embedded_lm.tokenizer, batch_size=16))):
        out = lm_eval.simple_evaluate(model=model, model_args={"model": embedded_lm} if name == "ours" else None,
                                      tasks=["steer_away_cloze", "steer_away_mmlu"], task_manager=tasks, batch_size=16,
                                      device="cpu", log_samples=True, limit=40)
        samples[name] = {t: {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in rows}
                         for t, rows in out["samples"].items()}
    for task, ours in samples["ours"].items():
        theirs = samples["hf"][task]
        assert len(ours) == 40
        for doc, scores in ours.items():
            assert scores == pytest.approx(theirs[doc], abs=1e-3)
            assert scores.index(max(scores)) == theirs[doc].index(max(theirs[doc]))
