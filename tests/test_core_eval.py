"""CORE: getting the eval bundle, reading it, rendering prompts, scoring, centering, and the core-eval stage.

The bundle is a small one in the real layout (tests/core_bundle.py) served over HTTP on 127.0.0.1.
Scoring is checked with a test double whose logits we control (the scoring is what is under test);
a tiny randomly initialised GPT runs the whole benchmark and the stage end to end.
"""
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from core_bundle import TASKS, make_zip, write_bundle
from nanochat import runner
from nanochat.distributed import World
from nanochat.evaluation import bundle as eval_bundle
from nanochat.evaluation import core
from nanochat.runs import Run
from nanochat.stages import CommonSettings
from nanochat.tokenizer import Tokenizer


# -- a bundle server on 127.0.0.1 ------------------------------------------------------------------------
class BundleServer:
    """Serves bytes by path with Range support; can drop, corrupt or slow down answers on purpose."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.faults: list[str] = []  # consumed one per GET: "drop" (half the body, then hang up), "500"
        self.seconds_per_chunk = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                fault = server.faults.pop(0) if server.faults else None
                body = server.files.get(self.path)
                if body is None or fault == "500":
                    self.send_response(404 if body is None else 500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if fault == "drop":
                    part = part[:len(part) // 2]
                step = max(len(part) // 20, 1)
                for i in range(0, len(part), step):
                    self.wfile.write(part[i:i + step])
                    self.wfile.flush()
                    time.sleep(server.seconds_per_chunk)
                if fault == "drop":
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self) -> int:
        return len(self.requests)

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    bundle_dir = write_bundle(root)
    zip_path = make_zip(bundle_dir, root / "eval_bundle.zip")
    return bundle_dir, zip_path.read_bytes()


@pytest.fixture
def server(bundle_files):
    _, data = bundle_files
    with BundleServer({"/eval_bundle.zip": data, "/garbage.zip": b"this is not a zip file" * 100}) as srv:
        yield srv


def quiet(_msg):
    pass


# -- fetching the bundle ---------------------------------------------------------------------------------
def test_download_checksum_and_reuse(server, bundle_files, nanochat_home):
    url, data = server.url + "/eval_bundle.zip", bundle_files[1]
    sha = hashlib.sha256(data).hexdigest()
    folder = eval_bundle.fetch(url, sha256=sha, log=quiet)
    assert folder == nanochat_home / "cache" / "eval_bundle"
    assert (folder / "core.yaml").is_file() and (folder / "eval_data" / TASKS[0][1]).is_file()
    source = eval_bundle.source(folder)
    assert source["url"] == url and source["sha256"] == sha and source["bytes"] == len(data)
    assert not list(folder.parent.glob("*.part")) and not list(folder.parent.glob(".eval_bundle.*"))
    assert server.gets() == 1

    assert eval_bundle.fetch(url, sha256=sha, log=quiet) == folder  # reuse: no request at all
    assert eval_bundle.fetch(url, log=quiet) == folder
    assert server.gets() == 1

    # a file that changed since extraction is noticed, and the bundle is fetched again
    (folder / "eval_data" / TASKS[0][1]).write_text("{}\n")
    eval_bundle.fetch(url, sha256=sha, log=quiet)
    assert server.gets() == 2 and (folder / "eval_data" / TASKS[0][1]).stat().st_size > 10

    # another expected checksum: fetched again, rejected, and the good bundle is left in place
    with pytest.raises(eval_bundle.BundleError, match=f"has sha256 {sha} but {'0' * 64} was expected"):
        eval_bundle.fetch(url, sha256="0" * 64, log=quiet)
    assert server.gets() == 3 and eval_bundle.source(folder)["sha256"] == sha
    assert not (folder.parent / "eval_bundle.zip.part").exists()


def test_corrupt_zip_is_detected(server, nanochat_home):
    with pytest.raises(eval_bundle.BundleError, match="is not a valid zip"):
        eval_bundle.fetch(server.url + "/garbage.zip", log=quiet)
    cache = nanochat_home / "cache"
    assert not (cache / "eval_bundle").exists() and not (cache / "eval_bundle.zip.part").exists()
    assert not list(cache.glob(".eval_bundle.*"))  # no half-extracted folder left behind


def test_resumes_a_dropped_download_with_range(server, bundle_files):
    server.faults = ["drop", "500"]
    folder = eval_bundle.fetch(server.url + "/eval_bundle.zip", log=quiet, backoff=0.01)
    assert eval_bundle.source(folder)["sha256"] == hashlib.sha256(bundle_files[1]).hexdigest()
    assert [r for _, r in server.requests][0] is None
    half = len(bundle_files[1]) // 2
    assert server.requests[1][1] == server.requests[2][1] == f"bytes={half}-"  # resumed after the drop, and the 500


def test_errors_say_what_to_do(server, tmp_path, monkeypatch):
    with pytest.raises(eval_bundle.BundleError, match="HTTP 404.*NANOCHAT_EVAL_BUNDLE="):
        eval_bundle.fetch(server.url + "/nope.zip", log=quiet)
    closed = f"http://127.0.0.1:{_free_port()}/eval_bundle.zip"
    with pytest.raises(eval_bundle.BundleError, match=rf"could not download .* from {closed} .*3 tries.*"
                                                      rf"NANOCHAT_EVAL_BUNDLE=/path/to/eval_bundle"):
        eval_bundle.fetch(closed, log=quiet, retries=2, backoff=0.01)
    # NANOCHAT_OFFLINE (set for every test) refuses non-local URLs without trying them
    with pytest.raises(eval_bundle.BundleError, match="NANOCHAT_OFFLINE is set.*" + eval_bundle.OFFICIAL_URL):
        eval_bundle.fetch(log=quiet)
    monkeypatch.setenv("NANOCHAT_EVAL_BUNDLE", str(tmp_path))
    with pytest.raises(eval_bundle.BundleError, match="missing core.yaml, eval_meta_data.csv, eval_data"):
        eval_bundle.fetch(log=quiet)


def test_local_folder_and_file_url(bundle_files, tmp_path, monkeypatch):
    bundle_dir, data = bundle_files
    monkeypatch.setenv("NANOCHAT_EVAL_BUNDLE", str(bundle_dir))
    assert eval_bundle.fetch(log=quiet) == bundle_dir  # used in place, nothing copied
    monkeypatch.delenv("NANOCHAT_EVAL_BUNDLE")
    (tmp_path / "copy.zip").write_bytes(data)
    monkeypatch.setenv("NANOCHAT_EVAL_BUNDLE_URL", (tmp_path / "copy.zip").as_uri())
    folder = eval_bundle.fetch(log=quiet)
    assert (folder / "core.yaml").read_text() == (bundle_dir / "core.yaml").read_text()


def test_a_folder_placed_by_hand_in_the_cache_is_used_and_never_deleted(server, bundle_files, nanochat_home):
    import shutil
    target = nanochat_home / "cache" / "eval_bundle"
    shutil.copytree(bundle_files[0], target)
    assert eval_bundle.fetch(server.url + "/eval_bundle.zip", log=quiet) == target and server.gets() == 0
    with pytest.raises(eval_bundle.BundleError, match="placed by hand, so it cannot be checked against sha256"):
        eval_bundle.fetch(server.url + "/eval_bundle.zip", sha256="0" * 64, log=quiet)
    assert (target / "core.yaml").is_file() and server.gets() == 0


def test_two_processes_download_once(server, nanochat_home):
    server.seconds_per_chunk = 0.05  # about a second per download, so the two overlap
    code = ("import sys; from nanochat.evaluation.bundle import fetch; "
            f"print(fetch({server.url + '/eval_bundle.zip'!r}, log=lambda m: print(m, file=sys.stderr)))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "NANOCHAT_HOME": str(nanochat_home)}) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o[0].strip() for o in outs} == {str(nanochat_home / "cache" / "eval_bundle")}
    assert server.gets() == 1
    assert any("waiting for it to finish" in o[1] for o in outs)  # the second one really waited


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- reading the bundle ------------------------------------------------------------------------------------
DCLM_STYLE = """\
epoch: 1.25T
max_seq_len: 2048
tokenizer:
  # name: [Add name]
  pretrained_model_name_or_path:
  kwargs:
    model_max_length: 2048
