"""The chat page's endpoints through Flask's test client: conversations on disk (CRUD, export, import), the
limits and validation (400s that name the field), and rendering that keeps model output inert."""
import json
from html.parser import HTMLParser

import pytest
from nanochat.conversations import MAX_CONVERSATION_CHARS, MAX_MESSAGE_CHARS, MAX_MESSAGES, ConversationStore
from nanochat.web import create_app


@pytest.fixture
def client():
    """The real app of `nanochat serve` (no model trained here, workers not started: the page needs neither)."""
    return create_app(start=False).test_client()


@pytest.fixture
def disk(nanochat_home):
    return ConversationStore(nanochat_home / "conversations")


def create(client, **fields):
    response = client.post("/api/conversations", json=fields)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def send(method, path, body):
    """JSON as a client sends it (ASCII escapes, so a lone surrogate travels as \\ud800)."""
    return method(path, data=json.dumps(body), content_type="application/json")


def field_of(response):
    body = response.get_json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]["param"]


def test_the_page_is_served_with_its_assets_and_both_languages(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/assets/chat.js" in html and "/assets/chat.css" in html and "/highlight.css" in html
    assert "http://" not in html and "https://" not in html  # nothing from a CDN: the page works offline
    assert "script-src 'self';" in page.headers["Content-Security-Policy"] and "<script>" not in html
    data = json.loads(html.split('<script id="page-data" type="application/json">')[1].split("</script>")[0])
    assert data["strings"]["en"]["new_chat"] == "New chat" and data["strings"]["zh"]["new_chat"] == "新对话"
    assert set(data["strings"]["en"]) == set(data["strings"]["zh"])
    assert data["limits"]["message_chars"] == MAX_MESSAGE_CHARS
    for asset in ("/assets/chat.js", "/assets/chat.css", "/assets/theme.js", "/highlight.css"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.data) > 150, asset
        assert b"https://" not in response.data and b"http://" not in response.data, asset
    assert ".hl .k" in client.get("/highlight.css").get_data(as_text=True)


def test_create_list_get_update_rename_delete_on_disk(client, disk):
    conv = create(client, messages=[{"role": "user", "content": "Why is the sky blue?\nTell me."}], system="Be brief.")
    assert conv["title"] == "Why is the sky blue?" and conv["system"] == "Be brief."
    assert disk.get(conv["id"])["messages"][0]["content"] == "Why is the sky blue?\nTell me."

    listed = client.get("/api/conversations").get_json()["data"]
    assert [r["id"] for r in listed] == [conv["id"]] and listed[0]["messages"] == 1

    reply = {"role": "assistant", "content": [{"type": "text", "text": "Rayleigh "}, {"type": "python", "text": "2+2"},
                                                {"type": "python_output", "text": "4"}],
             "meta": {"tokens": 12, "tok_per_s": 30.5, "ttft_s": 0.05}}
    updated = client.put(f"/api/conversations/{conv['id']}", json={**conv, "messages": conv["messages"] + [reply]})
    assert updated.status_code == 200
    assert updated.get_json()["created"] == conv["created"] and updated.get_json()["title"] == conv["title"]
    got = client.get(f"/api/conversations/{conv['id']}").get_json()
    assert got["messages"][1] == reply and disk.get(conv["id"])["messages"][1] == reply

    renamed = client.patch(f"/api/conversations/{conv['id']}", json={"title": "  Sky  "})
    assert renamed.status_code == 200 and disk.get(conv["id"])["title"] == "Sky"
    assert len(disk.get(conv["id"])["messages"]) == 2  # renaming keeps the messages

    assert client.delete(f"/api/conversations/{conv['id']}").status_code == 204
    assert disk.list() == []
    assert client.get(f"/api/conversations/{conv['id']}").status_code == 404
    assert field_of(client.delete(f"/api/conversations/{conv['id']}")) == "id"


def test_unknown_and_malformed_ids_are_404_never_a_path(client, tmp_path):
    (tmp_path / "secret.json").write_text("{}")
    for cid in ("20990101-000000-abcdef", "..%2Fsecret", "not-an-id"):
        for method in ("get", "delete"):
            response = getattr(client, method)(f"/api/conversations/{cid}")
            assert response.status_code == 404, (method, cid)
        assert client.put(f"/api/conversations/{cid}", json={"messages": []}).status_code == 404
        assert client.patch(f"/api/conversations/{cid}", json={"title": "x"}).status_code == 404
    assert (tmp_path / "secret.json").exists()


def test_export_as_markdown_and_json_then_import(client):
    conv = create(client, title="Arithmetic", messages=[
        {"role": "user", "content": "What is 12*7?"},
        {"role": "assistant", "content": [{"type": "python", "text": "12*7"}, {"type": "python_output", "text": "84"},
                                          {"type": "text", "text": " It is **84**."}]}])
    md = client.get(f"/api/conversations/{conv['id']}/export?format=md")
    assert md.status_code == 200 and md.mimetype == "text/markdown"
    assert f'filename="nanochat-{conv["id"]}.md"' in md.headers["Content-Disposition"]
    assert md.headers["Content-Disposition"].startswith("attachment")
    text = md.get_data(as_text=True)
    assert text.startswith("# Arithmetic") and "## User" in text and "`python: 12*7` -> `84` It is **84**." in text

    exported = client.get(f"/api/conversations/{conv['id']}/export?format=json")
    assert exported.headers["Content-Disposition"].startswith("attachment")
    data = json.loads(exported.get_data(as_text=True))
    assert data["messages"] == conv["messages"]

    imported = client.post("/api/conversations/import", data=exported.data, content_type="application/json")
    assert imported.status_code == 201
    copy = imported.get_json()
    assert copy["id"] != conv["id"] and copy["messages"] == conv["messages"] and copy["title"] == "Arithmetic"
    assert len(client.get("/api/conversations").get_json()["data"]) == 2
    assert field_of(client.get(f"/api/conversations/{conv['id']}/export?format=pdf")) == "format"


@pytest.mark.parametrize("body, field", [
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "ok"},
                   {"role": "assistant", "content": [{"type": "html", "text": "x"}]}]},
     "messages[1].content[0]"),
    ({"messages": [{"role": "user", "content": "x", "meta": []}]}, "messages[0].meta"),
    ({"messages": [{"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * 7000}] * (MAX_CONVERSATION_CHARS // 7000 + 1)}, None),
    ({"title": 3}, "title"),
    ({"title": "t" * 201}, "title"),
    ({"system": ["x"]}, "system"),
    ({"colour": "red"}, "colour"),
    ({"title": "\ud800"}, "title"),  # a lone surrogate could never be written to a UTF-8 file
    ({"messages": [{"role": "user", "content": "a\udfffb"}]}, "messages[0].content"),
    ({"messages": [{"role": "assistant", "content": [{"type": "text", "text": "\ud800"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": "x", "meta": {"k": "\ud800"}}]}, "messages[0].meta"),
])
def test_bad_conversations_are_400s_naming_the_field_and_nothing_is_written(client, disk, body, field):
    attempts = [send(client.post, "/api/conversations", body)]
    if field != "colour":  # an import ignores fields it does not know (an export carries id, created, updated)
        attempts.append(send(client.post, "/api/conversations/import", {"messages": [], **body}))
    for response in attempts:
        assert response.status_code == 400, response.get_json()
        assert field_of(response) == field
    existing = create(client, messages=[{"role": "user", "content": "keep me"}])
    response = send(client.put, f"/api/conversations/{existing['id']}", body)
    assert response.status_code == 400 and field_of(response) == field
    assert disk.get(existing["id"])["messages"] == [{"role": "user", "content": "keep me"}]  # never lost
    assert len(disk.list()) == 1


@pytest.mark.parametrize("data, content_type, field, status", [
    (b"{not json", "application/json", "body", 400),
    (b'{"title": "\xff\xfe"}', "application/json", "body", 400),
    (b"[1, 2]", "application/json", "body", 400),
    (b'"text"', "application/json", "body", 400),
    (b'{"messages": []}' + b" " * (1 << 20), "application/json", None, 413),  # the app's own limit
])
def test_bad_bodies_are_refused_by_name(client, data, content_type, field, status):
    for path in ("/api/conversations", "/api/conversations/import", "/api/render"):
        response = client.post(path, data=data, content_type=content_type)
        assert response.status_code == status and field_of(response) == field, (path, response.get_json())


def test_rename_needs_a_title(client):
    conv = create(client)
    assert conv["title"] == "New conversation"
    for body in ({}, {"title": ""}, {"title": "   "}, {"title": 7}, {"title": "x" * 201}):
        response = client.patch(f"/api/conversations/{conv['id']}", json=body)
        assert response.status_code == 400 and field_of(response) == "title", body


def test_put_refuses_another_id(client):
    conv = create(client)
    response = client.put(f"/api/conversations/{conv['id']}", json={"id": "20000101-000000-000000", "messages": []})
    assert response.status_code == 400 and field_of(response) == "id"


def test_a_damaged_file_is_listed_with_its_error_and_left_alone(client, disk):
    disk.root.mkdir(parents=True)
    damaged = disk.root / "20260101-000000-abcdef.json"
    damaged.write_text("{half a file")
    rows = client.get("/api/conversations").get_json()["data"]
    assert rows[0]["id"] == damaged.stem and "damaged" in rows[0]["error"]
    assert client.get(f"/api/conversations/{damaged.stem}").status_code == 400
    assert damaged.read_text() == "{half a file"


XSS = ('Hello <script>alert("x")</script> <img src=x onerror="alert(1)"> <b onclick="alert(2)">bold</b>\n\n'
       '[click](javascript:alert(3)) [ok](https://example.org "t") [data](data:text/html,<script>alert(4)</script>)\n\n'
       '<iframe src="https://evil.example"></iframe> <a href="javascript:alert(5)">raw</a>\n\n'
       '```html\n<script>alert(6)</script>\n```\n')


class Tags(HTMLParser):
    """Every element and attribute a browser would build from the HTML."""

    def __init__(self, html):
        super().__init__()
        self.found = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, dict(attrs)))


def assert_inert(html):
    """No element that runs or loads anything, no event handler, links only to http(s)."""
    for tag, attrs in Tags(html).found:
        assert tag not in ("script", "img", "iframe", "object", "embed", "style", "link", "form", "svg"), html
        handlers = [name for name in attrs if name.startswith("on") or name == "src"]
        assert not handlers and ("style" not in attrs or tag in ("td", "th")), (tag, attrs)
        if "href" in attrs:
            assert attrs["href"].startswith(("https://", "http://", "mailto:")), attrs


def test_render_keeps_model_output_inert(client):
    html = client.post("/api/render", json={"text": XSS}).get_json()["html"]
    assert_inert(html)
    assert "&lt;script&gt;" in html  # shown as text, not dropped silently
    assert '<a href="https://example.org" title="t" target="_blank" rel="noopener noreferrer nofollow">ok</a>' in html
    assert '<pre class="hl"><code class="language-html">' in html  # code blocks are highlighted
    parts = [{"type": "text", "text": "**Sum:** <script>x</script>"},
             {"type": "python", "text": "<img src=x onerror=y>"},
             {"type": "python_output", "text": "</code><script>alert(1)</script>"}, {"type": "text", "text": "done"}]
    html = client.post("/api/render", json={"message": {"role": "assistant", "content": parts}}).get_json()["html"]
    assert_inert(html)
    assert "<strong>Sum:</strong>" in html and '<div class="tool">' in html
    assert '<div class="tool-call">' in html and '<div class="tool-result">' in html
    assert "&lt;/code&gt;&lt;script&gt;" in html


def test_render_a_whole_conversation_and_refuse_bad_input(client):
    messages = [{"role": "user", "content": "# not markdown for users"}, {"role": "assistant", "content": "*yes*"}]
    assert client.post("/api/render", json={"messages": messages}).get_json()["html"] == [None, "<p><em>yes</em></p>\n"]
    assert field_of(client.post("/api/render", json={"text": 5})) == "text"
    assert field_of(client.post("/api/render", json={"text": "x" * (MAX_MESSAGE_CHARS + 1)})) == "text"
    assert field_of(client.post("/api/render", json={"message": "x"})) == "message"
    assert field_of(client.post("/api/render", json={"message": {"content": [{"type": "x"}]}})) == "message.content"
    tool = {"messages": [{"role": "tool", "content": ""}]}
    assert field_of(client.post("/api/render", json=tool)) == "messages[0].role"
    assert field_of(client.post("/api/render", json={})) == "text"
    assert field_of(send(client.post, "/api/render", {"text": "a\ud800"})) == "text"
    assert field_of(send(client.post, "/api/render", {"message": {"content": "\udfff"}})) == "message.content"


HOSTILE_VALUES = [None, True, 0, -1, 1e308, 10 ** 30, "", "x", "\ud800", "a\x00b", "<script>alert(1)</script>",
                  "x" * 9000, [], [1], {}, {"a": 1}, [[[]]], {"type": "text"}, {"type": "text", "text": "\udfff"},
                  [{"type": "python", "text": "1+1"}], [{"type": "text", "text": 5}], "20261202-181500-3f9a1c"]


def hostile_message(rng):
    message = {"role": rng.choice(["user", "assistant", "system", "tool", None, 1, "\ud800"]),
               "content": rng.choice(HOSTILE_VALUES)}
    if rng.random() < 0.3:
        message["meta"] = rng.choice(HOSTILE_VALUES)
    return rng.choice([message, rng.choice(HOSTILE_VALUES)])


def hostile_body(rng, path):
    """Mostly well-shaped bodies with hostile values (so they get past the first check), sometimes anything."""
    keys = ["text", "message", "messages"] if path == "/api/render" else ["title", "model", "system", "messages"]
    body = {}
    for key in rng.sample(keys, rng.randrange(1, len(keys) + 1)) + (["id"] if rng.random() < 0.1 else []):
        if key == "messages" and rng.random() < 0.8:
            body[key] = [hostile_message(rng) for _ in range(rng.randrange(0, 4))]
        elif key == "message" and rng.random() < 0.8:
            body[key] = hostile_message(rng)
        else:
            body[key] = rng.choice(HOSTILE_VALUES)
    return body if rng.random() < 0.9 else rng.choice(HOSTILE_VALUES)


def test_hostile_input_never_gets_a_5xx(client):
    """600 random hostile requests at every endpoint of the page: each answer is < 500, errors in OpenAI's shape."""
    import random
    rng = random.Random(7)
    cid = create(client, messages=[{"role": "user", "content": "hi"}])["id"]
    paths = ["/api/conversations", f"/api/conversations/{cid}", f"/api/conversations/{cid}/export",
             "/api/conversations/import", "/api/render", "/api/conversations/..", "/api/conversations/%00",
             "/api/conversations/20261202-181500-3f9a1c"]
    for _ in range(600):
        method = rng.choice(["GET", "POST", "PUT", "PATCH", "DELETE"])
        path = rng.choice(paths)
        if method != "DELETE" or rng.random() < 0.1:
            body = json.dumps(hostile_body(rng, path)).encode()
            if rng.random() < 0.1:
                body = body[: rng.randrange(len(body) + 1)] + rng.choice([b"\xff", b"", b"\xc3"])
            query = rng.choice(["", "?format=md", "?format=json", "?format=%ff", "?format=x&format=md"])
            response = client.open(path + query, method=method, data=body, content_type="application/json")
            assert response.status_code < 500, (method, path, body[:300], response.get_data(as_text=True)[:500])
            if response.status_code >= 400:
                assert set(response.get_json()["error"]) == {"message", "type", "param", "code"}
    assert client.get(f"/api/conversations/{cid}").status_code in (200, 404)
    for row in ConversationStore().list():
        assert "error" not in row, row  # nothing damaged was written


def test_calculator_parts_pair_up_into_blocks():
    from nanochat.web.render import message_html
    html = message_html([{"type": "python", "text": "1+1"}, {"type": "python", "text": "2*3"},
                         {"type": "python_output", "text": "6"}, {"type": "text", "text": "so *6*"},
                         {"type": "python", "text": "7-"}])
    blocks = html.split('<div class="tool">')[1:]
    assert len(blocks) == 3
    assert "<code>1+1</code>" in blocks[0] and "tool-result" not in blocks[0]  # a call the model never finished
    assert "<code>2*3</code>" in blocks[1] and "<code>6</code>" in blocks[1]
    assert "<em>6</em>" in html and "<code>7-</code>" in blocks[2]
    assert message_html([{"type": "python_output", "text": "9"}]).count("tool-call") == 0  # a result alone
