"""Fault injection for ``copycat serve``: a test-only ASGI wrapper that makes the server flaky.

Only inference requests (``.../infer`` and ``/predict``) are affected. A :class:`FaultPlan`
first plays its ``sequence`` in order, then draws from its rates with a seeded generator:
``error500`` (HTTP 500), ``error429`` (429 with ``Retry-After: retry_after``), ``slow`` (answer
after ``slow_seconds``, past a client's timeout), ``malformed`` (200 with truncated JSON) and
``drop`` (the connection closes mid-reply). ``delay`` adds latency to every inference request.
While faults are on, ``PUT /_faults`` with a plan's JSON replaces the plan (so tests can reuse
one server); that route (:func:`copycat.serve.app.create_app`) checks the API key first, and
without fault injection it does not exist. There is no environment switch: only the hidden
``--faults`` option of ``copycat serve`` turns it on, and only on a loopback address.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

from fastapi import Request

from copycat.errors import ConfigError
from copycat.serve.guards import ApiError, Guard, read_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KINDS = ("error500", "error429", "slow", "malformed", "drop")


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Rates of each fault per inference request, and a fixed opening ``sequence``."""

    seed: int = 0
    error500: float = 0.0
    error429: float = 0.0
    slow: float = 0.0
    malformed: float = 0.0
    drop: float = 0.0
    retry_after: float = 1.0
    slow_seconds: float = 5.0
    delay: float = 0.0
    sequence: tuple[str, ...] = ()  # e.g. ("error429", "ok", "drop")

    def __post_init__(self) -> None:
        total = sum(getattr(self, k) for k in KINDS)
        if any(getattr(self, k) < 0 for k in KINDS) or total > 1.0:
            raise ConfigError(f"fault rates {total} are invalid; accepted: each >= 0, sum <= 1")
        bad = [s for s in self.sequence if s not in (*KINDS, "ok")]
        if bad:
            raise ConfigError(f"fault sequence has {bad}; accepted: ok, {', '.join(KINDS)}")

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        """Parse ``{"error500": 0.1, "sequence": ["drop"], ...}``."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            if "sequence" in data:
                data["sequence"] = tuple(data["sequence"])
            return cls(**data)
        except (ValueError, TypeError) as exc:
            names = ", ".join(f.name for f in fields(cls))
            raise ConfigError(f"faults {text!r} are invalid ({exc}); keys: {names}") from exc


class FaultInjector:
    """Wraps an ASGI app; draws one fault (or none) per inference request."""

    def __init__(self, app: ASGIApp, plan: FaultPlan) -> None:
        self.app = app
        self.plan = plan
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._n = 0

    def draw(self) -> str:
        with self._lock:
            p = self.plan
            n, self._n = self._n, self._n + 1
            if n < len(p.sequence):
                return p.sequence[n]
            u = self._rng.random()
        for kind in KINDS:
            u -= getattr(p, kind)
            if u < 0:
                return kind
        return "ok"

    def replace(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._rng = random.Random(plan.seed)
            self._n = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not (path.endswith("/infer") or path == "/predict"):
            await self.app(scope, receive, send)
            return
        kind = self.draw()
        if self.plan.delay:
            await asyncio.sleep(self.plan.delay)
        if kind == "error500":
            await _send(send, 500, b'{"error": "injected fault: internal error"}')
        elif kind == "error429":
            after = f"{self.plan.retry_after:g}".encode()
            await _send(
                send, 429, b'{"error": "injected fault: slow down"}', [(b"retry-after", after)]
            )
        elif kind == "malformed":
            await _send(send, 200, b'{"model_name": "x", "outputs": [{"name": "la')
        elif kind == "drop":
            # Promise a long body, send a little, return: the server closes the connection.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"4096"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"outputs": [', "more_body": True})
        else:
            if kind == "slow":
                await asyncio.sleep(self.plan.slow_seconds)
            await self.app(scope, receive, send)


async def _send(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": hdrs + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def with_fault_control(app: Any, plan: FaultPlan, *, guard: Guard) -> FaultInjector:
    """``app`` wrapped in a :class:`FaultInjector`, with ``PUT /_faults`` (a plan's JSON) to
    replace its plan; that route passes ``guard`` (the API key) first, like every other."""
    injector = FaultInjector(app, plan)

    @app.put("/_faults")
    async def replace_faults(request: Request) -> dict[str, str]:
        guard(request)
        body = await read_body(request, max_bytes=64 * 1024)
        try:
            injector.replace(FaultPlan.from_json(body.decode("utf-8", "replace") or "{}"))
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from exc
        return {"faults": "replaced"}

    return injector
