"""The HTTP server: OpenAI-compatible chat completions with per-user steering.

api.py holds the request vocabulary and validation, engine.py the batching worker that owns the
model, app.py the routes and the uvicorn entry points.
"""

from steer_away.server.api import APIError, ServerSettings
from steer_away.server.app import create_app, serve, serve_in_thread

__all__ = ["APIError", "ServerSettings", "create_app", "serve", "serve_in_thread"]
