"""Perspective API client, the scorer the two studies used (Google is retiring it at the end of 2026:
creating one warns, with the date; `hf:<model>` is the maintained replacement).

The key comes from the environment and travels in a header, never in a URL or a log line. Requests
are spaced to a QPS limit and retried with exponential back-off on 429, 5xx, time-outs and
unreadable answers; each text is its own request, so with the cache nothing scored is ever lost.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import date

import httpx
import numpy as np

from steer_away.errors import InputError
from steer_away.scoring.base import ATTRIBUTES, ScorerError, ToxicityScorer

DEFAULT_URL = "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze"
KEY_ENV = "PERSPECTIVE_API_KEY"
QPS_ENV = "PERSPECTIVE_QPS"  # requests per second when the caller gives none (default 1, the API's free quota)


MAX_RETRY_AFTER_S = 300.0  # a longer Retry-After means a spent quota: stop and say so instead of sleeping
# Google announced (January 2026) that Perspective is no longer in service after 2026; new usage stopped in February 2026.
END_OF_SERVICE = date(2026, 12, 31)


class PerspectiveEndOfServiceWarning(FutureWarning):
    """Perspective API stops answering after END_OF_SERVICE. A FutureWarning, because Python shows those by
    default, so the command line prints it without any logging set up."""


def end_of_service_notice(today: date) -> str:
    """What a user of the Perspective scorer must know on `today`."""
    replacement = ("hf:<model> is the maintained replacement (e.g. hf:unitary/toxic-bert, the Jigsaw challenge's six "
                   "labels; see the README's scorer table)")
    if today > END_OF_SERVICE:
        return (f"Perspective API's service ended on {END_OF_SERVICE.isoformat()} (announced by Google in January 2026): "
                f"requests to it fail. {replacement}.")
    days = (END_OF_SERVICE - today).days
    return (f"Perspective API ends: Google announced it is no longer in service after 2026 (new usage stopped in "
            f"February 2026); after {END_OF_SERVICE.isoformat()} ({days} days from today, {today.isoformat()}) "
            f"requests fail. {replacement}.")


class _Secret:
    """Holds the API key so that repr(), vars() and tracebacks show no trace of it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "<secret>"


class PerspectiveScorer(ToxicityScorer):
    backend = "perspective"
    preferred_batch_size = 1  # commit every score as soon as it is paid for

    def __init__(
        self,
        api_key: str | None = None,
        *,
        qps: float | None = None,
        attributes: Sequence[str] = ATTRIBUTES,
        url: str = DEFAULT_URL,
        max_retries: int = 6,
        backoff_s: float = 1.0,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        timeout_s: float = 30.0,
        languages: Sequence[str] = ("en",),
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        warnings.warn(end_of_service_notice(date.today()), PerspectiveEndOfServiceWarning, stacklevel=2)
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            raise ScorerError(f"the Perspective scorer needs an API key in ${KEY_ENV}")
        if qps is None:
            try:
                qps = float(os.environ.get(QPS_ENV, "1"))
            except ValueError:
                raise ScorerError(f"${QPS_ENV} must be a number, got {os.environ[QPS_ENV]!r}") from None
        if not qps > 0:
            raise ScorerError(f"qps must be > 0, got {qps}")
        self._key = _Secret(key)
        self.attributes = tuple(attributes)
        self.url = url
        self.min_interval = 1.0 / qps
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.languages = list(languages)
        self._sleep = sleep
        self._client = client or httpx.Client(timeout=timeout_s)
        self._last_request = -float("inf")
        self.requests_sent = 0

    def __repr__(self) -> str:  # never show the key
        return f"PerspectiveScorer(url={self.url!r}, qps={1 / self.min_interval:g})"

    def _throttle(self) -> None:
        wait = self._last_request + self.min_interval - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        self._last_request = time.monotonic()

    def _parse(self, payload: object) -> np.ndarray:
        try:
            scores = payload["attributeScores"]  # type: ignore[index]
            return np.array([float(scores[a]["summaryScore"]["value"]) for a in self.attributes])
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"answer lacks attributeScores.*.summaryScore.value ({err!r})") from err

    def score_one(self, text: str) -> np.ndarray:
        body = {
            "comment": {"text": text},
            "languages": self.languages,
            "requestedAttributes": {a: {} for a in self.attributes},
            "doNotStore": True,
        }
        problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            self._throttle()
            self.requests_sent += 1
            try:
                response = self._client.post(self.url, json=body, headers={"X-Goog-Api-Key": self._key.reveal()})
            except httpx.TransportError as err:  # time-outs, refused connections
                problem = f"{type(err).__name__}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    if float(retry_after) > self.max_retry_after_s:
                        raise ScorerError(f"Perspective asked to retry after {retry_after} s (HTTP {response.status_code}; "
                                          "quota spent?); stopping instead of waiting. Scores so far are cached: "
                                          "run again later")
                    self._sleep(float(retry_after))
                continue
            if response.status_code >= 400:
                raise ScorerError(f"Perspective refused the request: HTTP {response.status_code} "
                                  f"{self._key.scrub(response.text[:200])}")
            try:
                return self._parse(response.json())
            except ValueError as err:
                problem = self._key.scrub(f"malformed answer: {err}")
        raise ScorerError(f"Perspective failed after {self.max_retries + 1} attempts; last problem: {problem}")

    def score_batch(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.score_one(t) for t in texts])
