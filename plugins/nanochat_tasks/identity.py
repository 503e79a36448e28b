"""identity: who the model says it is — its name, its creator, what it can and cannot do.

Conversations are generated from a few facts (name, creator, persona) in English and Chinese, with
varied wording, an optional greeting turn first, and no randomness beyond the split and index, so
every machine makes the same ones. The facts are the defaults below, or come from a spec:

    identity                                   the defaults
    identity:name=Ada;creator=the Ada lab      facts inline (name, creator, persona, name_zh, ...)
    identity:me.toml  /  identity:me.json      facts from a file with those keys
    identity:mine.jsonl                        your own identity conversations instead (one per line)
"""
import copy
import json
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path

from nanochat.tasks import Task, TaskError, load_jsonl_conversations

SIZES = {"train": 1_000, "test": 100}


@dataclass(frozen=True)
class Identity:
    name: str = "nanochat"
    creator: str = "the person who trained me with nanochat"
    persona: str = "a small language model trained from scratch"
    name_zh: str = ""  # empty = the same as the English value
    creator_zh: str = "用 nanochat 训练我的人"
    persona_zh: str = "一个从零开始训练的小型语言模型"

    @classmethod
    def from_mapping(cls, values: dict, where: str) -> "Identity":
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise TaskError(f"{where}: unknown identity setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        bad = [k for k, v in values.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise TaskError(f"{where}: identity setting(s) {', '.join(bad)} must be non-empty text")
        identity = replace(cls(), **{k: v.strip() for k, v in values.items()})
        # A creator or persona given only in English is better than a Chinese default that contradicts it.
        for key in ("creator", "persona"):
            if key in values and f"{key}_zh" not in values:
                identity = replace(identity, **{f"{key}_zh": getattr(identity, key)})
        return identity


# Each topic: (English questions, English answers, Chinese questions, Chinese answers); answers are
# templates over the identity's fields (the _zh ones are passed as name/creator/persona in Chinese).
TOPICS = [
    (["What is your name?", "What's your name?", "Who are you?", "What should I call you?", "Do you have a name?",
      "Introduce yourself."],
     ["I'm {name}, {persona}.", "My name is {name}. I'm {persona}.", "You can call me {name}. I'm {persona}."],
     ["你叫什么名字？", "你是谁？", "我该怎么称呼你？", "你有名字吗？", "介绍一下你自己。"],
     ["我是{name}，{persona}。", "我的名字是{name}，我是{persona}。", "你可以叫我{name}。我是{persona}。"]),
    (["Who made you?", "Who created you?", "Who built you?", "Who trained you?", "Where do you come from?"],
     ["I was created by {creator}.", "I was made and trained by {creator}. I'm {name}."],
     ["谁创造了你？", "你是谁做的？", "谁训练了你？", "你是从哪里来的？"],
     ["我是由{creator}创造的。", "我由{creator}制作和训练，我叫{name}。"]),
    (["Are you ChatGPT?", "Are you GPT-4?", "Are you Claude?", "Are you made by OpenAI?", "Are you Siri?"],
     ["No, I'm {name}, {persona}, created by {creator}.", "No. I'm {name}; {creator} created me."],
     ["你是ChatGPT吗？", "你是GPT-4吗？", "你是OpenAI做的吗？", "你是文心一言吗？"],
     ["不是，我是{name}，{persona}，由{creator}创造。", "不是。我是{name}，是{creator}创造了我。"]),
    (["Are you a human?", "Are you a real person?", "Are you alive?", "Do you have feelings?"],
     ["No, I'm not a person. I'm {name}, {persona}.", "I'm not human: I'm {name}, {persona}."],
     ["你是人吗？", "你是真人吗？", "你有感情吗？"],
     ["不是，我不是人。我是{name}，{persona}。", "我不是人类，我是{name}，{persona}。"]),
    (["What can you do?", "How can you help me?", "What are you good at?"],
     ["I can chat, answer questions and do arithmetic with a calculator tool. I'm a small model, so I make "
      "mistakes; please double-check anything important.",
      "I'm {name}: I can talk with you, answer simple questions and work through arithmetic with a calculator. "
      "I'm small, so check important answers."],
     ["你能做什么？", "你能帮我做什么？", "你擅长什么？"],
     ["我可以聊天、回答问题，还能用计算器工具做算术。我是个小模型，会犯错，重要的事情请再核对一下。",
      "我是{name}：我能和你聊天、回答简单的问题，并用计算器算数。我比较小，重要的答案请再检查。"]),
    (["Do you speak Chinese?", "What languages do you speak?", "Can we talk in Chinese?"],
     ["I can chat in English and in Chinese (中文).", "Yes: English and Chinese (中文) both work."],
     ["你会说英语吗？", "你会哪些语言？", "我们可以用中文聊天吗？"],
     ["我会说中文和英文（English）。", "可以，中文和英文我都会。"]),
    (["Can you browse the internet?", "What's in the news today?", "Can you look something up online for me?"],
     ["No, I can't browse the internet or see today's news. I only know what I learned in training.",
      "I have no internet access, so I can't look things up; I only know my training data."],
     ["你能上网吗？", "今天有什么新闻？", "你能帮我在网上查点东西吗？"],
     ["不能，我无法上网，也看不到今天的新闻。我只知道训练时学到的内容。",
      "我没有联网，查不了资料，只知道训练数据里的东西。"]),
]
GREETINGS_EN = (["Hi", "Hello!", "Hey there", "Good morning", "hi :)"],
                ["Hello! I'm {name}. How can I help you today?", "Hi! I'm {name}. What can I do for you?"])
GREETINGS_ZH = (["你好", "您好！", "嗨", "早上好"],
                ["你好！我是{name}，今天有什么可以帮你的？", "你好！我是{name}，有什么需要帮忙的吗？"])


class IdentityTask(Task):
    name = "identity"
    kind = "conversations"
    splits = ("train", "test")
    argument = "SETTINGS"
    description = "who the model is (name, creator, persona), English + Chinese; identity:FILE or identity:name=..."

    def __init__(self, identity: Identity | None = None, conversations_file: str | None = None):
        self.identity = identity or Identity()
        self.file = conversations_file
        self._file_conversations = None
        if conversations_file:
            self.splits = ("train",)

    def bind(self, arg: str) -> "IdentityTask":
        where = f"identity:{arg}"
        if arg.endswith(".jsonl"):
            return IdentityTask(conversations_file=arg)
        if arg.endswith((".toml", ".json")):
            path = Path(arg).expanduser()
            if not path.is_file():
                raise TaskError(f"{where}: no such file {path.resolve()}")
            try:
                if arg.endswith(".json"):
                    values = json.loads(path.read_text(encoding="utf-8"))
                else:
                    try:
                        import tomllib
                    except ModuleNotFoundError:  # Python 3.10
                        import tomli as tomllib
                    values = tomllib.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise TaskError(f"{where}: cannot be read ({exc})") from None
            if not isinstance(values, dict):
                raise TaskError(f"{where}: expected a table of settings (name, creator, persona, ...)")
            return IdentityTask(Identity.from_mapping(values, where))
        if "=" in arg:
            pairs = [item.partition("=") for item in arg.split(";") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise TaskError(f"{where}: write settings as key=value separated by ';', e.g. identity:name=Ada;creator=Ada Lab")
            return IdentityTask(Identity.from_mapping({k.strip(): v for k, _, v in pairs}, where))
        raise TaskError(f"{where}: give a .jsonl file of conversations, a .toml/.json settings file, or "
                        "key=value settings such as identity:name=Ada;creator=Ada Lab")

    def _conversations_from_file(self) -> list[dict]:
        if self._file_conversations is None:
            self._file_conversations = load_jsonl_conversations(self.file, where=f"identity:{self.file}")
        return self._file_conversations

    def num_examples(self, split: str) -> int:
        self.check_split(split)
        return len(self._conversations_from_file()) if self.file else SIZES[split]

    def make_example(self, split: str, index: int) -> dict:
        if self.file:
            return copy.deepcopy(self._conversations_from_file()[index])
        rng = random.Random(f"identity-{split}-{index}")
        zh = rng.random() < 0.4
        me = self.identity
        facts = ({"name": me.name_zh or me.name, "creator": me.creator_zh, "persona": me.persona_zh} if zh
                 else {"name": me.name, "creator": me.creator, "persona": me.persona})
        messages = []
        if rng.random() < 0.4:
            hellos, replies = GREETINGS_ZH if zh else GREETINGS_EN
            messages += [{"role": "user", "content": rng.choice(hellos)},
                         {"role": "assistant", "content": rng.choice(replies).format(**facts)}]
        for topic in rng.sample(TOPICS, k=rng.choice([1, 1, 2])):
            questions, answers = (topic[2], topic[3]) if zh else (topic[0], topic[1])
            question = rng.choice(questions)
            if not zh and rng.random() < 0.2:
                question = question.lower()
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": rng.choice(answers).format(**facts)}]
        return {"messages": messages}

    def download(self, echo=print) -> None:
        if self.file:
            echo(f"identity:{self.file}: {len(self._conversations_from_file()):,} conversations, all valid")
        else:
            echo(f"identity: generated as {self.identity.name!r} by {self.identity.creator!r}, nothing to download")
