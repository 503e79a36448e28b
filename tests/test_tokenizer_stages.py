"""The tokenizer stages on the starter corpus, and `nanochat tokenizer train | info | encode` on your own files."""
import json

from nanochat import runner
from nanochat.tokenizer import Tokenizer


def test_tokenizer_stages_train_save_and_evaluate(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-tiktoken-cache"))
    preset = tmp_path / "tok.toml"
    preset.write_text('[[stage]]\nname = "tokenizer"\nvocab_size = 1024\nmax_chars = 2000000\n'
                      '[[stage]]\nname = "tokenizer-eval"\nmax_docs = 50\n')
    run = runner.run_pipeline(runner.open_or_create(str(preset), "tok", []), echo=False)
    tok = Tokenizer.load(run.checkpoint_dir("tokenizer"))
    assert tok.vocab_size == 1024 and tok.bos_id == 1015
    assert run.status("tokenizer")["artifacts"] == {"tokenizer": "checkpoints/tokenizer"}
    evals = {m["text"]: m for m in run.metrics("tokenizer-eval")}
    assert {"starter-val-en", "starter-val-zh", "code", "modern-zh"} <= set(evals)
    assert evals["starter-val-en"]["ours_bytes_per_token"] > 2.0  # BPE merged real words
    report = (run.dir / "report.md").read_text()
    assert "## Tokenizer evaluation" in report
    assert "comparison with gpt2 / cl100k_base skipped: offline (tiktoken could not fetch its file)" in report
    # A rerun of a finished stage reuses the tokenizer on disk.
    run.set_status("tokenizer", state="interrupted")
    runner.run_pipeline(run, echo=False)
    assert "keeping it" in (run.stage_dir("tokenizer") / "log.txt").read_text()


def test_tokenizer_command_on_your_own_files(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("the quick brown fox jumps over the lazy dog " * 20)
    (src / "b.jsonl").write_text(json.dumps({"text": "pack my box with five dozen liquor jugs"}) + "\n")
    (src / "c.txt").write_bytes(b"broken \xff\xfe bytes")
    out = tmp_path / "tok"
    result = cli("tokenizer", "train", "--input", str(src), "--vocab-size", "300", "--output", str(out))
    assert "2 invalid UTF-8 byte sequence(s) were replaced" in result.stdout
    info = json.loads(cli("tokenizer", "info", str(out), "--json").stdout)
    assert info["vocab_size"] == 300 and info["special_tokens"]["<|bos|>"] == 291
    encoded = cli("tokenizer", "encode", str(out), "the quick fox").stdout
    assert "tokens for 13 bytes" in encoded


def test_tokenizer_command_errors_name_the_problem(tmp_path, cli):
    missing = cli("tokenizer", "info", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "tokenizer.json is missing" in missing.stderr
    (tmp_path / "a.txt").write_text("hello")
    small = cli("tokenizer", "train", "--input", str(tmp_path / "a.txt"), "--vocab-size", "200",
                "--output", str(tmp_path / "o"), check=False)
    assert small.returncode == 2 and "200" in small.stderr
    empty = cli("tokenizer", "train", "--input", str(tmp_path / "nothing"), "--vocab-size", "300",
                "--output", str(tmp_path / "o"), check=False)
    assert empty.returncode == 2 and "does not exist" in empty.stderr


def test_tokenizer_train_without_output_saves_under_the_data_dir(tmp_path, cli, nanochat_home):
    texts = tmp_path / "mytexts"
    texts.mkdir()
    (texts / "a.txt").write_text("the quick brown fox jumps over the lazy dog " * 20)
    result = cli("tokenizer", "train", "--input", str(texts), "--vocab-size", "300")
    saved = nanochat_home / "tokenizers" / "mytexts-300"
    assert (saved / "tokenizer.json").exists() and f"saved to {saved}" in result.stdout
    cli("tokenizer", "train", "--input", str(texts), "--vocab-size", "300", "--name", "fox")
    info = json.loads(cli("tokenizer", "info", "fox", "--json").stdout)  # found by its name
    assert info["path"].endswith("tokenizers/fox") and info["special_tokens"]["<|bos|>"]
    bad = cli("tokenizer", "train", "--input", str(texts), "--vocab-size", "300", "--name", "../x", check=False)
    assert bad.returncode == 2 and "--name '../x' must be a plain folder name" in bad.stderr
