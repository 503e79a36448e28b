"""The `nanochat` console script, run as a user would."""
import json


def test_help_lists_the_commands(cli):
    out = cli("--help").stdout
    for command in ("run", "runs", "plugins", "env", "paths", "presets"):
        assert command in out


def test_plugins_json_has_the_documented_keys(cli):
    rows = json.loads(cli("plugins", "--json").stdout)
    assert rows and all(set(r) == {"name", "kind", "version", "distribution", "status", "error"} for r in rows)
    assert {"name": "cpu", "kind": "backend", "distribution": "nanochat", "status": "ok", "error": None}.items() <= \
        next(r for r in rows if r["name"] == "cpu").items()


def test_env_reports_the_cpu_backend(cli):
    info = json.loads(cli("env", "--json", "--device", "cpu").stdout)
    assert info["backend"] == "cpu" and info["dist_backend"] == "gloo"
    assert info["compute_dtype"] in ("float32", "bfloat16") and info["peak_flops"] > 0 and info["threads"] >= 1
    assert "torch" in info and "compile_is_wise" in info


def test_unknown_device_lists_valid_names(cli):
    result = cli("env", "--device", "tpu", check=False)
    assert result.returncode == 2
    assert "unknown backend 'tpu'; valid backends: cpu, cuda, mps" in result.stderr


def test_paths_honour_nanochat_home(cli, nanochat_home):
    found = json.loads(cli("paths", "--json").stdout)
    assert found["runs"] == str(nanochat_home / "runs") and found["datasets"].startswith(str(nanochat_home))


def test_runs_lists_runs_with_stage_states(cli, tmp_path):
    assert "no runs yet" in cli("runs").stdout
    preset = tmp_path / "p.toml"
    preset.write_text('[[stage]]\nname = "count"\nstage = "counting_stage:CountingStage"\nsteps = 1\n')
    cli("run", "--preset", str(preset), "--name", "demo")
    rows = json.loads(cli("runs", "--json").stdout)
    assert rows[0]["name"] == "demo" and rows[0]["stages"] == {"count": "done"}


def test_unknown_preset_is_a_clear_error(cli):
    result = cli("run", "--preset", "gpt-5", check=False)
    assert result.returncode == 2 and "unknown preset 'gpt-5'; valid presets: " in result.stderr
