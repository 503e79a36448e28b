"""How fast the CLI starts: `import nanochat`, `nanochat --help`, `nanochat plugins --json` (no torch), against
`import torch` in the same sitting for scale. Prints progress, then one JSON document as the last line.

    python benchmarks/startup.py [--runs 7]
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def timed(cmd: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "runs": runs}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cases = {
        "python_bare": [sys.executable, "-c", "pass"],
        "import_nanochat": [sys.executable, "-c", "import nanochat"],
        "nanochat_help": [str(BIN / "nanochat"), "--help"],
        "nanochat_plugins_json": [str(BIN / "nanochat"), "plugins", "--json"],
        "import_torch": [sys.executable, "-c", "import torch"],
    }
    results = {}
    for name, cmd in cases.items():
        results[name] = timed(cmd, args.runs)
        print(f"{name:24} median {results[name]['median_s']:.3f} s", flush=True)
    check = subprocess.run([sys.executable, "-c", "import sys, io, contextlib\nfrom nanochat.cli import main\n"
                            "with contextlib.redirect_stdout(io.StringIO()): main(['plugins', '--json'])\n"
                            "print('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    results["plugins_imports_torch"] = check.stdout.strip() == "True"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
