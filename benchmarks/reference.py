"""The reference nanochat (a checkout you fetch yourself, never committed here) in this process.

    ref = load_reference("path/to/nanochat-checkout", torch.bfloat16)
    model = ref.GPT(ref.GPTConfig(...)); engine = ref.Engine(model, tokenizer)

Both projects name their package `nanochat`, so the reference's modules are imported with the
checkout first on sys.path and then moved out of sys.modules, and ours put back: the reference's
modules keep their own globals, and every later `import nanochat` gets ours. Benchmarks use this to
time both in one process, the only fair comparison on a machine whose speed moves.
"""
import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def load_reference(path, dtype):
    """The reference's GPT, GPTConfig, Engine and KVCache, with its compute dtype set to `dtype`."""
    path = Path(path).resolve()
    if not (path / "nanochat" / "gpt.py").is_file() or not (path / "nanochat" / "engine.py").is_file():
        raise SystemExit(f"--reference {path}: not a nanochat checkout (no nanochat/gpt.py and nanochat/engine.py); "
                         f"pass the folder that holds the reference's nanochat/ package")
    ours = {name: mod for name, mod in sys.modules.items() if name == "nanochat" or name.startswith("nanochat.")}
    for name in ours:
        del sys.modules[name]
    previous_dtype = os.environ.get("NANOCHAT_DTYPE")
    os.environ["NANOCHAT_DTYPE"] = DTYPE_NAMES[dtype]  # the reference reads it once, at import
    sys.path.insert(0, str(path))
    try:
        gpt = importlib.import_module("nanochat.gpt")
        engine = importlib.import_module("nanochat.engine")
    finally:
        sys.path.remove(str(path))
        theirs = {n: m for n, m in sys.modules.items() if n == "nanochat" or n.startswith("nanochat.")}
        for name in [n for n in sys.modules if n == "nanochat" or n.startswith("nanochat.")]:
            del sys.modules[name]
        sys.modules.update(ours)
        if previous_dtype is None:
            del os.environ["NANOCHAT_DTYPE"]
        else:
            os.environ["NANOCHAT_DTYPE"] = previous_dtype
    return SimpleNamespace(GPT=gpt.GPT, GPTConfig=gpt.GPTConfig, Engine=engine.Engine, KVCache=engine.KVCache,
                           path=str(path), modules=theirs)


@contextlib.contextmanager
def reference_modules(ref):
    """The reference's `nanochat` modules in sys.modules for a while: torch.compile looks a traced function's
    module globals up by name there, and must find the reference's while it compiles or runs the reference."""
    ours = {n: m for n, m in sys.modules.items() if n == "nanochat" or n.startswith("nanochat.")}
    for name in ours:
        del sys.modules[name]
    sys.modules.update(ref.modules)
    try:
        yield
    finally:
        for name in ref.modules:
            sys.modules.pop(name, None)
        sys.modules.update(ours)
