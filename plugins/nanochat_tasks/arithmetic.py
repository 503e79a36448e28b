"""starter-arithmetic: small word problems and bare sums in English and Chinese, solved with the calculator tool.

A stand-in for GSM8K that needs no download: the same answer shape (text, then a `python` part with
the expression and a `python_output` part with what the calculator returns, the result repeated in
words, and `#### N` at the end), so a tiny model can learn tool use offline, and RL has a reward.
Two problems in five are a bare calculation as people type it ("What is 123 + 456?", "123+456=?",
"计算 37*21", half of them in Chinese), answered through the calculator the same way ("123 + 456 = 579.").
Every problem is generated from its split and index alone; all answers are whole numbers.
"""
import random

from nanochat.sandbox import use_calculator
from nanochat.tasks import Task, answer_is_correct

SIZES = {"train": 20_000, "test": 500}
NAMES_EN = ["Alice", "Ben", "Carlos", "Dana", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kate", "Liam",
            "Mei", "Noah", "Olga", "Priya"]
NAMES_ZH = ["小明", "小红", "李华", "王芳", "张伟", "刘洋", "陈静", "赵磊"]
ITEMS_EN = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "eggs", "cards"]
ITEMS_ZH = [("个", "苹果"), ("支", "铅笔"), ("张", "贴纸"), ("颗", "弹珠"), ("块", "饼干"), ("本", "书"), ("个", "鸡蛋")]

# A problem is (question, steps, answer); a step is (text before the call, expression, text after the result).


def boxes(rng, zh, who):
    a, b = rng.randint(2, 30), rng.randint(2, 24)
    if zh:
        unit, item = rng.choice(ITEMS_ZH)
        return (f"{who}有{a}个盒子，每个盒子里有{b}{unit}{item}。{who}一共有多少{unit}{item}？",
                [(f"{a}个盒子，每盒{b}{unit}，一共是 {a}*{b} = ", f"{a}*{b}", f"{unit}{item}。")], a * b)
    item = rng.choice(ITEMS_EN)
    return (f"{who} has {a} boxes with {b} {item} in each box. How many {item} does {who} have in total?",
            [(f"{a} boxes of {b} {item} make {a}*{b} = ", f"{a}*{b}", f" {item}.")], a * b)


def buy_and_give(rng, zh, who):
    a, b = rng.randint(5, 60), rng.randint(2, 40)
    c = rng.randint(1, a + b - 1)
    if zh:
        unit, item = rng.choice(ITEMS_ZH)
        return (f"{who}有{a}{unit}{item}，又买了{b}{unit}，然后送给朋友{c}{unit}。{who}现在有多少{unit}{item}？",
                [(f"{a}加上买的{b}再减去送出的{c}：{a}+{b}-{c} = ", f"{a}+{b}-{c}", f"{unit}。")], a + b - c)
    item = rng.choice(ITEMS_EN)
    return (f"{who} had {a} {item}, bought {b} more and then gave {c} to a friend. How many {item} does {who} "
            f"have now?", [(f"{who} has {a}+{b}-{c} = ", f"{a}+{b}-{c}", f" {item} now.")], a + b - c)


def share(rng, zh, who):
    n, each = rng.randint(2, 12), rng.randint(2, 25)
    total = n * each
    if zh:
        return (f"{who}烤了{total}块饼干，平均分给{n}个朋友。每个朋友分到几块？",
                [(f"每人分到 {total}/{n} = ", f"{total}/{n}", "块。")], each)
    return (f"{who} baked {total} cookies and shared them equally among {n} friends. How many cookies did each "
            f"friend get?", [(f"Each friend gets {total}/{n} = ", f"{total}/{n}", " cookies.")], each)


