"""`steer-away serve --replicas N`: N replicas of our engine behind one endpoint, as a Ray Serve app.

Each replica is one Ray Serve deployment of one replica (`engine-0` … `engine-{N-1}`), so the
ingress (router.py) can send a user to *their* replica: Serve's own router spreads requests by load,
which would warm every user's vector on every replica. Ray replaces a replica whose process dies
(its deployment is declared with one replica), and the ingress routes around it meanwhile.

With `serve run` instead of the command: `serve run steer_away.server.replicas:app_builder
replicas=2 model=… vectors=… profiles=…` (the same names as the command's flags).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from steer_away.errors import InputError
from steer_away.server.app import create_app, is_loopback
from steer_away.server.asgi import Forwarded, Part, call_app
from steer_away.server.router import UserRouter
from steer_away.server.settings import ServerSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica loads: the same model and files as `steer-away serve` takes as flags."""

    model: str | None = None
    device: str = "auto"
    profiles: str | None = None
    vectors: str | None = None
    categories: str | None = None
    settings: ServerSettings = field(default_factory=ServerSettings)
    cpus: float = 1.0  # per replica (its torch threads)
    gpus: float = 0.0  # per replica (1: a replica per GPU)


class EngineReplica:
    """One replica: the single-process server's app, answering the requests the ingress forwards."""

    def __init__(self, spec: ReplicaSpec, index: int) -> None:
        import torch

        from steer_away.models import load_model

        if spec.cpus >= 1 and not spec.gpus:
            torch.set_num_threads(int(spec.cpus))
        self.index = index
        self.app = create_app(load_model(spec.model, device=spec.device), profiles=spec.profiles,
                              vectors=spec.vectors, categories=spec.categories, settings=spec.settings)

    async def forward(self, request: Forwarded) -> AsyncIterator[Part]:
        async for part in call_app(self.app, request):
            yield part

    def pid(self) -> int:
        return os.getpid()


def build_app(spec: ReplicaSpec, replicas: int) -> Any:
    """The Serve application: `replicas` engine deployments bound into the user router."""
    from ray import serve

    if replicas < 1:
        raise InputError(f"--replicas must be at least 1, got {replicas}")
    room = spec.settings.max_batch + spec.settings.max_queue  # beyond it the replica itself answers 429
    engine: Any = serve.deployment(num_replicas=1, max_ongoing_requests=room, health_check_period_s=2,
                                   ray_actor_options={"num_cpus": spec.cpus, "num_gpus": spec.gpus})(EngineReplica)
    engines = [engine.options(name=f"engine-{i}").bind(spec, i) for i in range(replicas)]
    router: Any = serve.deployment(name="router", num_replicas=1, max_ongoing_requests=replicas * room,
                                   ray_actor_options={"num_cpus": 0})(UserRouter)
    return router.bind(engines, spec.settings.max_batch)


def app_builder(args: dict[str, str]) -> Any:
    """For `serve run steer_away.server.replicas:app_builder replicas=2 model=… api_key=…`."""
    known = {"replicas", "model", "device", "profiles", "vectors", "categories", "api_key", "max_batch", "cpus", "gpus"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"unknown argument {unknown[0]!r} (known: {', '.join(sorted(known))})")
    settings = ServerSettings(api_key=args.get("api_key") or os.environ.get("STEER_AWAY_API_KEY"),
                              max_batch=int(args.get("max_batch", 8)))
    spec = ReplicaSpec(args.get("model"), args.get("device", "auto"), args.get("profiles"), args.get("vectors"),
                       args.get("categories"), settings, float(args.get("cpus", 1)), float(args.get("gpus", 0)))
    return build_app(spec, int(args.get("replicas", 2)))


def serve_on_ray(spec: ReplicaSpec, host: str, port: int, replicas: int, address: str | None = None) -> None:
    """Start Ray (here, or join `address`), Serve's HTTP proxy on host:port, and the app; until Ctrl-C."""
    try:
        import ray
        from ray import serve
    except ImportError as err:
        raise InputError("--replicas needs Ray Serve: pip install 'steer-away[ray]' 'ray[serve]'") from err
    if spec.settings.api_key is None and is_loopback(host):
        spec = dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, admin_without_key=True))
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(1, int(replicas * spec.cpus)), include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(spec, replicas), name="steer-away", route_prefix="/")
    log.info("%d replicas ready behind http://%s:%d", replicas, host, port)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()
