"""The report card, rendered from a real tiny run made here: every section, the summary table, wall clock and
cost, PNG plots beside report.md, `nanochat eval` results, damaged or missing files, and the real CLI."""
import json
import re
import shutil
import struct
import zlib

import pytest

from core_bundle import write_bundle
from nanochat import report, runner
from nanochat.runs import Run

PRESET = """
description = "every kind of stage, shrunk to seconds"
[defaults]
dataset = "starter"
device_batch_size = 4
total_batch_size = 256
compile = "off"
dtype = "fp32"
eval_tokens = 256
[[stage]]
name = "tokenizer"
vocab_size = 600
max_chars = 1500000
[[stage]]
name = "pretrain"
depth = 2
head_dim = 32
max_seq_len = 64
num_iterations = 4
eval_every = 2
sample_every = -1
[[stage]]
name = "core-eval"
max_per_task = 3
tasks = "copa, winograd"
[[stage]]
name = "midtrain"
tasks = "starter-chat[:100], starter-arithmetic[:50]"
val_tasks = "starter-chat@test[:10]"
num_iterations = 2
eval_every = 1
[[stage]]
name = "chat-eval-mid"
stage = "chat-eval"
source = "mid"
tasks = "starter-arithmetic[:2], spellingbee[:2]"
max_new_tokens = 8
[[stage]]
name = "sft"
tasks = "starter-chat[:100], starter-arithmetic[:50]"
val_tasks = "starter-chat@test[:10]"
num_iterations = 2
eval_every = 1
[[stage]]
name = "chat-eval-sft"
stage = "chat-eval"
source = "sft"
tasks = "starter-arithmetic[:2], spellingbee[:2]"
max_new_tokens = 8
[[stage]]
name = "rl"
task = "starter-arithmetic"
num_iterations = 2
examples_per_step = 2
num_samples = 2
device_batch_size = 2
max_new_tokens = 8
eval_examples = 2
eval_samples = 2
eval_every = 1
[[stage]]
name = "chat-eval-rl"
stage = "chat-eval"
source = "rl"
tasks = "starter-arithmetic[:2], spellingbee[:2]"
max_new_tokens = 8
[report]
hourly_cost = 24.0
"""
SECTIONS = ("## Environment", "## Codebase", "## Summary", "## Wall clock and cost", "## Plots",
            "## Tokenizer training", "## Base model training", "## CORE (base model)", "## Midtraining",
            "## Chat evaluation (mid)", "## Supervised finetuning", "## Chat evaluation (sft)",
            "## Reinforcement learning", "## Chat evaluation (rl)")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One real run of every kind of stage, made once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("report-run")
    bundle = write_bundle(root)
    preset = root / "every.toml"
    preset.write_text(PRESET)
    mp = pytest.MonkeyPatch()
    mp.setenv("NANOCHAT_HOME", str(root / "home"))
    mp.setenv("NANOCHAT_EVAL_BUNDLE", str(bundle))  # a small CORE bundle in the real layout, used in place
    try:
        from nanochat import plugins
        plugins.reset()
        run = runner.open_or_create(str(preset), "every", [])
        runner.run_pipeline(run, echo=False)
    finally:
        mp.undo()
    return run.dir


@pytest.fixture
def run(made, nanochat_home):
    shutil.copytree(made, nanochat_home / "runs" / "every")
    return Run.open("every")