def change(rng, zh, who):
    n, price = rng.randint(2, 9), rng.randint(2, 15)
    cost = n * price
    bill = next(b for b in (20, 50, 100, 200) if b > cost)
    if zh:
        return (f"{who}买了{n}本笔记本，每本{price}元，付了一张{bill}元的钞票。应该找回多少元？",
                [(f"笔记本一共 {n}*{price} = ", f"{n}*{price}", "元。\n"),
                 (f"找回 {bill}-{cost} = ", f"{bill}-{cost}", "元。")], bill - cost)
    return (f"{who} buys {n} notebooks at {price} dollars each and pays with a {bill}-dollar bill. How much change "
            f"does {who} get?", [(f"The notebooks cost {n}*{price} = ", f"{n}*{price}", " dollars.\n"),
                                 (f"The change is {bill}-{cost} = ", f"{bill}-{cost}", " dollars.")], bill - cost)


def distance(rng, zh, who):
    speed, hours = rng.randint(20, 120), rng.randint(2, 9)
    if zh:
        return (f"一列火车每小时行驶{speed}千米，行驶了{hours}小时。它一共行驶了多少千米？",
                [(f"路程是 {speed}*{hours} = ", f"{speed}*{hours}", "千米。")], speed * hours)
    return (f"A train travels at {speed} km per hour for {hours} hours. How far does it travel?",
            [(f"The distance is {speed}*{hours} = ", f"{speed}*{hours}", " km.")], speed * hours)


def savings(rng, zh, who):
    weekly, weeks = rng.randint(3, 40), rng.randint(2, 12)
    saved = weekly * weeks
    spent = rng.randint(1, saved - 1)
    if zh:
        return (f"{who}每周存{weekly}元，存了{weeks}周后，花{spent}元买了一份礼物。还剩多少元？",
                [(f"一共存了 {weekly}*{weeks} = ", f"{weekly}*{weeks}", "元。\n"),
                 (f"还剩 {saved}-{spent} = ", f"{saved}-{spent}", "元。")], saved - spent)
    return (f"{who} saves {weekly} dollars every week. After {weeks} weeks, {who} spends {spent} dollars on a gift. "
            f"How much money is left?", [(f"{who} saved {weekly}*{weeks} = ", f"{weekly}*{weeks}", " dollars.\n"),
                                         (f"What is left is {saved}-{spent} = ", f"{saved}-{spent}", " dollars.")],
            saved - spent)


def reading(rng, zh, who):
    per_day, days = rng.randint(5, 40), rng.randint(3, 20)
    pages = per_day * days
    if zh:
        return (f"{who}每天读{per_day}页书。一本{pages}页的书要读几天？",
                [(f"需要 {pages}/{per_day} = ", f"{pages}/{per_day}", "天。")], days)
    return (f"{who} reads {per_day} pages every day. How many days does it take to finish a {pages}-page book?",
            [(f"It takes {pages}/{per_day} = ", f"{pages}/{per_day}", " days.")], days)


def chairs(rng, zh, who):
    rows, per_row, extra = rng.randint(3, 25), rng.randint(4, 20), rng.randint(1, 15)
    total = rows * per_row + extra
    if zh:
        return (f"礼堂里有{rows}排椅子，每排{per_row}把，另外还有{extra}把折叠椅。一共有多少把椅子？",
                [(f"一共 {rows}*{per_row}+{extra} = ", f"{rows}*{per_row}+{extra}", "把椅子。")], total)
    return (f"A hall has {rows} rows of {per_row} chairs and {extra} extra folding chairs. How many chairs are there?",
            [(f"There are {rows}*{per_row}+{extra} = ", f"{rows}*{per_row}+{extra}", " chairs.")], total)


# Bare calculations: (operator as the calculator takes it, as people type it, English words, Chinese words).
OPERATORS = [("+", ["+"], ["plus"], ["加"]), ("-", ["-"], ["minus"], ["减", "减去"]),
             ("*", ["*", "×", "x"], ["times", "multiplied by"], ["乘", "乘以"]),
             ("/", ["/", "÷"], ["divided by"], ["除以"])]
