"""`serve`: the OpenAI-compatible chat server with per-user steering."""

from __future__ import annotations

import argparse
import os
import socket
from typing import TYPE_CHECKING

from steer_away.cli import flags
from steer_away.cli.errors import UsageError
from steer_away.cli.options import add_model_options, add_resource_options, load_model_from_args
from steer_away.console import console
from steer_away.decoding import JOIN_POLICIES
from steer_away.steering.registry import method_names

if TYPE_CHECKING:  # fastapi and uvicorn are optional: the server is imported only to serve
    from steer_away.server.settings import ServerSettings


def _check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UsageError(f"--host {host!r} does not resolve: {err.strerror}") from None
    family, kind, _, _, address = infos[0]
    with socket.socket(family, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise UsageError(f"cannot listen on {host}:{port}: {err.strerror} (another server there? try --port)") \
                from None


def cmd_serve(args: argparse.Namespace) -> int:
    # fastapi and uvicorn are optional ([serve]): imported only to serve
    from steer_away.server import ServerSettings, serve

    api_key = args.api_key if args.api_key is not None else os.environ.get("STEER_AWAY_API_KEY")
    if api_key is not None and not api_key.strip():  # set but empty: a script whose $KEY was never set
        raise UsageError("STEER_AWAY_API_KEY is set but empty; set a key, or unset it to serve without one")
    _check_port_free(args.host, args.port)  # before loading a model, not after
    settings = ServerSettings(model_name=args.name, default_method=args.method,
                              api_key=api_key, max_batch=args.max_batch,
                              max_queue=args.max_queue, max_tokens_limit=args.max_tokens_limit,
                              scheduler=args.scheduler, prefill_chunk=args.prefill_chunk,
                              feedback_path=args.feedback, feedback_rate=args.feedback_rate)
    if args.replicas:
        return _serve_replicas(args, settings)
    lm = load_model_from_args(args)
    console.print(f"serving {lm.model_id} as '{settings.model_name}' on http://{args.host}:{args.port} "
                  f"(auth: {'on' if settings.api_key else 'off'})")
    serve(lm, args.host, args.port, profiles=args.profiles, vectors=args.vectors, categories=args.categories,
          settings=settings)
    return 0


def _serve_replicas(args: argparse.Namespace, settings: ServerSettings) -> int:
    from steer_away.server.replicas import ReplicaSpec, serve_on_ray

    spec = ReplicaSpec(args.model, args.device, args.profiles, args.vectors, args.categories, settings,
                       gpus=1.0 if args.device.startswith("cuda") else 0.0)
    console.print(f"serving {args.model or 'embedded SmolLM2-135M-Instruct'} as '{settings.model_name}' with "
                  f"{args.replicas} Ray Serve replicas on http://{args.host}:{args.port} "
                  f"(auth: {'on' if settings.api_key else 'off'}; routed by user)")
    serve_on_ray(spec, args.host, args.port, args.replicas, None if args.ray == "local" else args.ray)
    return 0


def _chunk(text: str) -> int | None:
    if text == "off":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of tokens or 'off', got {text!r}") from None


def add_serve(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="OpenAI-compatible chat server with per-user steering")
    add_model_options(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=flags.port, default=8000)
    add_resource_options(srv)
    srv.add_argument("--method", choices=method_names(), default=None, metavar="METHOD",
                     help="steering when a request names none (default: a per-user vector method when "
                          "--vectors is given, else the baseline)")
    srv.add_argument("--name", default="steer-away", help="model name the API reports")
    srv.add_argument("--api-key", default=None, type=flags.key, help="require this bearer token (or set STEER_AWAY_API_KEY)")
    srv.add_argument("--max-batch", type=flags.count(1), default=8, help="requests decoded together at most")
    srv.add_argument("--scheduler", choices=list(JOIN_POLICIES), default="continuous",
                     help="continuous: a request joins the running batch at the next step; static: only once "
                          "the running batch has ended")
    srv.add_argument("--prefill-chunk", type=_chunk, default=512, metavar="TOKENS",
                     help="prompt tokens prefilled per step, between decoding steps of the running requests, so "
                          "that a long prompt joining never freezes the streams already running (default 512; "
                          "'off': each prompt in one pass)")
    srv.add_argument("--max-queue", type=flags.count(1), default=64, help="requests waiting at most (then 429); at least 1")
    srv.add_argument("--max-tokens-limit", type=flags.count(1), default=512)
    srv.add_argument("--feedback", default=None, metavar="FILE",
                     help="learn from users' choices (POST /v1/feedback): a SQLite file of every choice, replayed "
                          "at start; needs --profiles (the population's sensitivity cut-offs)")
    srv.add_argument("--feedback-rate", type=flags.number(low=0.01, high=1000), default=5.0, metavar="PER_S",
                     help="feedback events a second per user before 429 (bursts of 20)")
    srv.add_argument("--replicas", type=flags.count(1), default=None, metavar="N",
                     help="N replicas of the engine behind one endpoint, on Ray Serve, each user routed to their own "
                          "replica (default: one process, no Ray)")
    srv.add_argument("--ray", default="local", metavar="ADDRESS",
                     help="with --replicas: 'local' (start Ray here) or a cluster's address, e.g. ray://head:10001")
    srv.set_defaults(func=cmd_serve)