load_path: # Add your (optional) checkpoint path here!

icl_tasks:
-
  label: jeopardy
  dataset_uri: local_data/world_knowledge/jeopardy_all.jsonl # ADD YOUR OWN DATASET URI
  num_fewshot: [10]
  icl_task_type: language_modeling
  continuation_delimiter: "\\nAnswer: " # this separates questions from answers
  has_categories: true
-
  label: mmlu_zeroshot
  num_fewshot: [0, 5]
  continuation_delimiter: 'Answer: '
-
  label: gsm8k_cot
  question_prelimiter: "Q: "
  early_stopping_criteria:
    - "\\n\\n"
    - "Q:"
-
  label: svamp_cot
  early_stopping_criteria:
  - "\\n\\n"
  - 'it''s # not a comment'
- label: compact
  ratio: 0.5
  missing: ~
  
"""


def test_yaml_reader_matches_pyyaml(bundle_files):
    expected_dclm = {
        "epoch": "1.25T", "max_seq_len": 2048,
        "tokenizer": {"pretrained_model_name_or_path": None, "kwargs": {"model_max_length": 2048}},
        "load_path": None,
        "icl_tasks": [
            {"label": "jeopardy", "dataset_uri": "local_data/world_knowledge/jeopardy_all.jsonl", "num_fewshot": [10],
             "icl_task_type": "language_modeling", "continuation_delimiter": "\nAnswer: ", "has_categories": True},
            {"label": "mmlu_zeroshot", "num_fewshot": [0, 5], "continuation_delimiter": "Answer: "},
            {"label": "gsm8k_cot", "question_prelimiter": "Q: ", "early_stopping_criteria": ["\n\n", "Q:"]},
            {"label": "svamp_cot", "early_stopping_criteria": ["\n\n", "it's # not a comment"]},
            {"label": "compact", "ratio": 0.5, "missing": None}]}
    assert core.parse_yaml(DCLM_STYLE) == expected_dclm
    text = (bundle_files[0] / "core.yaml").read_text()
    try:  # PyYAML reads core.yaml; the expected values above are what the DCLM bundle means
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        assert yaml.safe_load(DCLM_STYLE) == expected_dclm
        assert core.parse_yaml(text) == yaml.safe_load(text)
    assert core.parse_yaml(text)["icl_tasks"][1]["continuation_delimiter"] == "\nAnswer: "


def test_broken_core_yaml_names_the_file_and_line(bundle_files, tmp_path):
    # core.yaml is read with PyYAML; what it cannot read stops with the file and the line, no traceback
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_files[0], bundle)
    (bundle / "core.yaml").write_text('icl_tasks:\n- label: "open\n  num_fewshot: [0]\n', encoding="utf-8")
    with pytest.raises(core.CoreError, match=r"core.yaml: line \d+: .*fix the YAML"):
        core.load_tasks(bundle)


def test_load_tasks_and_items(bundle_files):
    bundle_dir = bundle_files[0]
    tasks = core.load_tasks(bundle_dir)
    assert [t.label for t in tasks] == [t[0] for t in TASKS]
    by = {t.label: t for t in tasks}
    assert by["jeopardy"] == core.CoreTask("jeopardy", "world_knowledge/jeopardy_all.jsonl", "language_modeling", 10,
                                       "\nAnswer: ", 0.0)
    assert by["copa"].delimiter == " " and by["copa"].baseline == 50.0 and by["winograd"].task_type == "schema"
    assert [t.label for t in core.load_tasks(bundle_dir, ["winograd", "copa"])] == ["copa", "winograd"]
    with pytest.raises(core.CoreError, match="unknown CORE task.*nope.*hellaswag_zeroshot, jeopardy"):
        core.load_tasks(bundle_dir, ["nope"])
    # shuffled with Random(1337); max_per_task keeps the first n of that order
    lines = [json.loads(x) for x in (bundle_dir / "eval_data" / by["copa"].dataset_uri).read_text().splitlines()]
    random.Random(1337).shuffle(lines)
    assert core.load_items(bundle_dir, by["copa"]) == lines
    assert core.load_items(bundle_dir, by["copa"], max_per_task=5) == lines[:5]


def test_fewshot_sampling_is_deterministic_and_excludes_the_item():
    items = [{"i": i} for i in range(30)]
    for idx in (0, 7, 29):
        shots = core.fewshot_examples(items, idx, 10)
        others = [i for i in range(30) if i != idx]
        assert shots == [items[i] for i in random.Random(1234 + idx).sample(others, 10)]
        assert items[idx] not in shots and len(shots) == 10
        assert core.fewshot_examples(items, idx, 10) == shots
    assert core.fewshot_examples(items, 0, 10) != core.fewshot_examples(items, 1, 10)
    assert core.fewshot_examples(items, 3, 0) == []
    # fewer other items than shots (a tiny max_per_task): all the others, in a fixed order
    assert core.fewshot_examples(items[:5], 0, 10) == [items[i] for i in random.Random(1234).sample([1, 2, 3, 4], 4)]


# -- prompts -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok(bundle_files):
    text = "\n".join(p.read_text() for p in sorted((bundle_files[0] / "eval_data").rglob("*.jsonl")))
    return Tokenizer.train([text, "The farmer fed the cat. The box was too big.\nAnswer: Paris"], 512)


def test_render_strings():
    mc = {"query": "Q: 2+2?", "choices": ["3", "4"], "gold": 1}
    shot = {"query": "Q: 1+1?", "choices": ["2", "5"], "gold": 0}
    assert core.prompts_mc(mc, "\nAnswer: ", [shot, shot]) == [
        "Q: 1+1?\nAnswer: 2\n\nQ: 1+1?\nAnswer: 2\n\nQ: 2+2?\nAnswer: 3",
        "Q: 1+1?\nAnswer: 2\n\nQ: 1+1?\nAnswer: 2\n\nQ: 2+2?\nAnswer: 4"]
    schema = {"context_options": ["Ann hid because Ann", "Ann hid because Bob"], "continuation": "was scared.",
              "gold": 0}
    shot = {"context_options": ["X", "Y"], "continuation": "ends.", "gold": 1}
    assert core.prompts_schema(schema, " ", [shot]) == ["Y ends.\n\nAnn hid because Ann was scared.",
                                                       "Y ends.\n\nAnn hid because Bob was scared."]
    lm = {"context": "  The sky is ", "continuation": "blue"}
    shot = {"context": "Grass is  ", "continuation": "green"}
    assert core.prompts_lm(lm, " ", [shot]) == ["Grass is green\n\nThe sky is", "Grass is green\n\nThe sky is blue"]
    assert core.prompts_lm(lm, "\nAnswer: ", []) == ["The sky is\nAnswer:", "The sky is\nAnswer: blue"]


def test_token_spans_per_type(tok):
    bos = tok.bos_id
    # multiple choice: each row is BOS + its prompt; the span starts where the choices differ
    ex = core.encode_example(tok, "multiple_choice", ["It was red.", "It was blue."], 1, None)
    assert ex.rows == [[bos] + tok.encode("It was red."), [bos] + tok.encode("It was blue.")]
    assert [tok.decode(r[s:e]) for r, (s, e) in zip(ex.rows, ex.spans)] == [" red.", " blue."]
    assert tok.decode(ex.rows[0][1:ex.spans[0][0]]) == "It was" and ex.gold == 1
    # schema: the span is the shared continuation at the end
    ex = core.encode_example(tok, "schema", ["The cat could not fit because the cat was too big.",
                                             "The cat could not fit because the box was too big."], 0, None)
    assert [tok.decode(r[s:e]) for r, (s, e) in zip(ex.rows, ex.spans)] == [" was too big."] * 2
    # language modeling: one row, the prompt with the continuation; the span is the continuation
    for delimiter, shown in ((" ", " Paris"), ("\nAnswer: ", " Paris")):
        prompts = core.prompts_lm({"context": "The capital of France is ", "continuation": "Paris"}, delimiter, [])
        ex = core.encode_example(tok, "language_modeling", prompts, None, None)
        (row,), ((s, e),) = ex.rows, ex.spans
        assert row == [bos] + tok.encode(prompts[1]) and row[:s] == [bos] + tok.encode(prompts[0])
        assert tok.decode(row[s:e]) == shown and ex.gold is None
    # left-cropping keeps the end (the continuation) and shifts the spans
    full = core.encode_example(tok, "multiple_choice", ["It was red.", "It was blue."], 1, None)
    cut = core.encode_example(tok, "multiple_choice", ["It was red.", "It was blue."], 1, 4)
    assert all(len(r) <= 4 for r in cut.rows)
    assert [r[s:e] for r, (s, e) in zip(cut.rows, cut.spans)] == [r[s:e] for r, (s, e) in zip(full.rows, full.spans)]


# -- scoring ---------------------------------------------------------------------------------------------------
class Memorizer(torch.nn.Module):
    """A test double for a GPT: after any prefix of the sequences it memorised it puts logit 20 on the
    token that followed; everything else gets 0. So those sequences are the most likely ones."""

    def __init__(self, sequences, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.next = {tuple(seq[:t]): seq[t] for seq in sequences for t in range(1, len(seq))}
        self.calls = []  # shapes of the inputs

    def forward(self, ids):
        self.calls.append(tuple(ids.shape))
        logits = torch.zeros(*ids.shape, self.vocab_size)
        for b, row in enumerate(ids.tolist()):
            for t in range(len(row)):
                token = self.next.get(tuple(row[:t + 1]))
                if token is not None:
                    logits[b, t, token] = 20.0
        return logits.to(torch.bfloat16)  # bf16 logits: the scorer upcasts them


def answer_rows(tok, bundle_dir, wrong: bool):
    """Token rows of every item's gold prompt (or, with wrong=True, of a wrong answer) as CORE renders them."""
    rows = []
    for task in core.load_tasks(bundle_dir):
        items = core.load_items(bundle_dir, task)
        for idx, item in enumerate(items):
            shots = core.fewshot_examples(items, idx, task.num_fewshot)
            prompts = core.PROMPTS[task.task_type](item, task.delimiter, shots)
            if task.task_type == "language_modeling":
                row = [tok.bos_id] + tok.encode(prompts[1])
                rows.append(row[:-1] + [(row[-1] + 1) % tok.vocab_size] if wrong else row)
            else:
                choice = (item["gold"] + 1) % len(prompts) if wrong else item["gold"]
                rows.append([tok.bos_id] + tok.encode(prompts[choice]))
    return rows


