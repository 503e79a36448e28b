"""The plan of a run before it trains: `nanochat presets` (size, tokens, FLOPs, hours, dollars) and
`nanochat run --dry-run` (shape, horizon, batch per process, memory against the device, shards, wall clock)."""
import json

import pytest
import torch

from nanochat import gpus, plan, runner
from nanochat.memory import HEADROOM, estimate
from nanochat.stages.pretrain import model_config, optimizer_hparams
from nanochat.distributed import World

# cpu-tiny shrunk to seconds (the dry run times real steps of it)
SMALL = ["pretrain.depth=2", "pretrain.head_dim=32", "pretrain.max_seq_len=64", "pretrain.device_batch_size=4",
         "pretrain.total_batch_size=512", "pretrain.num_iterations=200"]  # steps fixed: independent of the preset


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def entries_of(preset, overrides=()):
    return runner.plan(runner.load_preset(preset)[1], list(overrides))


def test_presets_show_size_tokens_flops_hours_and_cost(cli):
    rows = {r["name"]: r for r in json.loads(cli("presets", "--json").stdout)}
    assert {"cpu-tiny", "speedrun-d20", "gpt2-d24", "d26", "run1000-d32"} <= set(rows)
    d24 = rows["gpt2-d24"]
    assert d24["depth"] == 24 and d24["params"] == 1_384_122_122  # the record's d24 (nanochat-facts §2.1)
    assert d24["tokens"] == 5568 * 2**20  # tokens:params 8 at the automatic 2^20 batch: the record's 5,568 steps
    assert d24["flops"] == pytest.approx(2.79e19, rel=0.01)
    est = d24["h100x8"]  # the record trains in fp8: planned against the fp8 peak at the fp8 planning MFU
    assert est["precision"] == "fp8" and est["mfu"] == gpus.PLANNING_MFU_FP8 and est["count"] == 8
    assert est["hours"] == pytest.approx(d24["flops"] / (8 * 2 * 989e12 * gpus.PLANNING_MFU_FP8) / 3600)
    assert est["dollars"] == pytest.approx(est["hours"] * gpus.NODE_8XH100_DOLLARS_PER_HOUR)
    assert rows["d26"]["depth"] == 26 and rows["d26"]["flops"] > d24["flops"]
    d20 = rows["speedrun-d20"]
    assert d20["depth"] == 20 and d20["h100x8"]["precision"] == "bf16"  # the seed's run stays in bf16
    assert d20["h100x8"]["hours"] == pytest.approx(d20["flops"] / (8 * 989e12 * gpus.PLANNING_MFU) / 3600)
    text = cli("presets").stdout
    assert "d24, 1.38B params, 5.84B tokens, 2.79e+19 FLOPs; pretraining on 8xH100 in fp8: ~1.88 h, ~$45" in text
    assert f"{100 * gpus.PLANNING_MFU:.0f}% MFU of 989 TFLOP/s" in text and "$24/h" in text
    assert f"{100 * gpus.PLANNING_MFU_FP8:.0f}% of its 1979 TFLOP/s fp8 peak" in text


def test_the_record_recipe_resolves_as_the_leaderboard_runs_it():
    entries = entries_of("gpt2-d24")
    pretrain = next(e for e in entries if e["name"] == "pretrain")
    settings = plan.stage_settings(pretrain)
    assert settings.dataset == "climbmix" and settings.window_pattern == "SSSL" and settings.device_batch_size == 16
    assert settings.fp8
    f = plan.pretrain_figures(settings, plan.vocab_size(entries), 8)
    assert f["vocab_size"] == 32768 and f["total_batch"] == 2**20 and f["steps"] == 5568
    assert f["grad_accum"] == 4 and f["tokens_per_param"] == pytest.approx(8, rel=1e-3)


def test_dry_run_prints_the_plan_measures_steps_and_writes_nothing(cli, nanochat_home):
    out = cli("run", "--preset", "cpu-tiny", "--dry-run", *sets(SMALL)).stdout
    assert "dry run: 1 process(es)" in out
    assert "model: depth 2, width 128, 4 heads, sequence 64, windows L, vocab 8,192" in out
    assert "horizon: 200 steps x 512 tokens = 102,400 tokens" in out
    assert "batch per process: device batch 4 x gradient accumulation 2 x 1 process(es)" in out
    assert "on this machine (cpu" in out and ": fits" in out
    assert "tok/s measured (3 eager steps" in out
    assert "wall clock on 8xH100: about" in out and "45% MFU" in out
    for stage in ("tokenizer", "tokenizer-eval", "base-eval", "midtrain", "sft", "rl", "chat-eval-rl"):
        assert f"- {stage} (" in out
    assert not (nanochat_home / "runs").exists() or not any((nanochat_home / "runs").iterdir())

    data = json.loads(cli("run", "--preset", "cpu-tiny", "--dry-run", "--json", "--nproc-per-node", "2",
                          *sets(SMALL)).stdout)
    pre = next(s for s in data["stages"] if s["name"] == "pretrain")
    assert pre["figures"]["grad_accum"] == 1 and pre["figures"]["processes"] == 2
    t = pre["throughput"]
    assert t["tok_per_s"] > 0 and t["hours"] == pytest.approx(102_400 / t["tok_per_s"] / 3600)
    assert pre["gpu_estimate"]["count"] == 2  # the named GPU, as many as the processes


