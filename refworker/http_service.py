"""HTTP mode: an OpenAI-compatible worker (chat and completions) over the same simulated engine."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from refworker import tracing
from refworker.chat_template import Renderer, load_renderer, normalise_messages
from refworker.engine import Engine, GenerationRequest, Live, Plan, RequestRejected
from refworker.text_output import TextChoice

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "CANCELLED": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
MAX_BODY_BYTES = 256 * 1024 * 1024
STOP_GRACE_S = 1.0
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class InjectedFailure(Exception):
    """``fail_after`` reached: the response breaks off."""


# SGLang's PD fields of an HTTP request (the gateway adds them for both halves).
BOOTSTRAP_FIELDS = ("bootstrap_host", "bootstrap_port", "bootstrap_room")


class HttpWorker:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._runner: web.AppRunner | None = None
        self._render: Renderer = load_renderer()

    async def start(self, host: str, port: int) -> int:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/abort_request", self._abort)
        app.router.add_post("/flush_cache", self._flush_cache)
        app.router.add_get("/refworker/record", self._record)
        # Handler cancellation: a client that hangs up must end its (possibly stalled) generation.
        self._runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=STOP_GRACE_S, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _models(self, request: web.Request) -> web.Response:
        engine = self._engine
        model = {
            "id": engine.config.served_model_name,
            "object": "model",
            "created": int(engine.started_at),
            "owned_by": "refworker",
            "root": str(engine.model.path),
            "max_model_len": engine.model.max_context_length,
        }
        return web.json_response({"object": "list", "data": [model]})

    async def _record(self, request: web.Request) -> web.Response:
        engine = self._engine
        return web.json_response({**engine.record.to_dict(), "served_requests": engine.total_requests})

    async def _abort(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        found = self._engine.abort(str(body.get("rid", "")), str(body.get("reason", "")))
        return web.json_response({"success": found}, status=200 if found else 404)

    async def _flush_cache(self, request: web.Request) -> web.Response:
        """SGLang's ``POST /flush_cache``: 200, or 400 while requests are running."""
        if self._engine.flush_cache():
            return web.Response(text="Cache flushed.\n")
        return web.Response(
            status=400, text=f"Cache not flushed: {len(self._engine.live)} requests running\n"
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        messages = body.get("messages")
        template = self._engine.model.chat_template
        if not isinstance(messages, list) or not messages:
            return _error(400, "messages must be a non-empty list")
        if template is None:
            return _error(400, "the model directory has no chat template")
        extra = body.get("chat_template_kwargs") or {}
        try:
            prompt = self._render(template, normalise_messages(messages), body.get("tools"), dict(extra))
        except Exception as exc:  # a template error is the request's fault
            return _error(400, f"chat template failed: {exc}")
        ids = list(self._engine.model.tokenizer.encode(prompt, add_special_tokens=False).ids)
        return await self._generate(request, body, ids, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = list(self._engine.model.tokenizer.encode(prompt, add_special_tokens=False).ids)
        elif isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            ids = list(prompt)
        else:
            return _error(400, "prompt must be a string or a list of token ids (batches are not supported)")
        return await self._generate(request, body, ids, chat=False)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], ids: list[int], chat: bool
    ) -> web.StreamResponse:
        attributes = {"stream": bool(body.get("stream")), "prompt_tokens": len(ids)}
        with tracing.request_span(request.headers, attributes):
            return await self._respond(request, body, ids, chat)

    async def _respond(
        self, request: web.Request, body: dict[str, Any], ids: list[int], chat: bool
    ) -> web.StreamResponse:
        engine = self._engine
        prefix = "chatcmpl-" if chat else "cmpl-"
        rid = request.headers.get("x-request-id") or f"{prefix}{uuid.uuid4().hex}"
        engine.record.request(rid, body, request.headers.items())
        role = engine.config.disaggregation_mode
        if role != "null" and not all(k in body for k in BOOTSTRAP_FIELDS):
            return _error(400, f"a {role} worker needs {', '.join(BOOTSTRAP_FIELDS)}")
        if role == "prefill":  # the prefill half: the prompt's KV cache and the first token
            body = {**body, "max_tokens": 1, "max_completion_tokens": 1, "min_tokens": 0}
        try:
            generation, stops = _generation_request(rid, ids, body)
            plan = engine.plan(generation)
        except RequestRejected as exc:
            return _error(HTTP_STATUS.get(exc.status, 500), exc.message, exc.status)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        live = engine.begin(plan)
        tokenizer = engine.model.tokenizer
        choices = [TextChoice(tokenizer, c.finish_reason, c.matched_token_id, stops) for c in plan.choices]
        response = _Responder(rid, engine.config.served_model_name, chat, plan, live, choices, body)
        try:
            return await response.run(request)
        except (asyncio.CancelledError, ConnectionResetError):
            engine.record.cancel(rid)
            raise
        finally:
            engine.finish(live)