def test_scoring_picks_what_the_model_finds_likely(bundle_files, tok):
    bundle_dir = bundle_files[0]
    right = Memorizer(answer_rows(tok, bundle_dir, wrong=False), tok.vocab_size)
    result = core.evaluate_core(right, tok, bundle_dir, device="cpu", max_seq_len=0)
    assert {label: r["accuracy"] for label, r in result["tasks"].items()} == {t[0]: 1.0 for t in TASKS}
    assert result["CORE"] == pytest.approx(1.0) and result["all_tasks"]
    assert len(right.calls) < 6 * 24  # several items share a forward

    wrong = Memorizer(answer_rows(tok, bundle_dir, wrong=True), tok.vocab_size)
    result = core.evaluate_core(wrong, tok, bundle_dir, device="cpu", max_seq_len=0)
    assert {label: r["accuracy"] for label, r in result["tasks"].items()} == {t[0]: 0.0 for t in TASKS}
    # LM needs every continuation token: getting all but the last one right is still wrong
    jeopardy = result["tasks"]["jeopardy"]
    assert jeopardy["centered"] == 0.0 and result["tasks"]["copa"]["centered"] == pytest.approx(-1.0)


def test_ties_and_empty_spans():
    class Flat(torch.nn.Module):
        def forward(self, ids):
            return torch.zeros(*ids.shape, 50)
    # equal losses: the first choice wins (as in the reference); an empty span never wins
    same = ([[1, 2, 3], [1, 2, 4]], [(2, 3), (2, 3)])
    exs = [core.Example(*same, 0), core.Example(*same, 1), core.Example([[1, 2], [1, 2, 3]], [(2, 2), (2, 3)], 1)]
    assert core.score_batch(Flat(), exs, 0, "cpu") == [True, False, True]


