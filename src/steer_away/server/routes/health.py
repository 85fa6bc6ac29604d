"""GET /health (no key: load balancers ask it) and GET /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from steer_away.server.routes.auth import require_key
from steer_away.server.state import server_state

BUSY_AFTER_S = 5.0  # /health says "busy" while one step has run this long (a long prefill), still 200

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = server_state(request)
    engine, served = state.engine, state.served
    alive, idle, in_step = engine.alive()
    # A step under way is work, not a stall, until it has run longer than any step should; a
    # worker between steps that has not even polled its queue for that long is stuck.
    stalled = not alive or max(in_step, idle if in_step == 0 else 0.0) > state.settings.stall_after_s
    status = "stalled" if stalled else "busy" if in_step > BUSY_AFTER_S else "ok"
    body = {"status": status, "worker_alive": alive, "seconds_since_progress": round(idle, 1),
            "step_running_s": round(in_step, 1), "queued": engine.waiting(),
            "running": engine.running(), "steps": engine.steps_run, "retried_alone": engine.retried_alone,
            "failed_alone": engine.failed_alone, "cancelled": engine.cancelled_jobs,
            "methods": sorted(served.methods), "default_method": served.default,
            "unavailable": served.unavailable, "users": len(served.profiles),
            "users_on_default_vector": served.on_default, "loaded_at": served.loaded_at}
    return JSONResponse(body, status_code=503 if stalled else 200)


@router.get("/v1/models", dependencies=[Depends(require_key)])
async def models(request: Request) -> dict[str, Any]:
    state = server_state(request)
    return {"object": "list", "data": [{"id": state.settings.model_name, "object": "model", "created": 0,
                                        "owned_by": "steer-away", "root": state.lm.model_id}]}