def table_cells(text: str) -> dict:
    """The summary table as {row: {column: cell}}."""
    block = text.split("## Summary", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    header = rows[0][1:]
    return {r[0]: dict(zip(header, r[1:])) for r in rows[2:]}


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    # the IHDR chunk: its CRC must match, and the picture has a real size
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    assert data.endswith(b"IEND\xaeB`\x82")


def test_the_run_writes_a_complete_report_with_plots(run):
    text = (run.dir / "report.md").read_text()
    for section in SECTIONS:
        assert section in text, section
    assert "**missing:**" not in text and "could not be rendered" not in text

    # environment and codebase, captured when the run started (invocations.jsonl)
    inv = run.invocations()
    assert len(inv) == 1 and inv[0]["cpu"]["logical_cores"] >= 1 and inv[0]["ram_bytes"] > 2**28
    assert f"- command: `{inv[0]['command']}`" in text
    assert re.search(r"- CPU: .+, (\d+|\?) physical / \d+ logical cores; RAM [\d.]+ GiB", text)
    assert "- GPU: none" in text or re.search(r"- GPU: \d+ x ", text)
    assert f"torch {inv[0]['torch']}" in text
    git = inv[0]["git"]
    if git:  # a source checkout
        assert f"- git: {git['commit']} on {git['branch']}, {'**dirty**' if git['dirty'] else 'clean'}" in text
    size = inv[0]["codebase"]
    assert size["files"] > 50 and size["lines"] > 5000 and size["tokens"] == size["chars"] // 4
    assert f"- characters: {size['chars']:,}" in text and f"- files: {size['files']:,}" in text
    assert "matplotlib" in size["dependencies"] and "torch" in size["dependencies"]

    # the summary table: fixed rows and columns, "-" where a stage did not run a task
    cells = table_cells(text)
    assert list(cells)[:7] == ["CORE", "ARC-Easy", "ARC-Challenge", "MMLU", "GSM8K", "HumanEval", "SpellingBee"]
    assert list(cells)[-1] == "ChatCORE" and "starter-arithmetic" in cells
    assert list(cells["CORE"]) == ["BASE", "MID", "SFT", "RL"]
    assert cells["CORE"]["BASE"] == f"{run.status('core-eval')['summary']['CORE']:.4f}"
    assert cells["CORE"]["MID"] == "-" and cells["ARC-Easy"] == {c: "-" for c in ("BASE", "MID", "SFT", "RL")}
    for column, stage in (("MID", "chat-eval-mid"), ("SFT", "chat-eval-sft"), ("RL", "chat-eval-rl")):
        summary = run.status(stage)["summary"]
        assert cells["SpellingBee"][column] == f"{summary['spellingbee']:.4f}"
        assert cells["starter-arithmetic"][column] == f"{summary['starter-arithmetic']:.4f}"
        assert cells["ChatCORE"][column] == f"{summary['ChatCORE (these tasks)']:.4f}*"  # not the standard set
    assert cells["ChatCORE"]["BASE"] == "-"
    assert ("- \\* MID: ChatCORE (these tasks), over the tasks stage 'chat-eval-mid' ran (starter-arithmetic, "
            "spellingbee), not the standard set") in text

    # plots beside report.md, linked from it, valid PNG files
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    expected = {f"plot-{s}-loss.png" for s in ("pretrain", "midtrain", "sft", "rl")}
    expected |= {f"plot-{s}-throughput.png" for s in ("pretrain", "midtrain", "sft", "rl")} | {"plot-accuracy.png"}
    assert set(links) == expected
    for name in links:
        check_png(run.dir / name)


def test_wall_clock_and_cost(run):
    text = report.render(run)
    total = sum(report.stage_seconds(run.status(s["name"]), run.stage_dir(s["name"])) for s in run.stages())
    assert total > 0
    assert f"- total wall clock (stages): **{report.hms(total)}** ({total / 3600:.2f} h)" in text
    assert f"**${total / 3600 * 24.0:,.2f}**" in text and "$24.00/h" in text
    # another price given on the command line wins over the run's setting
    assert f"**${total / 3600 * 3.5:,.2f}**" in report.render(run, hourly_cost=3.5)
    for entry in run.stages():
        assert re.search(rf"\| {entry['name']} \| done \| 1 \| \dh\d\dm\d\ds \|", text), entry["name"]


def test_resumed_stages_add_their_attempts():
    status = {"state": "done", "started": "2026-01-01T10:00:00+00:00", "finished": "2026-01-01T10:30:00+00:00",
              "earlier_seconds": 3600.0}
    assert report.stage_seconds(status) == 5400.0
    assert report.hms(5400) == "1h30m00s"


def test_a_cut_metrics_line_is_named_and_the_rest_renders(run):
    path = run.stage_dir("pretrain") / "metrics.jsonl"
    lines = path.read_text().splitlines()
    middle = len(lines) // 2
    lines[middle] = lines[middle][: len(lines[middle]) // 2]
    path.write_text("\n".join(lines) + "\n")
    written = report.write(run)
    text = written.read_text()
    assert f"`pretrain/metrics.jsonl` line {middle + 1} is damaged (cut short or not JSON) and was skipped" in text
    for section in SECTIONS:
        assert section in text, section
    check_png(run.dir / "plot-pretrain-loss.png")


def test_a_missing_status_is_named_and_the_rest_renders(run):
    (run.stage_dir("chat-eval-sft") / "status.json").unlink()
    text = report.render(run)
    assert "`chat-eval-sft/status.json` is missing, so its state, times and headline numbers are unknown" in text
    assert "| chat-eval-sft | ? (status.json missing or damaged) | ? | ? |" in text
    cells = table_cells(text)
    # the accuracies still come from metrics.jsonl; ChatCORE was only in the status
    assert cells["SpellingBee"]["SFT"] != "-" and cells["ChatCORE"]["SFT"] == "-"
    assert "SFT: ChatCORE unknown because `chat-eval-sft/status.json` is missing or damaged" in text
    for section in SECTIONS:
        assert section in text, section


def test_a_damaged_run_json_is_named_and_the_rest_renders(run):
    path = run.dir / "run.json"
    path.write_text(path.read_text()[:200])
    written = report.write(run)
    text = written.read_text()
    assert "`run.json` is damaged" in text and "the preset, the stages and their settings are unknown" in text
    # the stages are found from their folders; their sections, times and plots still render
    for section in SECTIONS:
        if section != "## Summary":
            assert section in text, section
    assert "| pretrain | done | 1 |" in text
    check_png(run.dir / "plot-pretrain-loss.png")
    assert "which stage fed which column is unknown without `run.json`" in text


def test_missing_invocations_and_section_files(run):
    (run.dir / "invocations.jsonl").unlink()
    (run.stage_dir("midtrain") / "report.md").unlink()
    text = report.render(run)
    assert "`invocations.jsonl` (written when `nanochat run` starts or resumes the run) is missing" in text
    assert "the codebase size is recorded in `invocations.jsonl`" in text
    assert "## midtrain\n\n- **missing:** `midtrain/report.md`, the stage's own section" in text
    assert "## Supervised finetuning" in text and "## Summary" in text


def test_eval_results_get_a_section(run):
    assert "## Evaluations" not in report.render(run)  # no evals/ folder: no section
    good = run.dir / "evals" / "sft-step2-0001"
    good.mkdir(parents=True)
    (good / "result.json").write_text(json.dumps({
        "stage": "sft", "step": 2, "state": "done", "started": "2026-01-01T10:00:00+00:00",
        "finished": "2026-01-01T10:01:05+00:00", "scores": {"spellingbee[:2]": 0.5, "starter-arithmetic": 0.25}}))
    bad = run.dir / "evals" / "broken"
    bad.mkdir()
    (bad / "result.json").write_text("{not json")
    text = report.render(run)
    assert "## Evaluations (nanochat eval)" in text
    assert "| sft-step2-0001 | sft | 2 | done | 0h01m05s | spellingbee[:2] 0.5000, starter-arithmetic 0.2500 |" in text
    assert "| broken | ? | ? | ? | ? | **missing:** `evals/broken/result.json` is damaged" in text


def test_standard_chatcore_fills_its_row_without_a_star(run):
    status_path = run.stage_dir("chat-eval-sft") / "status.json"
    status = json.loads(status_path.read_text())
    status["summary"] = {"arc-easy": 0.5, "arc-challenge": 0.3, "mmlu": 0.31, "gsm8k": 0.04, "humaneval": 0.08,
                         "spellingbee": 0.9, "ChatCORE": 0.2345}
    status_path.write_text(json.dumps(status))
    cells = table_cells(report.render(run))
    assert cells["ChatCORE"]["SFT"] == "0.2345"
    assert (cells["ARC-Easy"]["SFT"], cells["MMLU"]["SFT"], cells["HumanEval"]["SFT"]) == ("0.5000", "0.3100", "0.0800")


def test_report_settings_from_preset_and_set(tmp_path):
    settings, rest = report.split_settings({"hourly_cost": 24}, ["report.hourly_cost=2.5", "depth=4"])
    assert settings == {"hourly_cost": 2.5} and rest == ["depth=4"]
    with pytest.raises(Exception, match="unknown report setting 'price'.*report.hourly_cost"):
        report.split_settings({}, ["report.price=3"])
    with pytest.raises(Exception, match=r"report.hourly_cost='cheap' is not a valid float"):
        report.split_settings({}, ["report.hourly_cost=cheap"])
    for preset in ("speedrun-d20", "gpt2-d24", "run1000-d32"):
        assert runner.load_preset(preset)[1]["report"]["hourly_cost"] == 24.0
    # kept in run.json, changed on resume like any --set
    preset = tmp_path / "count.toml"
    preset.write_text(COUNT + "[report]\nhourly_cost = 1.5\n")
    assert runner.open_or_create(str(preset), "priced", []).info["report"] == {"hourly_cost": 1.5}
    assert runner.open_or_create(None, "priced", ["report.hourly_cost=2"]).info["report"] == {"hourly_cost": 2.0}
    assert runner.open_or_create(None, "priced", ["steps=2"]).info["report"] == {"hourly_cost": 2.0}


def test_the_cli_renders_a_report(run, cli):
    (run.dir / "report.md").unlink()
    for png in run.dir.glob("plot-*.png"):
        png.unlink()
    result = cli("report", "--run", "every", "--hourly-cost", "10")
    assert "report of run 'every'" in result.stdout
    text = (run.dir / "report.md").read_text()
    assert "$10.00/h" in text
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        check_png(run.dir / name)
    printed = cli("report", "--no-plots", "--print").stdout  # the newest run by default
    assert "## Summary" in printed and "- drawn when the run finishes, or now with `nanochat report`" in printed
    missing = cli("report", "--run", "nope", check=False)
    assert missing.returncode == 2 and "no run named 'nope'" in missing.stderr and "Traceback" not in missing.stderr


COUNT = """
[[stage]]
name = "count"
stage = "counting_stage:CountingStage"
steps = 4
sleep = 0.6
"""


def test_an_interrupted_run_gets_a_report_and_resumes_add_up(tmp_path, monkeypatch):
    from nanochat import stages
    preset = tmp_path / "count.toml"
    preset.write_text(COUNT)
    run = runner.open_or_create(str(preset), "counted", ["report.hourly_cost=3.6"])
    original = stages.StageContext.metric

    def cut(self, record):
        original(self, record)
        if record["step"] == 2:
            raise KeyboardInterrupt("simulated Ctrl-C")
    monkeypatch.setattr(stages.StageContext, "metric", cut)
    with pytest.raises(KeyboardInterrupt):
        runner.run_pipeline(run, echo=False)
    text = (run.dir / "report.md").read_text()
    assert "| count | interrupted | 1 |" in text and "## Plots\n\n- drawn when the run finishes" in text
    monkeypatch.setattr(stages.StageContext, "metric", original)
    runner.run_pipeline(run, echo=False)

    status = run.status("count")
    # status times are whole seconds, so two sleeps of 0.6 s always span at least one second boundary
    assert status["attempts"] == 2 and status["earlier_seconds"] >= 1  # two sleeps of the first attempt
    seconds = report.stage_seconds(status)
    assert seconds >= 1 + 1  # and two more in the second
    text = (run.dir / "report.md").read_text()
    assert f"| count | done | 2 | {report.hms(seconds)} |" in text
    assert f"**${seconds / 3600 * 3.6:,.2f}**" in text
    assert text.count("| `") >= 2 and "Every start and resume of this run:" in text
    assert len(run.invocations()) == 2


def test_gpus_are_read_from_nvidia_smi(run, tmp_path, monkeypatch):
    """nvidia-smi's CSV as it prints it on an 8xH100 node (no GPU here: a script stands in for the tool)."""
    import os
    from nanochat import sysinfo
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n" + "echo 'NVIDIA H100 80GB HBM3, 81559'\n" * 8)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert sysinfo.gpus() == [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * 2**20}] * 8
    run.record_invocation(sysinfo.capture())
    text = report.render(run)
    assert "- GPU: 8 x NVIDIA H100 80GB HBM3 (79.6 GiB each, 637.2 GiB in all)" in text
    assert "Every start and resume of this run:" in text


def test_the_cli_without_runs_says_how_to_start_one(cli):
    result = cli("report", check=False)
    assert result.returncode == 2 and "no runs yet" in result.stderr and "nanochat run --preset cpu-tiny" in result.stderr
    negative = cli("report", "--hourly-cost", "-1", check=False)
    assert negative.returncode == 2 and "--hourly-cost -1.0 is negative" in negative.stderr


def test_the_standard_chatcore_set_includes_spellingbee():
    from nanochat.evaluation.chat import chatcore
    from nanochat.stages.chat_eval import STANDARD, ChatEvalStage
    assert STANDARD == ("arc-easy", "arc-challenge", "mmlu", "gsm8k", "humaneval", "spellingbee")
    assert [t.strip() for t in ChatEvalStage.Settings().tasks.split(",")] == list(STANDARD)
    # the centred mean over the six: a perfect SpellingBee lifts ChatCORE by 1/6
    results = {t: {"accuracy": 0.25, "baseline": 0.25} for t in STANDARD[:3]}
    results.update({t: {"accuracy": 0.0, "baseline": 0.0} for t in STANDARD[3:5]})
    results["spellingbee"] = {"accuracy": 1.0, "baseline": 0.0}
    assert chatcore(results) == pytest.approx(1 / 6)