def test_items_are_strided_over_ranks(bundle_files, tok):
    bundle_dir = bundle_files[0]
    model = Memorizer(answer_rows(tok, bundle_dir, wrong=False)[:10], tok.vocab_size)  # knows 10 of 24 items

    class OneRank(World):
        def all_reduce_sum(self, values):  # another rank's share is evaluated by the next call
            return list(values)
    task = core.load_tasks(bundle_dir, ["hellaswag_zeroshot"])[0]
    items = core.load_items(bundle_dir, task)
    whole = core.evaluate_task(model, tok, task, items, device="cpu")
    parts = [core.evaluate_task(model, tok, task, items, device="cpu", world=OneRank(rank=r, size=3)) for r in range(3)]
    assert [n for _, n in parts] == [8, 8, 8]
    assert sum(c for c, _ in parts) == whole[0] and 0 < whole[0] < whole[1] == 24


def test_centering():
    assert core.centered(0.25, 25.0) == 0.0
    assert core.centered(1.0, 25.0) == 1.0
    assert core.centered(0.5, 50.0) == 0.0 and core.centered(0.75, 50.0) == 0.5
    assert core.centered(0.3, 0.0) == 0.3
    assert core.centered(0.1, 25.0) == pytest.approx(-0.2)
    rows = [{"task": "a", "centered": 0.5}, {"task": "b", "centered": 0.1}]
    summary = core.summarize(rows, ["b", "a", "c"], 100)
    assert summary["CORE"] == pytest.approx(0.3) and list(summary["tasks"]) == ["b", "a"]
    assert summary["tasks_run"] == 2 and summary["tasks_in_bundle"] == 3 and not summary["all_tasks"]


