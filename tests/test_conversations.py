"""The conversation store shared by the web page, the dashboard and the CLI."""
import json

import pytest

from nanochat.conversations import (MAX_MESSAGE_CHARS, ConversationError, ConversationNotFound, ConversationStore,
                                    to_markdown)

TOOL_REPLY = {"role": "assistant", "content": [{"type": "text", "text": "Let me compute. "},
                                               {"type": "python", "text": "12*7"},
                                               {"type": "python_output", "text": "84"}]}


def test_create_get_list_rename_delete(nanochat_home):
    store = ConversationStore()
    conv = store.create([{"role": "user", "content": "What is 12*7?\nPlease."}, TOOL_REPLY], model="r/sft")
    assert conv["title"] == "What is 12*7?"
    assert (nanochat_home / "conversations" / f"{conv['id']}.json").exists()
    again = store.get(conv["id"])
    assert again["messages"][1] == TOOL_REPLY and again["model"] == "r/sft"
    other = store.create([{"role": "user", "content": "hi"}])
    assert {r["id"] for r in store.list()} == {conv["id"], other["id"]}
    assert store.rename(conv["id"], "Arithmetic")["title"] == "Arithmetic"
    assert store.get(conv["id"])["title"] == "Arithmetic"
    store.delete(other["id"])
    assert [r["id"] for r in store.list()] == [conv["id"]]
    with pytest.raises(ConversationNotFound):
        store.get(other["id"])


def test_export_markdown_and_import_json_round_trip():
    store = ConversationStore()
    conv = store.create([{"role": "user", "content": "hi"}, TOOL_REPLY], system="Be brief.")
    md = to_markdown(conv)
    assert "## System" in md and "Be brief." in md and "`python: 12*7` -> `84`" in md
    copy = store.import_json(json.dumps(conv))
    assert copy["id"] != conv["id"] and copy["messages"] == conv["messages"] and copy["system"] == "Be brief."


@pytest.mark.parametrize("bad, field", [
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}]}, "messages[0] has"),
    ({"messages": [{"role": "user", "content": [{"type": "html", "text": "x"}]}]}, "messages[0].content[0]"),
    ({"title": 3, "messages": []}, "'title'"),
    ({"messages": "hello"}, "'messages'"),
])
def test_bad_conversations_are_refused_naming_the_field(bad, field):
    store = ConversationStore()
    with pytest.raises(ConversationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        store.import_json(bad)
    assert store.list() == []


def test_damaged_file_is_listed_with_its_error_and_left_alone(nanochat_home):
    store = ConversationStore()
    good = store.create([{"role": "user", "content": "hi"}])
    damaged = nanochat_home / "conversations" / "20260101-000000-abcdef.json"
    damaged.write_text('{"messages": [', encoding="utf-8")
    rows = {r["id"]: r for r in store.list()}
    assert "damaged" in rows["20260101-000000-abcdef"]["error"] and "error" not in rows[good["id"]]
    assert damaged.read_text(encoding="utf-8") == '{"messages": ['


def test_ids_cannot_name_paths_outside_the_store():
    store = ConversationStore()
    for cid in ("../run", "/etc/passwd", "x.json", ""):
        with pytest.raises(ConversationNotFound):
            store.get(cid)
