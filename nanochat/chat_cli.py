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

from nanochat.errors import NanochatError
from nanochat.i18n import t
from nanochat.models import add_model_arguments

COMMANDS = ("/clear", "/system", "/temperature", "/top-k", "/help", "/quit")


class ChatError(NanochatError):
    """A chat setting that cannot be used: the message says what to do."""


def add_arguments(parser) -> None:
    add_model_arguments(parser, "to load")
    parser.add_argument("-p", "--prompt", help="ask one question, print the reply and exit")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = always the most likely token")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens (0 = all)")
    parser.add_argument("--max-tokens", type=int, default=512, help="the longest reply, in tokens")
    parser.add_argument("--seed", type=int, default=None, help="make sampling repeatable")


def load(args):
    """(engine, mode "chat" or "base", a line saying what was loaded)."""
    from nanochat.models import load_engine
    engine, mode, loaded, _ = load_engine(args.run, args.stage, args.checkpoint, args.tokenizer, args.device)
    return engine, mode, loaded


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
