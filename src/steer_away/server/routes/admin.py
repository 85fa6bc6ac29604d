"""POST /admin/reload: profiles and vectors read again; a bad file keeps the previous set in service."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request

from steer_away.errors import InputError
from steer_away.server.errors import APIError
from steer_away.server.routes.auth import require_admin, require_program
from steer_away.server.state import server_state

log = logging.getLogger("steer_away.server")

router = APIRouter()


@router.post("/admin/reload", dependencies=[Depends(require_admin), Depends(require_program)])
async def reload(request: Request) -> dict[str, Any]:
    served = server_state(request).served
    try:
        await asyncio.to_thread(served.reload)
    except (InputError, OSError) as err:  # a bad or missing file: keep serving the previous set
        raise APIError(400, f"reload failed, keeping the previous profiles and vectors: {err}") from err
    except Exception as err:  # our bug: still keep the previous set, and say it is ours
        log.error("reload failed", exc_info=err)
        raise APIError(500, f"reload failed, keeping the previous profiles and vectors: {type(err).__name__}: {err}",
                       "server_error") from err
    return {"status": "reloaded", "users": len(served.profiles), "loaded_at": served.loaded_at}
