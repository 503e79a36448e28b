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
    "chat.banner": {"en": "Chat with your model. /help lists the commands; Ctrl-D or /quit leaves.",
                    "zh": "与你的模型对话。/help 列出命令；Ctrl-D 或 /quit 退出。"},
    "chat.banner_base": {"en": "A base model: type the start of a text and it writes on. /help lists the commands.",
                         "zh": "这是基础模型：输入一段文字的开头，它会接着写下去。/help 列出命令。"},
    "chat.help": {"en": "/clear            start a new conversation (the system prompt stays)\n"
                        "/system TEXT      set the system prompt (/system alone removes it)\n"
                        "/temperature V    sampling temperature, 0 = always the most likely token\n"
                        "/top-k K          sample among the K most likely tokens, 0 = all\n"
                        "/help             this list\n"
                        "/quit             leave (Ctrl-D too)",
                  "zh": "/clear            开始新的对话（保留系统提示）\n"
                        "/system 文本      设置系统提示（只输入 /system 则删除）\n"
                        "/temperature 值   采样温度，0 = 总是选最可能的词元\n"
                        "/top-k K          只在最可能的 K 个词元中采样，0 = 全部\n"
                        "/help             显示本列表\n"
                        "/quit             退出（也可按 Ctrl-D）"},
    "chat.you": {"en": "you> ", "zh": "你> "},
    "chat.assistant": {"en": "nanochat> ", "zh": "nanochat> "},
    "chat.cleared": {"en": "(new conversation)", "zh": "（新的对话）"},
    "chat.system_set": {"en": "(system prompt: {text})", "zh": "（系统提示：{text}）"},
    "chat.system_cleared": {"en": "(no system prompt)", "zh": "（已删除系统提示）"},
    "chat.base_no_system": {"en": "(a base model has no system prompt)", "zh": "（基础模型没有系统提示）"},
    "chat.set": {"en": "({name} = {value})", "zh": "（{name} = {value}）"},
    "chat.bad_value": {"en": "({command} needs {expected}, got {value!r})", "zh": "（{command} 需要 {expected}，收到的是 {value!r}）"},
    "chat.unknown_command": {"en": "(unknown command {command}; the commands are {commands})",
                             "zh": "（未知命令 {command}；可用命令：{commands}）"},
    "chat.trimmed": {"en": "(the conversation outgrew the model's context: the oldest exchange was dropped)",
                     "zh": "（对话超出了模型的上下文长度：已删除最早的一轮问答）"},
    "chat.too_long": {"en": "(that message is too long for this model: {error})", "zh": "（这条消息对该模型来说太长：{error}）"},
    "chat.stopped": {"en": "(stopped)", "zh": "（已停止）"},
    "chat.cut": {"en": "(the reply reached the limit of {n} tokens; raise it with --max-tokens)",
                 "zh": "（回复达到了 {n} 个词元的上限；可用 --max-tokens 调高）"},
    "serve.loading": {"en": "nanochat: loading {model} (step {step}) on {workers} worker(s)...",
                      "zh": "nanochat：正在加载 {model}（第 {step} 步），共 {workers} 个工作线程……"},
    "serve.serving": {"en": "nanochat: serving the chat page at {url} and the OpenAI-compatible API at {url}v1",
                      "zh": "nanochat：聊天网页位于 {url}，兼容 OpenAI 的 API 位于 {url}v1"},
    "serve.beyond": {"en": "nanochat: {host} is reachable beyond this machine, so every API call needs the API key",
                     "zh": "nanochat：{host} 可以从本机以外访问，因此每个 API 调用都需要 API 密钥"},
    "serve.key_generated": {"en": "nanochat: API key (generated for this run; set one with --api-key or "
                                  "NANOCHAT_API_KEY):\n  Authorization: Bearer {secret}",
                            "zh": "nanochat：API 密钥（本次运行生成；可用 --api-key 或 NANOCHAT_API_KEY 指定）：\n"
                                  "  Authorization: Bearer {secret}"},
    "serve.key_given": {"en": "nanochat: every API call needs the API key you gave (Authorization: Bearer <key>)",
                        "zh": "nanochat：每个 API 调用都需要你提供的 API 密钥（Authorization: Bearer <密钥>）"},
    "serve.stopped": {"en": "nanochat: stopped", "zh": "nanochat：已停止"},
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
