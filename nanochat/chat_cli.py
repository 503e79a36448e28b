"""`nanochat chat`: talk to a model you trained, in the terminal.

    nanochat chat                            # the newest finished chat model of any run (rl > sft > mid)
    nanochat chat --run myrun --stage sft    # a particular one
    nanochat chat --stage base               # a base model: it continues text instead of chatting
    nanochat chat --checkpoint PATH          # a checkpoint folder (its run's tokenizer, or --tokenizer)
    nanochat chat -p "Why is the sky blue?"  # one reply, then exit
    printf 'hi\\n/clear\\nhello\\n' | nanochat chat   # piped lines are turns and commands too

What was loaded, notes and command feedback go to stderr, so stdout holds only the replies.
In the REPL, /help lists the commands; replies stream as they are generated and Ctrl-C stops one.
"""
import sys
from pathlib import Path

from nanochat.errors import NanochatError
from nanochat.i18n import t

CHAT_STAGES = ("rl", "sft", "mid")  # most trained first: the default pick within a run
TRAIN_HINT = "train one with: nanochat run --preset cpu-tiny (minutes on a laptop CPU; its sft stage makes a chat model)"
COMMANDS = ("/clear", "/system", "/temperature", "/top-k", "/help", "/quit")


class ChatError(NanochatError):
    """Nothing to chat with, or a checkpoint that cannot be used: the message says what to do."""


def add_arguments(parser) -> None:
    parser.add_argument("--run", help="the run whose model to load (default: the newest run with a finished one)")
    parser.add_argument("--stage", choices=["sft", "mid", "rl", "base"],
                        help="which model of the run (default: rl, else sft, else mid); base completes text")
    parser.add_argument("--checkpoint", metavar="PATH", help="a checkpoint folder to load instead of a run's model")
    parser.add_argument("--tokenizer", metavar="DIR", help="the tokenizer for --checkpoint (default: its run's)")
    parser.add_argument("-p", "--prompt", help="ask one question, print the reply and exit")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = always the most likely token")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (0 = all)")
    parser.add_argument("--max-tokens", type=int, default=512, help="the longest reply, in tokens")
    parser.add_argument("--seed", type=int, default=None, help="make sampling repeatable")
    parser.add_argument("--device", default="auto", help="device backend (cpu, cuda, mps) or auto")


# -- finding what to chat with ------------------------------------------------------------------------

def find_model(run_name=None, stage=None):
    """(run, stage entry name, artifact, checkpoint path) of the model to load, or a ChatError."""
    from nanochat import paths
    from nanochat.runs import Run, RunError, list_runs
    kinds = (stage,) if stage else CHAT_STAGES
    runs = [Run.open(run_name)] if run_name else list_runs()
    found = []
    for run in runs:
        try:
            choice = _best_in_run(run, kinds)
        except RunError as exc:  # one damaged run must not hide the others
            if run_name:
                raise
            print(f"nanochat: skipping run {run.name!r}: {exc}", file=sys.stderr)
            continue
        if choice:
            found.append(choice)
    if found:
        return max(found, key=lambda c: c[4])[:4]  # the most recently finished
    what = f"no finished {stage} model" if stage else "no finished chat model (rl, sft or mid)"
    where = f"in run {run_name!r}" if run_name else f"in any run under {paths.runs_dir()}"
    hint = ("pretrain one with: nanochat run --preset cpu-tiny" if stage == "base" else TRAIN_HINT)
    raise ChatError(f"{what} {where}; {hint}. Or pass --checkpoint PATH.")


def _best_in_run(run, kinds):
    """The first of `kinds` ("sft", ...) whose "<kind>-model" artifact a finished stage of `run` provides."""
    for kind in kinds:
        for entry in run.stages():
            status = run.status(entry["name"])
            where = status.get("artifacts", {}).get(f"{kind}-model")
            if status["state"] == "done" and where is not None:
                finished = (run.stage_dir(entry["name"]) / "status.json").stat().st_mtime
                return run, entry["name"], f"{kind}-model", run.dir / where, finished
    return None


def _run_of(path: Path):
    """The run a checkpoint folder lives in (runs/<name>/checkpoints/<stage>/...), or None."""
    from nanochat.runs import Run
    path = path.resolve()
    for parent in path.parents:
        if (parent / "run.json").exists():
            return Run(parent) if (parent / "checkpoints") in path.parents else None
    return None


