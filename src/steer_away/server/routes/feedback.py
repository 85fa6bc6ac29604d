"""Users' choices: POST /v1/feedback records one; GET / DELETE /v1/feedback/users/{user} show what was
learned or forget it; GET /v1/feedback/profiles exports the served profiles. All behind the API key."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request

from steer_away.server.body import parse_request, read_body
from steer_away.server.errors import APIError
from steer_away.server.feedback import FeedbackService
from steer_away.server.protocol import FeedbackRequest
from steer_away.server.routes.auth import require_key, require_program
from steer_away.server.state import server_state

router = APIRouter()


def _service(request: Request) -> FeedbackService:
    feedback = server_state(request).feedback
    if feedback is None:
        raise APIError(404, "feedback is off on this server (start it with --feedback FILE)")
    return feedback


@router.post("/v1/feedback", dependencies=[Depends(require_key), Depends(require_program)])
async def record(request: Request) -> dict[str, Any]:
    service = _service(request)
    req = parse_request(await read_body(request, server_state(request).settings.max_request_bytes), FeedbackRequest)
    return await asyncio.to_thread(service.record, req)  # the commit waits for the disk, not the event loop


@router.get("/v1/feedback/users/{user_id}", dependencies=[Depends(require_key)])
async def user_status(request: Request, user_id: str) -> dict[str, Any]:
    return _service(request).status(user_id)


@router.delete("/v1/feedback/users/{user_id}", dependencies=[Depends(require_key), Depends(require_program)])
async def forget(request: Request, user_id: str) -> dict[str, Any]:
    removed = await asyncio.to_thread(_service(request).forget, user_id)
    return {"user": user_id, "forgotten_events": removed}


@router.get("/v1/feedback/profiles", dependencies=[Depends(require_key)])
async def export(request: Request) -> dict[str, Any]:
    return _service(request).export()
