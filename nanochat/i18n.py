"""English and Simplified Chinese for what people read in the app and the chat page.

The language comes from NANOCHAT_LANG ("en" or "zh"), else from the locale (LANG / LC_ALL / LC_MESSAGES
starting with "zh"), else English. Add a message by adding one key with both languages.
"""
import os

LANGUAGES = ("en", "zh")

MESSAGES = {
    "app.title": {"en": "nanochat", "zh": "nanochat"},
    "app.subtitle": {"en": "runs on this machine", "zh": "本机上的训练运行"},
    "runs.none": {"en": "No runs yet. Start one with: nanochat run --preset cpu-tiny",
                  "zh": "还没有运行。用以下命令开始：nanochat run --preset cpu-tiny"},
    "col.run": {"en": "Run", "zh": "运行"},
    "col.preset": {"en": "Preset", "zh": "预设"},
    "col.progress": {"en": "Stages done", "zh": "已完成阶段"},
    "col.stage": {"en": "Stage", "zh": "阶段"},
    "col.state": {"en": "State", "zh": "状态"},
    "col.last": {"en": "Last metrics", "zh": "最新指标"},
    "key.refresh": {"en": "Refresh", "zh": "刷新"},
    "key.quit": {"en": "Quit", "zh": "退出"},
    "state.pending": {"en": "pending", "zh": "等待中"},
    "state.running": {"en": "running", "zh": "运行中"},
    "state.interrupted": {"en": "interrupted", "zh": "已中断"},
    "state.failed": {"en": "failed", "zh": "失败"},
    "state.done": {"en": "done", "zh": "完成"},
    "run.damaged": {"en": "damaged: {error}", "zh": "文件损坏：{error}"},
}


def language() -> str:
    chosen = os.environ.get("NANOCHAT_LANG", "").lower()
    if chosen in LANGUAGES:
        return chosen
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(var, "").lower().startswith("zh"):
            return "zh"
    return "en"


def t(key: str, **values) -> str:
    """The message `key` in the current language, with {placeholders} filled in."""
    return MESSAGES[key][language()].format(**values)
