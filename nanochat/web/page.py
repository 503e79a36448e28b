"""The chat page and the endpoints it keeps conversations with (a Flask Blueprint, `bp`).

    GET    /                                      the page (templates/chat.html, static/chat.js, static/chat.css)
    GET    /api/conversations                     {"data": [summaries, newest first]}
    POST   /api/conversations                     create one -> 201 the conversation
    GET    /api/conversations/<id>                one conversation
    PUT    /api/conversations/<id>                replace it whole (title, model, system, messages)
    PATCH  /api/conversations/<id>                {"title": "..."} renames it
    DELETE /api/conversations/<id>                204
    GET    /api/conversations/<id>/export?format=md|json   a download
    POST   /api/conversations/import              an exported JSON conversation -> 201 a new conversation
    POST   /api/render                            {"text"} | {"message"} | {"messages": [...]} -> sanitized HTML
    GET    /highlight.css                         code colours for the rendered HTML

Conversations live on disk through nanochat.conversations.ConversationStore (one JSON file each, atomic).
Errors use OpenAI's shape, {"error": {"message", "type", "param", "code"}}, and client input never gets a 5xx.
"""
import json
import re

from flask import Blueprint, Response, jsonify, render_template, request

from nanochat import conversations as store_module
from nanochat.conversations import (MAX_CONVERSATION_CHARS, MAX_MESSAGE_CHARS, MAX_MESSAGES, MAX_TITLE_CHARS,
                                    ConversationError, ConversationNotFound, ConversationStore)
from nanochat.i18n import MESSAGES
from nanochat.web import render
from nanochat.web.errors import ApiError
from nanochat.web.validation import parse_json

bp = Blueprint("page", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")

# Scripts only from this server's files: even if something slipped past the sanitizer, an injected inline
# script or event handler would not run. Inline styles stay allowed (table cell alignment from Markdown).
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# the field a ConversationError names: 'title' ..., messages[3].role ..., messages[0].content[1] ...
_FIELD = re.compile(r"^'(\w+)'|^(messages\[\d+\](?:\.\w+)?(?:\[\d+\])?)")


def bad(message, param):
    return ApiError(400, message, param=param)


@bp.errorhandler(ConversationNotFound)
def _not_found(exc):
    return jsonify(ApiError(404, str(exc), param="id").body()), 404


@bp.errorhandler(ConversationError)
def _invalid(exc):
    match = _FIELD.match(str(exc))
    return jsonify(bad(str(exc), (match.group(1) or match.group(2)) if match else None).body()), 400


def store() -> ConversationStore:
    """<data>/conversations, read on each request (NANOCHAT_HOME moves it)."""
    return ConversationStore()


def json_object():
    """The request's JSON object (the app caps the body at 1 MB; parse_json refuses bad UTF-8 and bad JSON)."""
    data = parse_json(request.get_data(cache=False))
    if not isinstance(data, dict):
        raise bad(f"the request body must be a JSON object, got {type(data).__name__}", "body")
    return data


def _fields(body: dict) -> dict:
    """The conversation fields a client may set (id, created and updated are the server's and ignored);
    anything else in the body is refused by name."""
    allowed = {"id", "title", "model", "system", "messages", "created", "updated"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r}; a conversation has {', '.join(sorted(allowed))}", unknown[0])
    return {k: body[k] for k in ("title", "model", "system", "messages") if k in body}


# -- the page ----------------------------------------------------------------------------------------


@bp.get("/")
def index():
    strings = {lang: {k.removeprefix("page."): v[lang] for k, v in MESSAGES.items() if k.startswith("page.")}
               for lang in ("en", "zh")}
    limits = {"messages": MAX_MESSAGES, "message_chars": MAX_MESSAGE_CHARS,
              "conversation_chars": MAX_CONVERSATION_CHARS, "title_chars": MAX_TITLE_CHARS}
    page = Response(render_template("chat.html", strings=strings, limits=limits))
    page.headers["Content-Security-Policy"] = PAGE_POLICY
    return page


@bp.get("/highlight.css")
def highlight_css():
    return Response(render.highlight_css(), mimetype="text/css", headers={"Cache-Control": "max-age=3600"})


# -- conversations -----------------------------------------------------------------------------------


@bp.get("/api/conversations")
def list_conversations():
    return jsonify({"data": store().list()})


@bp.post("/api/conversations")
def create_conversation():
    conv = store().save(_fields(json_object()))
    return jsonify(conv), 201


@bp.get("/api/conversations/<cid>")
def get_conversation(cid):
    return jsonify(store().get(cid))


@bp.put("/api/conversations/<cid>")
def replace_conversation(cid):
    body = json_object()
    if body.get("id") not in (None, cid):
        raise bad(f"'id' is {body['id']!r} but the address names {cid!r}", "id")
    old = store().get(cid)  # 404 for an unknown id: PUT replaces, POST creates
    conv = {"id": cid, "created": old.get("created"), "title": old.get("title"), **_fields(body)}
    return jsonify(store().save(conv))


@bp.patch("/api/conversations/<cid>")
def rename_conversation(cid):
    body = json_object()
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        raise bad(f"'title' must be a non-empty string, got {title!r}"[:300], "title")
    return jsonify(store().rename(cid, title.strip()))


@bp.delete("/api/conversations/<cid>")
def delete_conversation(cid):
    store().delete(cid)
    return "", 204


@bp.get("/api/conversations/<cid>/export")
def export_conversation(cid):
    fmt = request.args.get("format", "json")
    if fmt not in ("md", "json"):
        raise bad(f"format is {fmt!r}; expected md or json", "format")
    conv = store().get(cid)
    if fmt == "md":
        body, mimetype = store_module.to_markdown(conv), "text/markdown; charset=utf-8"
    else:
        body, mimetype = json.dumps(conv, ensure_ascii=False, indent=2) + "\n", "application/json"
    return Response(body, mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="nanochat-{cid}.{fmt}"'})


@bp.post("/api/conversations/import")
def import_conversation():
    return jsonify(store().import_json(json_object())), 201


# -- rendering ---------------------------------------------------------------------------------------


def _content(value, param):
    """A content to render, checked as a stored message's would be (type, size, valid Unicode)."""
    try:
        store_module.validate({"messages": [{"role": "assistant", "content": value}]})
    except ConversationError as exc:
        raise bad(str(exc).replace("messages[0].content", param).replace("messages[0]", param), param) from None
    return value


@bp.post("/api/render")
def render_markdown():
    """{"text": markdown} -> {"html"}; {"message": {content}} -> {"html"}; {"messages": [...]} -> {"html": [...]}.

    Only assistant replies are Markdown: a user message in a list gets null (the page shows it as plain text).
    """
    body = json_object()
    if "text" in body:
        if not isinstance(body["text"], str):
            raise bad(f"'text' must be a string, got {type(body['text']).__name__}", "text")
        return jsonify({"html": render.markdown_html(_content(body["text"], "text"))})
    if "message" in body:
        message = body["message"]
        if not isinstance(message, dict):
            raise bad(f"'message' must be an object, got {type(message).__name__}", "message")
        return jsonify({"html": render.message_html(_content(message.get("content"), "message.content"))})
    if "messages" in body:
        store_module.validate({"messages": body["messages"]})
        return jsonify({"html": [render.message_html(m["content"]) if m["role"] == "assistant"
                                 else None
                                 for m in body["messages"]]})
    raise bad("the body needs one of 'text', 'message' or 'messages'", "text")
