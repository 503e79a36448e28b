"""The embedded starter corpus ships in the shard format of the real pretraining datasets.

Checks the committed files under plugins/nanochat_datasets/starter/ (built by dev/build_starter.py):
parquet layout, validation shard, size budget, both languages in both splits, chat.jsonl shape,
that chat text stays out of the pretraining shards, and that poems.jsonl quotes the shards exactly.
No network; reads ~7 MB.
"""

import importlib.util
import json
import re
from pathlib import Path

import pytest

pq = pytest.importorskip("pyarrow.parquet")

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "plugins" / "nanochat_datasets"
STARTER = PKG / "starter"
ROW_GROUP = 1024
BUDGET = 12 * 1024 * 1024
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


def lang_of(text: str) -> str:
    return "zh" if len(CJK.findall(text)) > 0.3 * len(text) else "en"


@pytest.fixture(scope="module")
def manifest():
    return json.loads((STARTER / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shards(manifest):
    """{file name: list of documents}, in manifest order."""
    return {s["file"]: pq.read_table(STARTER / s["file"]).column("text").to_pylist() for s in manifest["shards"]}


@pytest.fixture(scope="module")
def chats():
    lines = (STARTER / "chat.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_files_exist_and_fit_the_budget(manifest):
    for name in ["manifest.json", "PROVENANCE.md", "chat.jsonl", "poems.jsonl", "LICENSE.chinese-poetry.txt",
                 "LICENSE.chatterbot-corpus.txt", "README.brown-corpus.txt"]:
        assert (STARTER / name).is_file(), name
    total = sum(p.stat().st_size for p in STARTER.rglob("*") if p.is_file())
    assert total <= BUDGET, f"starter/ is {total} bytes, budget {BUDGET}"
    on_disk = sorted(p.name for p in STARTER.glob("*.parquet"))
    assert on_disk == [s["file"] for s in manifest["shards"]]
    assert on_disk == [f"shard_{i:05d}.parquet" for i in range(len(on_disk))]
    assert len(on_disk) >= 2


def test_last_shard_is_validation(manifest):
    files = [s["file"] for s in manifest["shards"]]
    assert manifest["val_shard"] == files[-1]
    assert manifest["train_shards"] == files[:-1]
    assert [s["split"] for s in manifest["shards"]] == ["train"] * (len(files) - 1) + ["val"]


def test_shard_format(manifest):
    for s in manifest["shards"]:
        meta = pq.ParquetFile(STARTER / s["file"]).metadata
        schema = pq.read_schema(STARTER / s["file"])
        assert schema.names == ["text"] and str(schema.field("text").type) == "string", s["file"]
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(n == ROW_GROUP for n in sizes[:-1]) and 0 < sizes[-1] <= ROW_GROUP, (s["file"], sizes)
        assert sum(sizes) == s["docs"] and len(sizes) == s["row_groups"]
        for i in range(meta.num_row_groups):
            assert meta.row_group(i).column(0).compression == "ZSTD", s["file"]


def test_documents_are_clean(shards, manifest):
    n = 0
    for name, docs in shards.items():
        for d in docs:
            assert isinstance(d, str) and d and d == d.strip(), (name, d[:60])
            d.encode("utf-8")
        n += len(docs)
    assert n == manifest["docs"]["total"] == manifest["docs"]["train"] + manifest["docs"]["val"]
    assert n % ROW_GROUP == 0
    assert manifest["docs"]["val"] <= 0.1 * n   # validation stays small


def test_both_languages_in_train_and_val(shards, manifest):
    for split in ("train", "val"):
        files = manifest["train_shards"] if split == "train" else [manifest["val_shard"]]
        langs = {"en": 0, "zh": 0}
        for f in files:
            for d in shards[f]:
                langs[lang_of(d)] += 1
        by_lang = manifest["counts"][split]["by_lang"]
        assert langs == {k: by_lang[k]["docs"] for k in ("en", "zh")}, split
        assert langs["en"] > 0 and langs["zh"] > 0
        assert set(manifest["counts"][split]["by_source"]) == {"brown", "web", "chinese-poetry"}


def test_chat_conversations_are_valid(chats, manifest):
    assert len({c["id"] for c in chats}) == len(chats)
    langs = {"en": 0, "zh": 0}
    for c in chats:
        assert set(c) == {"id", "lang", "category", "messages"}
        assert c["lang"] in langs and isinstance(c["category"], str) and c["category"]
        langs[c["lang"]] += 1
        msgs = c["messages"]
        assert len(msgs) >= 2 and len(msgs) % 2 == 0, c["id"]
        for i, m in enumerate(msgs):
            assert m["role"] == ("user" if i % 2 == 0 else "assistant"), c["id"]
            assert isinstance(m["content"], str) and m["content"].strip() == m["content"] != "", c["id"]
    assert langs["en"] > 0 and langs["zh"] > 0
    assert langs == manifest["chat"]["conversations"]


def test_no_chat_text_in_the_shards(shards, chats):
    lines = {line.strip() for docs in shards.values() for d in docs for line in d.split("\n")}
    leaked = [m["content"] for c in chats for m in c["messages"]
              if len(m["content"]) >= 16 and m["content"] in lines]
    assert not leaked, leaked[:5]


def test_poems_quote_the_shards_they_name(shards, manifest):
    poems = [json.loads(line) for line in (STARTER / "poems.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len({r["id"] for r in poems}) == len(poems) == sum(manifest["poems"]["poems"].values())
    files = {"train": manifest["train_shards"], "val": [manifest["val_shard"]]}
    text = {split: "\x00".join(d for f in names for d in shards[f] if lang_of(d) == "zh") for split, names in files.items()}
    for r in poems:
        assert set(r) == {"id", "collection", "title", "other_titles", "dynasty", "author", "lines", "pretraining"}
        assert r["title"] not in r["other_titles"] and r["lines"] and all(CJK.search(line) for line in r["lines"])
        quoted = "\n".join([r["title"], f"{r['dynasty']}·{r['author']}", *r["lines"]])
        assert quoted in text[r["pretraining"]], r["id"]
        if r["pretraining"] == "val":  # only the validation shard holds it: chat data must leave it out
            assert quoted not in text["train"], r["id"]
    assert {r["pretraining"] for r in poems} == {"train", "val"}


def _build_module():
    spec = importlib.util.spec_from_file_location("build_starter", ROOT / "dev" / "build_starter.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_build_helpers():
    b = _build_module()
    toks = "``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd ?/. ?/.".split()
    assert b.brown_detokenize(toks) == '"Only a handful", the jury said?'
    units = ["x" * 300] * 7
    chunks = b.pack(units, 1000, "\n")
    assert "\n".join(chunks) == "\n".join(units)
    assert all(len(c) <= 1000 for c in chunks)
    alloc = b.allocate({"a": 900, "b": 90, "c": 1}, 100)
    assert sum(alloc.values()) == 100 and min(alloc.values()) >= 1