def load(args):
    """(engine, mode "chat" or "base", a line saying what was loaded)."""
    from nanochat.backend import select
    from nanochat.checkpoint import load_model
    from nanochat.engine import Engine
    from nanochat.stages import find_artifact
    from nanochat.tokenizer import Tokenizer

    if args.checkpoint:
        path = Path(args.checkpoint)
        if not path.exists():
            raise ChatError(f"--checkpoint {path} does not exist")
        run = _run_of(path)
        stage_name = path.resolve().relative_to(run.dir.resolve() / "checkpoints").parts[0] if run else None
        mode = "base" if args.stage == "base" or (stage_name and _provides(run, stage_name) == "base-model") else "chat"
    else:
        run, stage_name, artifact, path = find_model(args.run, args.stage)
        mode = "base" if artifact == "base-model" else "chat"

    tok_dir = args.tokenizer or (find_artifact(run, "tokenizer") if run else None)
    if tok_dir is None:
        raise ChatError(f"no tokenizer for {path}: it is not inside a run with a finished tokenizer stage; "
                        "pass --tokenizer DIR")
    tokenizer = Tokenizer.load(tok_dir)

    backend = select(args.device)
    device, dtype = backend.device(0), backend.compute_dtype()
    try:
        model, ckpt = load_model(path, device, dtype)
    except NanochatError as exc:
        raise ChatError(f"cannot load the checkpoint {path}: {exc}") from None
    except Exception as exc:  # a truncated or corrupted file shows up as any of torch's / pickle's errors
        redo = f"nanochat run --name {run.name} --stage {stage_name}" if run and stage_name else "the stage that wrote it"
        raise ChatError(f"the checkpoint {path} is damaged ({type(exc).__name__}: {str(exc)[:200]}); "
                        f"re-create it by re-running {redo}") from None
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ChatError(f"the model at {path} has a vocabulary of {model.config.vocab_size:,} tokens but the tokenizer "
                        f"at {tok_dir} has {tokenizer.vocab_size:,}; pass the tokenizer it was trained with (--tokenizer)")
    what = (f"run {run.name!r}, stage {stage_name!r}" if run else "checkpoint") + \
           f", step {ckpt.step} ({ckpt.path}) on {device}, {str(dtype).replace('torch.', '')}"
    return Engine(model, tokenizer), mode, f"loaded {'base' if mode == 'base' else 'chat'} model: {what}"


def _provides(run, stage_name):
    artifacts = run.status(stage_name).get("artifacts", {})
    return next((a for a in artifacts if a.endswith("-model")), None)


# -- the conversation -----------------------------------------------------------------------------------