class _Responder:
    """Walks a plan's steps and writes OpenAI JSON or SSE."""

    def __init__(
        self,
        rid: str,
        model: str,
        chat: bool,
        plan: Plan,
        live: Live,
        choices: list[TextChoice],
        body: dict[str, Any],
    ) -> None:
        self.rid = rid
        self.model = model
        self.chat = chat
        self.plan = plan
        self.live = live
        self.choices = choices
        self.stream = bool(body.get("stream"))
        options = body.get("stream_options") or {}
        self.include_usage = bool(options.get("include_usage")) if isinstance(options, dict) else False
        self.created = int(time.time())
        self.sent = 0

    async def run(self, request: web.Request) -> web.StreamResponse:
        live = self.live
        if not self.stream:
            try:
                await self._walk(live, None)
            except InjectedFailure:
                return _error(500, "injected failure", "INTERNAL")
            return web.json_response(self._final())
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        if self.chat:
            for index in range(len(self.choices)):
                await self._send(response, self._chunk(index, {"role": "assistant", "content": ""}, None))
        try:
            await self._walk(live, response)
        except InjectedFailure:
            error = {"error": {"message": "injected failure", "type": "internal_error", "code": 500}}
            await response.write(f"data: {json.dumps(error)}\n\n".encode())
            return response
        if self.include_usage:
            await self._send(response, {**self._envelope([]), "usage": self._usage()})
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _walk(self, live: Live, response: web.StreamResponse | None) -> None:
        """Feed the plan's steps through the text choices; with a response, stream what became final."""
        plan = self.plan
        if response is None and plan.fail_after == 0:
            raise InjectedFailure
        loop = asyncio.get_running_loop()
        started = loop.time()
        stall_at = (1 if response is not None else 0) if plan.stall else -1
        self.sent = 0
        for due, index, start, end, last in plan.steps:
            choice = self.choices[index]
            if choice.done:
                continue
            if due or live.ticket is not None:
                await live.until(started + due, end)
            if self.sent == stall_at:
                while not live.aborted:  # in realistic mode the simulator may wake a pause early
                    await live.pause(None)
            if live.aborted:
                break
            text = choice.feed(plan.choices[index].ids[start:end])
            if last:
                text += choice.finish()
            if response is None or not (text or choice.done):
                continue
            if self.sent == plan.fail_after:
                raise InjectedFailure
            finish = choice.finish_reason if choice.done else None
            await self._send(response, self._chunk(index, self._delta(text), finish))
        if not live.aborted:
            return
        for index, choice in enumerate(self.choices):
            if not choice.done:
                choice.abort()
                if response is not None:
                    await self._send(response, self._chunk(index, {}, "abort"))

    async def _send(self, response: web.StreamResponse, payload: dict[str, Any]) -> None:
        self.sent += 1
        await response.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")

    def _delta(self, text: str) -> dict[str, Any]:
        return {"content": text} if text else {}

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        if not self.stream:
            kind = "chat.completion" if self.chat else "text_completion"
        envelope: dict[str, Any] = {
            "id": self.rid,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.stream and self.include_usage:
            envelope["usage"] = None
        return envelope

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": finish}
        if self.chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta.get("content", "")
        return self._envelope([choice])

    def _final(self) -> dict[str, Any]:
        choices = []
        for index, choice in enumerate(self.choices):
            entry: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": choice.finish_reason}
            if self.chat:
                entry["message"] = {"role": "assistant", "content": choice.text}
            else:
                entry["text"] = choice.text
            if choice.matched_stop is not None:
                entry["matched_stop"] = choice.matched_stop
            choices.append(entry)
        return {**self._envelope(choices), "usage": self._usage()}

    def _usage(self) -> dict[str, Any]:
        completion = sum(c.tokens for c in self.choices)
        prompt = self.plan.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self.live.cached_tokens},
        }


def _generation_request(
    rid: str, ids: list[int], body: dict[str, Any]
) -> tuple[GenerationRequest, list[str]]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError("stop must be a non-empty string or a list of them")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    n = body.get("n") or 1
    for name, value in (("max_tokens", max_tokens), ("n", n)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer")
    generation = GenerationRequest(
        request_id=rid,
        prompt_ids=ids,
        max_new_tokens=max_tokens,
        min_new_tokens=int(body.get("min_tokens") or 0),
        stop_token_ids=tuple(int(t) for t in body.get("stop_token_ids") or ()),
        ignore_eos=bool(body.get("ignore_eos")),
        n=int(n),
        stream=bool(body.get("stream")),
    )
    return generation, stops


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps(_error_body(400, "the body must be a JSON object")),
            content_type="application/json",
        )
    return body


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    return web.json_response(_error_body(status, message, code), status=status)


def _error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "internal_error"
    return {"error": {"message": message, "type": kind, "code": code or status}}