# {sp} is the space people leave around the operator (or none); the reply keeps it (see bare()).
BARE_EN = ["What is {a}{sp}{op}{sp}{b}?", "{a}{sp}{op}{sp}{b}=?", "{a}{sp}{op}{sp}{b} = ?",
           "Calculate {a}{sp}{op}{sp}{b}.", "Compute {a}{sp}{op}{sp}{b}", "How much is {a}{sp}{op}{sp}{b}?",
           "{a}{sp}{op}{sp}{b}", "What's {a} {word} {b}?", "What is {a} {word} {b}?"]
BARE_ZH = ["计算 {a}{sp}{op}{sp}{b}", "计算{a}{sp}{op}{sp}{b}", "{a}{sp}{op}{sp}{b}=？",
           "{a}{sp}{op}{sp}{b}等于多少？", "{a}{sp}{op}{sp}{b}等于几？", "算一下{a}{sp}{op}{sp}{b}",
           "请计算{a}{sp}{op}{sp}{b}。", "{a}{sp}{op}{sp}{b}", "{a}{word}{b}等于多少？", "{a}{word}{b}是多少？"]
BARE_SHARE = 0.4  # of all problems; half of the bare ones are Chinese
BARE_ZH_SHARE = 0.5


def number(rng) -> int:
    """1 to 4 digits, each length as likely: small and large operands both come up."""
    return rng.randint(*rng.choice([(1, 9), (10, 99), (100, 999), (1000, 9999)]))


def bare(rng, zh, who):
    op, typed, words_en, words_zh = rng.choice(OPERATORS)
    a, b = number(rng), number(rng)
    if op == "-" and a < b:
        a, b = b, a
    if op == "/":
        b = rng.randint(2, 99)
        a = b * rng.randint(2, 999)
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    template = rng.choice(BARE_ZH if zh else BARE_EN)
    sp = ("" if zh else " ") if "{word}" in template else rng.choice(["", " "])  # "8 plus 94", "8加94"
    question = template.format(a=a, b=b, op=rng.choice(typed), sp=sp, word=rng.choice(words_zh if zh else words_en))
    # the expression is spaced as the question was, so the reply copies the operands token for token
    expr = f"{a}{sp}{op}{sp}{b}"
    return question, [(f"{expr} = ", expr, "。" if zh else ".")], value


WORD_PROBLEMS = [boxes, buy_and_give, share, change, distance, savings, reading, chairs]


def _whole(text: str) -> str:
    """The calculator's '12.0' said as a person would: '12'."""
    return text[:-2] if text.endswith(".0") else text


class StarterArithmetic(Task):
    name = "starter-arithmetic"
    kind = "generative"
    splits = ("train", "test")
    description = ("word problems and bare calculations solved with calculator tool calls, English + Chinese "
                   "(synthetic, GSM8K-shaped)")

    def num_examples(self, split: str) -> int:
        return SIZES[self.check_split(split)]

    def make_example(self, split: str, index: int) -> dict:
        rng = random.Random(f"starter-arithmetic-{split}-{index}")
        zh = rng.random() < 0.3
        problem = bare if rng.random() < BARE_SHARE else rng.choice(WORD_PROBLEMS)
        if problem is bare:
            zh = rng.random() < BARE_ZH_SHARE
        question, steps, answer = problem(rng, zh, rng.choice(NAMES_ZH if zh else NAMES_EN))
        parts = []
        for before, expr, after in steps:
            output = use_calculator(expr)  # exactly what the engine injects at generation time
            lead = (parts.pop()["text"] if parts else "") + before  # merge with the previous step's tail
            parts += [{"type": "text", "text": lead}, {"type": "python", "text": expr},
                      {"type": "python_output", "text": output},
                      {"type": "text", "text": _whole(output) + after}]
        parts[-1]["text"] += f"\n#### {answer}"
        return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": parts}]}

    def evaluate(self, conversation: dict, completion: str) -> bool:
        return answer_is_correct(conversation, completion)
