"""The OpenAI-compatible API: /v1/chat/completions, /v1/models, /api/health, /api/stats.

    curl http://127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "hi"}]}'
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")

A request is checked (validation.py), queued for an engine worker (workers.py) and answered from the
worker's events: one JSON, or Server-Sent Events that relay the text as it is generated. A client that
disconnects cancels its job, so the worker stops at the next token and takes the next request.
"""
import json
import secrets
import time

from flask import Blueprint, Response, current_app, jsonify, request

from nanochat.web.errors import ApiError, error_body
from nanochat.web.validation import MAX_BODY_BYTES, chat_request, parse_json
from nanochat.web.workers import Job, QueueFull

bp = Blueprint("api", __name__)
POLL_S = 0.2  # how often a waiting request thread checks that its client is still there
FRAME_S = 0.02  # the shortest time between two frames of a stream (50 a second: smooth to read)
RETRY_AFTER_S = 2


class ClientGone(Exception):
    pass


def state():
    return current_app.extensions["nanochat"]


@bp.get("/api/health")
def health():
    s = state()
    default = s.catalog.default
    return jsonify(status="ok", auth_required=bool(s.api_key), default_model=default.id if default else None)


@bp.get("/api/stats")
def stats():
    return jsonify(state().pool.stats())


@bp.get("/v1/models")
def models():
    catalog = state().catalog
    default = catalog.default.id if catalog.default else None
    return jsonify(object="list", data=[m.describe(default=m.id == default) for m in catalog.models()])


@bp.get("/v1/models/<path:model_id>")
def model(model_id):
    found = state().catalog.get(model_id)
    if found is None:
        raise _unknown_model(model_id)
    return jsonify(found.describe(default=found is state().catalog.default))


@bp.post("/v1/chat/completions")
def chat_completions():
    s = state()
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body has {request.content_length:,} bytes; at most {MAX_BODY_BYTES:,}",
                       param="body")
    req = chat_request(parse_json(request.get_data(cache=False)))
    served = s.catalog.get(req.model)
    if served is None:
        raise _unknown_model(req.model)
    job = Job(served, req.messages, max_tokens=req.max_tokens, temperature=req.temperature, top_k=req.top_k,
              top_p=req.top_p, seed=req.seed, stop=req.stop)
    try:
        s.pool.submit(job)
    except QueueFull as exc:
        raise ApiError(503, str(exc), code="server_busy", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    disconnected = request.environ.get("waitress.client_disconnected")
    try:
        first = _next_event(job, disconnected)
        if first[0] == "error":
            raise _generation_error(first[1], served)
    except BaseException:
        job.cancel()
        raise
    reply = Reply(served.id)
    if req.stream:
        return Response(_frames(reply, job, first, disconnected, req.include_usage), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    shown = []
    try:
        for event in _relay(job, disconnected, first):
            if event[0] == "delta":
                shown.append(event[1])
    finally:
        job.cancel()  # no-op once done; frees the worker when the client left
    if event[0] == "error":
        raise _generation_error(event[1], served)
    return jsonify(reply.completion(event[1], "".join(shown)))


def _unknown_model(model_id):
    if model_id is None:
        return ApiError(404, "there is no model to serve yet; train one with: nanochat run --preset cpu-tiny",
                        param="model", code="model_not_found")
    return ApiError(404, f"no model {model_id!r} on this server; GET /v1/models lists them", param="model",
                    code="model_not_found")


def _generation_error(exc, served):
    from nanochat.engine import ContextFull
    from nanochat.models import ModelError
    from nanochat.tokenizer import TokenizerError
    if isinstance(exc, ContextFull):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, TokenizerError):  # a conversation the chat format cannot hold (validation checks first)
        return ApiError(400, str(exc), param="messages")
    if isinstance(exc, ModelError):  # e.g. its checkpoint was damaged after the server started
        return ApiError(503, f"the model {served.id} cannot be loaded: {exc}", param="model",
                        code="model_unavailable")
    return ApiError(500, f"the model {served.id} could not generate: {exc}", code="model_error")


def _next_event(job, disconnected):
    """The worker's next event; raises ClientGone (and cancels the job) when the client has left."""
    while True:
        if disconnected is not None and disconnected():  # cheap: waitress notes a closed socket
            job.cancel()
            raise ClientGone()
        event = job.next_event(POLL_S)
        if event is not None:
            return event


def _relay(job, disconnected, event):
    """The job's events from `event` on, deltas joined: between two, FRAME_S lets the next few tokens gather,
    so a fast model costs the request thread one wake-up and one write per frame, not per token."""
    while event[0] == "delta":
        text, pending = _drain(job, event[1])
        yield "delta", text
        if pending is None:
            time.sleep(FRAME_S)
            pending = _next_event(job, disconnected)
        event = pending
    yield event


def _drain(job, text):
    """Deltas the worker has already produced, joined: one frame instead of many when the relay lags."""
    while (event := job.next_event(0)) is not None:
        if event[0] != "delta":
            return text, event
        text += event[1]
    return text, None


def _frames(reply, job, event, disconnected, include_usage):
    """Server-Sent Events: a role chunk, text chunks, the finishing chunk, usage if asked, [DONE]."""
    try:
        yield _sse(reply.chunk({"role": "assistant", "content": ""}))
        for kind, value in _relay(job, disconnected, event):
            if kind == "delta":
                yield _sse(reply.chunk({"content": value}))
            elif kind == "error":
                yield _sse(error_body(500, f"generation failed: {value}", code="model_error"))
            else:
                yield _sse(reply.chunk({}, finish_reason=value.finish_reason, nanochat=reply.extension(value)))
                if include_usage:
                    yield _sse({**reply.chunk_base(), "choices": [], "usage": reply.usage(value)})
                yield b"data: [DONE]\n\n"
    except ClientGone:
        return
    finally:
        job.cancel()  # the client closed the stream (GeneratorExit) or it ended: free the worker


def _sse(obj):
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"


class Reply:
    """The JSON shapes of one completion: every chunk shares its id, created and model."""

    def __init__(self, model_id):
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model_id

    def chunk_base(self):
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def chunk(self, delta, finish_reason=None, nanochat=None):
        out = {**self.chunk_base(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if nanochat is not None:
            out["nanochat"] = nanochat
        return out

    def usage(self, result):
        return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.tokens,
                "total_tokens": result.prompt_tokens + result.tokens}

    def extension(self, result):
        """What the chat page shows under a reply, and the message to keep in the conversation."""
        return {"message": result.message, "tokens": result.tokens, "tok_per_s": result.tok_per_s,
                "ttft_s": result.ttft_s, "model": result.model, "step": result.step,
                "finish_reason": result.finish_reason}

    def completion(self, result, text):
        """`text`: the reply as the stream shows it (tool calls inline), the same text a streamed reply joins to."""
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "finish_reason": result.finish_reason,
                             "message": {"role": "assistant", "content": text}}],
                "usage": self.usage(result), "nanochat": self.extension(result)}
