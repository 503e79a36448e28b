"""The chat page in a real Chromium (Debian's package, driven by Playwright) against a real `nanochat serve`.

One person's session, in order: send a message and watch the reply stream, stop one, regenerate, edit a
message and resend, switch to 中文, reload and find everything, export and import, settings remembered;
then a conversation whose reply holds <script>, event handlers and javascript: links renders inert, and
the page at 360 px in dark mode. Screenshots go to test-artifacts/web/ (look at them).

Needs /usr/bin/chromium (apt-get install -y chromium) and playwright (pip install -e ".[test]"); never
`playwright install`, which downloads a browser of its own.
"""
import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest

from nanochat.conversations import ConversationStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
HOW = ("the browser test needs Debian's Chromium and Playwright: apt-get install -y chromium; "
       "pip install -e '.[test]' (never `playwright install`)")

if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM}: {HOW}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason=HOW)

from webhome import make_home  # noqa: E402  (a tiny run with real checkpoints)
from webserver import Server  # noqa: E402  (the real `nanochat serve` in a subprocess)

TIMEOUT_MS = 60_000  # CI has two busy cores: generous waits, never fixed sleeps


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("webhome")
    make_home(home)
    return home


@pytest.fixture(scope="module")
def server(home):
    """(base url, NANOCHAT_HOME) of a running `nanochat serve` on the tiny run."""
    served = Server(home)
    yield served.url, home
    served.stop()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        yield chromium
        chromium.close()


def new_page(browser, url, *, width=1280, height=820, scheme="light", locale="en-US", ready=True):
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme, locale=locale,
                                  accept_downloads=True, permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.accept()))
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(url)
    if ready:
        page.wait_for_selector("body[data-ready]")
    return page


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def wait_reply_done(page, count):
    """Wait until there are `count` messages, none streaming, and the conversation is saved."""
    page.wait_for_function(f"() => document.querySelectorAll('#message-list .msg').length === {count} && "
                           "!document.querySelector('.msg.streaming') && !document.body.dataset.busy")


def set_settings(page, **values):
    page.click("#settings-btn")
    for name, value in values.items():
        selector = f"#set-{name.replace('_', '-')}"
        if name == "model":
            page.select_option(selector, value)
        else:
            page.fill(selector, str(value))
    page.click("#settings-dialog .panel-foot .btn.primary")
    # the page reads the panel on its close event (a task later): wait until the settings are stored
    stored_settings = "JSON.parse(localStorage.getItem('nanochat.settings') || '{}')"
    for name, value in values.items():
        page.wait_for_function(f"() => String({stored_settings}[{json.dumps(name)}]) === {json.dumps(str(value))}")


def stored(home):
    store = ConversationStore(home / "conversations")
    return [store.get(row["id"]) for row in store.list()]


def drawer_right(page):
    return page.evaluate("document.querySelector('#sidebar').getBoundingClientRect().right")


def stats(url):
    with urllib.request.urlopen(f"{url}/api/stats", timeout=10) as r:
        return json.load(r)