# -- a real (tiny, random) GPT ------------------------------------------------------------------------------
def tiny_gpt(vocab_size, seed=0):
    from nanochat.model import GPT, GPTConfig
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = GPT(GPTConfig.from_depth(2, vocab_size=vocab_size, sequence_len=256, head_dim=64))
    model.to_empty(device="cpu")
    model.init_weights()
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)  # distinct logits, so scores are not near-ties
    return model


def test_batching_changes_nothing(bundle_files, tok):
    # one item per forward vs many: the same losses (right-padding is invisible to causal attention)
    model = tiny_gpt(tok.vocab_size)
    task = core.load_tasks(bundle_files[0], ["arc_easy"])[0]
    items = core.load_items(bundle_files[0], task, 4)
    examples = [core.prepare(tok, task, items, i, 256) for i in range(4)]
    rows = [r for ex in examples for r in ex.rows]
    spans = [s for ex in examples for s in ex.spans]
    together = core.score_rows(model, rows, spans, tok.bos_id, "cpu")[0]
    alone = [core.score_rows(model, [r], [s], tok.bos_id, "cpu")[0][0] for r, s in zip(rows, spans)]
    assert together == pytest.approx(alone, rel=1e-4)


# -- the core-eval stage ----------------------------------------------------------------------------------------
class TinyBaseModel:
    """Provides what core-eval needs: a tokenizer and a base-model checkpoint (a random tiny GPT)."""

    name = "tiny-base"
    needs = ()
    produces = ("tokenizer", "base-model")

    @dataclass
    class Settings(CommonSettings):
        pass

    def run(self, ctx):
        from nanochat import checkpoint
        data = Path(os.environ["CORE_TEST_BUNDLE"]) / "eval_data"
        text = "\n".join(p.read_text() for p in sorted(data.rglob("*.jsonl")))
        tok = Tokenizer.train([text], 512)
        tok.save(ctx.checkpoint_dir / "tokenizer")
        model = tiny_gpt(tok.vocab_size)
        checkpoint.save(ctx.checkpoint_dir / "model", 1, world=ctx.world, model=model,
                        meta={"model_config": model.config.to_dict()})
        ctx.provide("tokenizer", ctx.checkpoint_dir / "tokenizer")
        ctx.provide("base-model", ctx.checkpoint_dir / "model")


