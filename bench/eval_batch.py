"""Answers per second of a sweep's generation at several batch sizes, unsteered and with per-user
CAA (each row its own user's vector), on our shipped evaluation prompts: the measurement behind the
demo's `batch_size`. Needs a run folder with vectors and profiles (e.g. the demo's)."""

from __future__ import annotations

from common import base_parser, interleaved_medians, machine_line, print_table
from steer_away.data.prompts import read_eval_prompts
from steer_away.generation import GenerationConfig, generate
from steer_away.models import load_model
from steer_away.profiles import load_profiles
from steer_away.steering.framework.method import RowSteering
from steer_away.steering.framework.resources import SteeringResources
from steer_away.steering.registry import build_method


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--run", default="steer-away-demo", help="run folder with vectors/ and profiles.json")
    parser.add_argument("--sizes", default="8,32,64")
    parser.add_argument("--answers", type=int, default=64, help="answers generated per figure")
    parser.add_argument("--methods", default="unsteered,caa-dislike")
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    prompts = [p.text for p in read_eval_prompts()][:args.answers]
    profiles = load_profiles(f"{args.run}/profiles.json")
    resources = SteeringResources(lm, profiles=profiles, vectors=f"{args.run}/vectors")
    users = sorted(profiles)[:9]
    rows = [RowSteering(users[i % len(users)]) for i in range(len(prompts))]
    config = GenerationConfig(max_new_tokens=args.tokens)
    sizes = [int(s) for s in args.sizes.split(",")]
    table = []
    for name in args.methods.split(","):
        method = build_method(name, None, resources)

        def run(size: int, method: object = method) -> None:
            for start in range(0, len(prompts), size):
                generate(lm, prompts[start:start + size], method=method,  # type: ignore[arg-type]
                         rows=rows[start:start + size], config=config)

        times = interleaved_medians({str(s): (lambda s=s: run(s)) for s in sizes}, lm.device, args.repeats,
                                    args.warmup)
        base = len(prompts) / times[str(sizes[0])]
        for size in sizes:
            rate = len(prompts) / times[str(size)]
            table.append([name, str(size), f"{rate:.2f}", f"{rate / base:.2f}x"])
    print(machine_line(lm))
    print_table(f"answers/s, {len(prompts)} answers of up to {args.tokens} tokens",
                ["method", "batch", "answers/s", f"÷ batch {sizes[0]}"], table)


if __name__ == "__main__":
    main()
