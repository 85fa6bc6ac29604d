"""Our lm-eval model (`steer-away`, unsteered) against lm-eval's own `hf` model on the same weights,
over our local tasks: per-request log-likelihood differences, identical picks, accuracies and the
time each took, all measured in one run."""

from __future__ import annotations

import time

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from common import base_parser, machine_line, print_table
from steer_away.lmeval import MODEL_NAME, write_local_tasks
from steer_away.models import load_model
from steer_away.paths import cache_root

TASKS = ["steer_away_cloze", "steer_away_mmlu"]


def run(model: object, args: dict | None, tasks: TaskManager, batch_size: int, limit: int | None
        ) -> tuple[dict, float]:
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=model, model_args=args, tasks=TASKS, task_manager=tasks, batch_size=batch_size,
                                  device="cpu", log_samples=True, limit=limit)
    return out, time.perf_counter() - start


def logliks(out: dict, task: str) -> dict[int, list[float]]:
    return {s["doc_id"]: [float(r[0][0]) for r in s["resps"]] for s in out["samples"][task]}


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, default=None, help="questions per task (default: all 240)")
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    tasks = TaskManager(include_path=str(write_local_tasks(cache_root() / "lmeval_tasks")))
    hf, hf_s = run(HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=args.batch_size), None, tasks,
                   args.batch_size, args.limit)
    ours, ours_s = run(MODEL_NAME, {"model": lm}, tasks, args.batch_size, args.limit)
    print(machine_line(lm))
    rows = []
    for task in TASKS:
        a, b = logliks(ours, task), logliks(hf, task)
        diffs = [abs(x - y) for doc in a for x, y in zip(a[doc], b[doc])]
        same = sum(max(range(len(a[d])), key=a[d].__getitem__) == max(range(len(b[d])), key=b[d].__getitem__)
                   for d in a)
        metrics = sorted(k for k in ours["results"][task] if k.startswith("acc") and "stderr" not in k)
        accs = "  ".join(f"{m.split(',')[0]} {ours['results'][task][m]:.4f} / {hf['results'][task][m]:.4f}"
                         for m in metrics)
        rows.append([task, str(len(diffs)), f"{max(diffs):.2e}", f"{sum(diffs) / len(diffs):.2e}",
                     f"{same}/{len(a)}", accs])
    print_table("steer-away vs lm-eval's hf model, unsteered, same weights",
                ["task", "requests", "max |Δ loglik|", "mean |Δ loglik|", "same argmax", "ours / hf"], rows)
    print(f"wall time, both tasks: steer-away {ours_s:.1f} s, hf {hf_s:.1f} s (ratio {ours_s / hf_s:.2f})")


if __name__ == "__main__":
    main()