PRESET = """
[[stage]]
name = "base"
stage = "test_core_eval:TinyBaseModel"
[[stage]]
name = "core-eval"
stage = "nanochat.stages.core_eval:CoreEvalStage"
bundle_url = "{url}"
max_per_task = 8
device = "cpu"
"""


def test_stage_end_to_end_and_resume(server, bundle_files, tmp_path, monkeypatch, nanochat_home):
    """The whole benchmark on a tiny real GPT, through the runner: finite numbers for every task."""
    monkeypatch.setenv("CORE_TEST_BUNDLE", str(bundle_files[0]))
    monkeypatch.setenv("NANOCHAT_DTYPE", "fp32")
    preset = tmp_path / "core.toml"
    preset.write_text(PRESET.format(url=server.url + "/eval_bundle.zip"))
    run = runner.open_or_create(str(preset), "core", [])
    runner.run_pipeline(run, echo=False)
    status = run.status("core-eval")
    assert status["state"] == "done" and math.isfinite(status["summary"]["CORE"])
    task_rows = [m for m in run.metrics("core-eval") if "task" in m]
    assert [m["task"] for m in task_rows] == [t[0] for t in TASKS]
    for m in task_rows:
        assert m["examples"] == 8 and 0.0 <= m["accuracy"] <= 1.0 and math.isfinite(m["centered"])
    assert [m["shots"] for m in task_rows] == [0, 7, 7, 0, 0, 0]  # 10-shot tasks with 8 items: 7 others
    csv_lines = (run.stage_dir("core-eval") / "core.csv").read_text().splitlines()
    assert csv_lines[0].startswith("task,type,shots,examples,accuracy") and len(csv_lines) == len(TASKS) + 2
    assert csv_lines[-1].startswith("CORE,")
    report = (run.dir / "report.md").read_text()
    assert "## CORE (base model)" in report and "| winograd | schema | 0 | 8 |" in report
    assert "partial: max_per_task=8" in report

    # interrupted after three tasks: the rerun evaluates only the other three
    metrics = run.stage_dir("core-eval") / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:3]))
    run.set_status("core-eval", state="interrupted")
    runner.run_pipeline(run, echo=False)
    assert "resuming: 3 task(s) already evaluated, 3 to go" in (run.stage_dir("core-eval") / "log.txt").read_text()
    task_rows_again = [m for m in run.metrics("core-eval") if "task" in m]
    assert [m["task"] for m in task_rows_again] == [t[0] for t in TASKS]  # each task once
    assert run.status("core-eval")["summary"]["CORE"] == pytest.approx(status["summary"]["CORE"])
    assert server.gets() == 1  # the bundle was downloaded once for both attempts

    # the same interruption after the whole NANOCHAT_HOME moved: the evaluated tasks are still kept (the resume
    # id names the weights by their checksum, not by their path)
    moved_home = tmp_path / "moved-home"
    shutil.move(nanochat_home, moved_home)
    monkeypatch.setenv("NANOCHAT_HOME", str(moved_home))
    moved = Run.open("core")
    metrics = moved.stage_dir("core-eval") / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:3]))
    moved.set_status("core-eval", state="interrupted")
    runner.run_pipeline(moved, echo=False)
    log = (moved.stage_dir("core-eval") / "log.txt").read_text()
    assert log.count("resuming: 3 task(s) already evaluated, 3 to go") == 2
    assert [m["task"] for m in moved.metrics("core-eval") if "task" in m] == [t[0] for t in TASKS]
    assert moved.status("core-eval")["summary"]["CORE"] == pytest.approx(status["summary"]["CORE"])