class Session:
    """The REPL's state: the conversation, a system prompt and the sampling settings."""

    def __init__(self, engine, mode, args, out):
        self.engine, self.mode, self.out = engine, mode, out
        self.messages, self.system = [], None
        self.temperature, self.top_k, self.max_tokens, self.seed = args.temperature, args.top_k, args.max_tokens, args.seed
        self.check_settings()

    def check_settings(self):
        if not self.temperature >= 0:
            raise ChatError(f"--temperature {self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise ChatError(f"--top-k {self.top_k} must be >= 0 (0 = no limit)")
        if self.max_tokens < 1:
            raise ChatError(f"--max-tokens {self.max_tokens} must be at least 1")

    def say(self, text):
        """Everything but the replies goes to stderr, so stdout can be piped into a file."""
        print(text, file=sys.stderr, flush=True)

    def command(self, line) -> bool:
        """Handle a /command; False means quit."""
        name, _, arg = line.partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("/quit", "/exit"):
            return False
        if name == "/help":
            self.say(t("chat.help"))
        elif name == "/clear":
            self.messages = []
            self.say(t("chat.cleared"))
        elif name == "/system":
            if self.mode == "base":
                self.say(t("chat.base_no_system"))
            else:
                self.system = arg or None
                self.say(t("chat.system_set", text=arg) if arg else t("chat.system_cleared"))
        elif name == "/temperature":
            value = _number(arg, float)
            if value is None or value < 0:
                self.say(t("chat.bad_value", command=name, value=arg, expected=">= 0"))
            else:
                self.temperature = value
                self.say(t("chat.set", name="temperature", value=value))
        elif name == "/top-k":
            value = _number(arg, int)
            if value is None or value < 0:
                self.say(t("chat.bad_value", command=name, value=arg, expected="an integer >= 0 (0 = no limit)"))
            else:
                self.top_k = value
                self.say(t("chat.set", name="top-k", value=value))
        else:
            self.say(t("chat.unknown_command", command=name, commands=" ".join(COMMANDS)))
        return True

    def reply(self, text, prefix=""):
        """Stream the model's answer to `text` to the output and remember the exchange."""
        from nanochat.engine import ContextFull
        sampling = dict(temperature=self.temperature, top_k=self.top_k or None, seed=self.seed)
        if self.mode == "base":
            tokens = self.engine.tokenizer.encode(text, prepend="<|bos|>")
            stream = self.engine.stream(tokens, max_tokens=self.max_tokens, **sampling)
            self._show(stream, prefix + text)  # the prompt, then the model's continuation
            return
        self.messages.append({"role": "user", "content": text})
        while True:
            try:
                stream = self.engine.chat(self._conversation(), max_tokens=self.max_tokens, **sampling)
                reply = self._show(stream, prefix)
                break
            except ContextFull as exc:
                if len(self.messages) < 3:
                    self.messages.pop()
                    self.say(t("chat.too_long", error=str(exc)))
                    return
                del self.messages[:2]  # the oldest exchange makes room
                self.say(t("chat.trimmed"))
        self.messages.append(reply)

    def _conversation(self):
        if self.system is None:
            return self.messages
        return [{"role": "system", "content": self.system}] + self.messages

    def _show(self, stream, prefix):
        """Print prefix and a stream of deltas; return the message the stream returns. Ctrl-C stops it."""
        reply = {"role": "assistant", "content": ""}
        shown, first = [], True
        try:
            while True:
                try:
                    delta = next(stream)
                except StopIteration as stop:
                    reply = stop.value or reply
                    break
                if first:  # only now: a ContextFull error surfaces on the first next()
                    self.out.write(prefix)
                    first = False
                shown.append(delta)
                self.out.write(delta)
                self.out.flush()
        except KeyboardInterrupt:
            stream.close()
            reply = {"role": "assistant", "content": "".join(shown)}
            self.out.write(" " + t("chat.stopped"))
        if first:
            self.out.write(prefix)
        self.out.write("\n")
        self.out.flush()
        if self.engine.stop_reason == "max_tokens":
            self.say(t("chat.cut", n=self.max_tokens))
        # an empty reply is kept as a space: the conversation format has no empty messages
        return reply if reply["content"] else {"role": "assistant", "content": " "}


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        return None


def _lines(interactive):
    """Input lines: a readline prompt on a terminal, plain lines when stdin is a pipe or a file."""
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    history = None
    try:
        import readline  # line editing and history for input()
        from nanochat import paths
        history = paths.cache_dir() / "chat_history"
        readline.set_history_length(1000)
        if history.exists():
            readline.read_history_file(history)
    except (ImportError, OSError):
        pass
    try:
        while True:
            try:
                yield input(t("chat.you"))
            except EOFError:
                print()
                return
    finally:
        if history is not None:
            try:
                history.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history)
            except OSError:
                pass  # history is a convenience: never fail a chat over it


def main(args) -> int:
    """`nanochat chat`: load a model, then answer -p once or run the REPL."""
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # undecodable input bytes become U+FFFD, not a crash
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    engine, mode, loaded = load(args)
    print(f"nanochat: {loaded}", file=sys.stderr, flush=True)
    session = Session(engine, mode, args, sys.stdout)
    interactive = sys.stdin.isatty() and args.prompt is None
    prefix = t("chat.assistant") if interactive else ""
    if args.prompt is not None:
        session.reply(args.prompt)
        return 0
    if interactive:
        session.say(t("chat.banner_base" if mode == "base" else "chat.banner"))
    try:
        for line in _lines(interactive):
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not session.command(line):
                    break
                continue
            session.reply(line, prefix)
    except KeyboardInterrupt:
        print()
    return 0


def _standalone(argv=None) -> int:
    """`python -m nanochat.chat_cli ...`: the same command without the nanochat CLI around it."""
    import argparse
    parser = argparse.ArgumentParser(prog="nanochat chat", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main(args)
    except NanochatError as exc:
        print(f"nanochat: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_standalone())