def test_a_session_in_chromium(server, browser):
    url, home = server
    page = new_page(browser, url)
    assert page.inner_text("#model-info") == "tiny · sft · step 10"
    assert page.inner_text("#new-chat") == "New chat"
    shot(page, "01-empty-desktop-light")

    # send: Enter sends, Shift+Enter is a new line; the reply streams and ends with its figures
    page.click("#input")
    page.keyboard.type("Hello there!")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("How are you?")
    set_settings(page, model="tiny/base", temperature=0, max_tokens=24, system="Be brief.")  # greedy: 24 tokens
    assert page.inner_text("#model-info") == "tiny · pretrain · step 5"
    page.focus("#input")
    page.keyboard.press("Enter")
    wait_reply_done(page, 2)
    assert page.inner_text(".msg.user .body") == "Hello there!\nHow are you?"
    assert "tokens" in page.inner_text(".msg.assistant .stats") and "tok/s" in page.inner_text(".msg.assistant .stats")
    [conv] = stored(home)
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["meta"]["tokens"] == 24 and conv["title"] == "Hello there!"
    assert conv["system"] == "Be brief." and conv["model"] == "tiny/base"
    assert page.inner_text(".conv-row.active .conv-title") == "Hello there!"
    page.click(".msg.user .action-copy")
    assert page.evaluate("navigator.clipboard.readText()") == "Hello there!\nHow are you?"
    shot(page, "02-reply-desktop-light")

    # stop: a model that never ends its reply, stopped with Esc once text has streamed in
    set_settings(page, model="tiny/mid", max_tokens=4000)  # seconds of tokens
    page.fill("#input", "Tell me a long story.")
    page.keyboard.press("Enter")
    page.wait_for_function("() => (document.querySelector('.msg.streaming .body') || {}).textContent?.length > 5")
    assert page.is_visible("#stop-btn") and not page.is_visible("#send-btn")
    shot(page, "03-streaming-desktop-light")
    page.keyboard.press("Escape")
    wait_reply_done(page, 4)
    assert page.is_visible(".msg.assistant:last-child .badge-stopped")
    last = stored(home)[0]["messages"][-1]
    assert last["meta"]["stopped"] is True and 0 < len(last["content"])
    deadline = time.time() + 30
    while stats(url)["requests"]["cancelled"] < 1 and time.time() < deadline:  # the server stopped generating
        time.sleep(0.2)
    assert stats(url)["requests"]["cancelled"] >= 1 and stats(url)["workers"]["busy"] == 0

    # regenerate the stopped reply with the model that ends its replies
    set_settings(page, model="tiny/base", max_tokens=24)
    page.hover(".msg.assistant:last-child")
    page.click(".msg.assistant:last-child .action-regenerate")
    wait_reply_done(page, 4)
    last = stored(home)[0]["messages"][-1]
    assert "stopped" not in last["meta"] and last["meta"]["tokens"] == 24 and last["meta"]["model"] == "tiny/base"
    assert last["meta"]["finish_reason"] == "length" and page.is_visible(".msg.assistant:last-child .badge-cut")
    assert not page.is_visible(".badge-stopped")

    # edit the first message and resend from there: what came after it is replaced
    page.hover(".msg.user >> nth=0")
    page.click(".msg.user >> nth=0 >> .action-edit")
    page.fill(".edit-box textarea", "12 + 30 = ?")
    page.click(".edit-send")
    wait_reply_done(page, 2)
    messages = stored(home)[0]["messages"]
    assert len(messages) == 2 and messages[0]["content"] == "12 + 30 = ?"

    # 中文, then reload: the conversation, the language and the settings are all still there
    page.click("#lang-btn")
    assert page.inner_text("#new-chat") == "新对话" and page.get_attribute("html", "lang") == "zh-CN"
    assert "词元" in page.inner_text(".msg.assistant .stats")
    shot(page, "04-reply-desktop-zh")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    assert page.inner_text("#new-chat") == "新对话"
    assert page.inner_text(".msg.user .body") == "12 + 30 = ?"
    assert page.locator("#message-list .msg").count() == 2
    assert page.inner_text("#conv-title") == "Hello there!"
    page.click("#settings-btn")
    assert page.input_value("#set-max-tokens") == "24" and page.input_value("#set-model") == "tiny/base"
    assert page.input_value("#set-temperature") == "0"
    shot(page, "05-settings-desktop-zh")
    page.keyboard.press("Escape")

    # rename, export (Markdown and JSON), import the JSON back
    page.click(".conv-row.active .conv-more")
    page.click(".menu [data-action=rename]")
    page.fill(".conv-row input", "Arithmetic")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#conv-title').textContent === 'Arithmetic'")
    exported = {}
    for fmt in ("md", "json"):
        page.click(".conv-row.active .conv-more")
        with page.expect_download() as download:
            page.click(f".menu [data-action=export_{fmt}]")
        assert download.value.suggested_filename == f"nanochat-{stored(home)[0]['id']}.{fmt}"
        path = ARTIFACTS / f"export.{fmt}"
        download.value.save_as(path)
        exported[fmt] = path.read_text(encoding="utf-8")
    assert exported["md"].startswith("# Arithmetic") and "## User\n\n12 + 30 = ?" in exported["md"]
    assert json.loads(exported["json"])["messages"] == stored(home)[0]["messages"]
    page.set_input_files("#import-file", str(ARTIFACTS / "export.json"))
    page.wait_for_function("() => document.querySelectorAll('.conv-row').length === 2")
    assert len(stored(home)) == 2
    shot(page, "06-imported-desktop-zh")

    # delete the copy (the page asks first)
    page.click(".conv-row.active .conv-more")
    page.click(".menu [data-action=delete]")
    page.wait_for_function("() => document.querySelectorAll('.conv-row').length === 1")
    assert len(page.dialogs) == 1 and len(stored(home)) == 1
    assert page.errors == []