def test_a_plan_that_does_not_fit_says_so_and_proposes_the_device_batch(cli):
    huge = ["pretrain.depth=2", "pretrain.head_dim=32", "pretrain.max_seq_len=256",
            "pretrain.device_batch_size=8192", f"pretrain.total_batch_size={8192 * 256}"]
    out = cli("run", "--preset", "cpu-tiny", "--dry-run", "--gpu", "T4", "--gpus", "1", *sets(huge)).stdout
    assert "on 1xT4 (90% usable): DOES NOT FIT" in out
    assert "-> use --set device_batch_size=" in out and "(same total batch, more gradient accumulation)" in out
    proposed = int(out.split("-> use --set device_batch_size=")[-1].split()[0])
    assert 8192 % proposed == 0 and proposed < 8192
    assert "not measured: one step does not fit" in out or "DOES NOT FIT" in out.split("wall clock here")[0]


def test_the_proposed_device_batch_is_the_largest_that_the_estimator_says_fits():
    entries = entries_of("cpu-tiny", ["pretrain.depth=2", "pretrain.head_dim=32", "pretrain.max_seq_len=64",
                                      "pretrain.device_batch_size=64", "pretrain.total_batch_size=8192"])
    settings = plan.stage_settings(next(e for e in entries if e["name"] == "pretrain"))
    from nanochat import plugins
    registry = plugins.registry()
    parts = plan.memory_parts(settings, 8192, torch.float32, registry)
    figures = plan.pretrain_figures(settings, 8192, 1)
    optimizer = registry.get("optimizer", "muon")
    cfg = model_config(settings, 8192)

    def real(b):  # the estimator itself at device batch b
        return estimate(cfg, torch.float32, b, 1, lambda m: optimizer.build(m, optimizer_hparams(settings, cfg.n_embd),
                                                                            World()))["total"]
    limit = (real(16) + real(32)) / 2 / HEADROOM  # 16 fits, 32 does not
    result = plan.fit(parts, figures, 1, limit)
    # 128 rows a step: the batches that divide them are powers of two, and of those 16 is the largest that fits
    assert result["fits"] is False and result["proposed_device_batch"] == 16
    assert plan.fit(parts, figures, 1, 10 * real(64))["fits"] is True


def test_missing_shards_are_counted_with_the_command(cli, tmp_path):
    preset = tmp_path / "hub.toml"
    preset.write_text('[defaults]\ndataset = "climbmix"\n[[stage]]\nname = "tokenizer"\nvocab_size = 1024\n'
                      'max_chars = 2_000_000_000\n[[stage]]\nname = "pretrain"\ndepth = 2\nhead_dim = 32\n'
                      'max_seq_len = 64\ndevice_batch_size = 4\ntotal_batch_size = 256\nnum_iterations = 4_000_000\n')
    out = cli("run", "--preset", str(preset), "--dry-run", "--no-measure").stdout
    tokens = 4_000_000 * 256
    assert "data: climbmix: 8 training shard(s) for the tokenizer's characters, 0 on disk: 8 MISSING; fetch them " \
           "with `nanochat data download climbmix -n 8`" in out
    need = json.loads(cli("run", "--preset", str(preset), "--dry-run", "--no-measure", "--json").stdout)
    data = next(s for s in need["stages"] if s["name"] == "pretrain")["data"]
    assert data["need"] > 8 and data["missing"] == data["need"] and data["have"] == 0
    assert f"{data['need']} MISSING; fetch them with `nanochat data download climbmix -n {data['need']}`" in out
    assert f"= {tokens:,} tokens" in out
    # the run itself says the same before it reads anything
    ran = cli("run", "--preset", str(preset), "--name", "nodata", check=False)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert ("too few shards for the tokenizer's 2,000,000,000 characters: you have 0, need 8: "
            "`nanochat data download climbmix -n 8`") in ran.stderr


def test_bad_dry_run_input_gets_a_clear_error(cli):
    bad = cli("run", "--preset", "cpu-tiny", "--dry-run", "--gpu", "Z80", "--no-measure", *sets(SMALL), check=False)
    assert bad.returncode == 2 and "unknown GPU 'Z80'; known: " in bad.stderr and "H100" in bad.stderr
    assert "Traceback" not in bad.stderr
    nothing = cli("run", "--dry-run", check=False)
    assert nothing.returncode == 2 and "give --preset" in nothing.stderr