def test_model_output_renders_inert(server, browser):
    url, home = server
    evil = ('**Bold** and <script>window.pwned = 1</script> <img src=x onerror="window.pwned = 2">\n\n'
            '[click me](javascript:window.pwned=3) [docs](https://example.org) '
            '<a href="javascript:window.pwned=4">a</a>\n\n'
            '```python\nprint("<script>window.pwned = 5</script>")\n```\n')
    parts = [{"type": "text", "text": evil}, {"type": "python", "text": "12*7"},
             {"type": "python_output", "text": "<img src=x onerror=\"window.pwned=6\">84"}]
    conv = ConversationStore(home / "conversations").create(
        title="Inert", messages=[{"role": "user", "content": "<script>window.pwned = 7</script> hi"},
                                 {"role": "assistant", "content": parts}])
    page = new_page(browser, f"{url}/#{conv['id']}")
    page.wait_for_selector(".msg.assistant .md strong")
    listed = page.locator("#message-list")
    assert listed.locator("script, img, iframe, [onerror], [onclick]").count() == 0
    assert listed.locator("a[href^='javascript']").count() == 0
    link = listed.locator("a", has_text="docs")
    assert link.get_attribute("href") == "https://example.org" and "noopener" in link.get_attribute("rel")
    assert "<script>window.pwned = 7</script> hi" == page.inner_text(".msg.user .body")  # shown as text
    assert "window.pwned = 5" in page.inner_text(".msg.assistant pre")
    assert page.locator(".msg.assistant pre .k, .msg.assistant pre .nb").count() >= 1  # highlighted
    assert page.inner_text(".tool-call code") == "12*7" and page.inner_text(".tool-result code").endswith("84")
    page.click("text=click me", timeout=5000)
    assert page.evaluate("window.pwned") is None and page.dialogs == [] and page.errors == []
    shot(page, "07-inert-desktop-light")
    page.click("#theme-btn")
    assert page.get_attribute("html", "data-theme") == "dark"
    shot(page, "08-inert-desktop-dark")


def test_narrow_dark_chinese_browser(server, browser):
    url, home = server
    page = new_page(browser, url, width=360, height=740, scheme="dark", locale="zh-CN")
    assert page.get_attribute("html", "data-theme") == "dark"
    assert page.inner_text("#new-chat") == "新对话"  # the browser's language at first
    assert drawer_right(page) <= 0  # the sidebar is a drawer here, out of view
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing sticks out sideways
    shot(page, "09-empty-360-dark-zh")
    set_settings(page, model="tiny/base", temperature=0, max_tokens=40)
    page.fill("#input", "你好")
    page.keyboard.press("Enter")
    wait_reply_done(page, 2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    shot(page, "10-reply-360-dark-zh")
    page.click("#menu-btn")
    page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0")
    page.wait_for_timeout(300)  # the slide-in transition, for the screenshot
    shot(page, "11-drawer-360-dark-zh")
    page.click(".conv-row >> nth=0")
    page.wait_for_function("() => document.querySelector('#sidebar').getBoundingClientRect().right <= 0")
    page.click("#theme-btn")
    page.click("#lang-btn")
    assert page.get_attribute("html", "data-theme") == "light" and page.inner_text("#new-chat") == "New chat"
    shot(page, "12-reply-360-light-en")
    assert page.errors == []


def test_a_server_with_an_api_key_asks_for_it_once(home, browser):
    served = Server(home, "--api-key", "s3cret")
    url = served.url
    try:
        with urllib.request.urlopen(f"{url}/") as r:  # the page itself is public; the API is not
            assert r.status == 200
        page = new_page(browser, url, ready=False)
        page.wait_for_selector("#key-dialog[open]")
        page.fill("#key-input", "wrong")
        page.keyboard.press("Enter")
        page.wait_for_selector("#key-dialog[open]")  # refused: asked again
        page.fill("#key-input", "s3cret")
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-ready]")
        assert page.inner_text("#model-info") == "tiny · sft · step 10"
        page.fill("#input", "Hello")
        page.keyboard.press("Enter")
        wait_reply_done(page, 2)
        assert "tokens" in page.inner_text(".msg.assistant .stats")
        page.reload()
        page.wait_for_selector("body[data-ready]")  # the key is remembered: no dialog this time
        assert not page.is_visible("#key-dialog") and page.locator(".conv-row").count() >= 1
        assert page.errors == []
    finally:
        served.stop()
