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
    # the chat page (nanochat serve): the page receives every "page.*" key in both languages
    "page.new_chat": {"en": "New chat", "zh": "新对话"},
    "page.conversations": {"en": "Conversations", "zh": "对话"},
    "page.no_conversations": {"en": "No conversations yet", "zh": "还没有对话"},
    "page.import": {"en": "Import JSON", "zh": "导入 JSON"},
    "page.imported": {"en": "Imported “{title}”", "zh": "已导入“{title}”"},
    "page.export_md": {"en": "Export as Markdown", "zh": "导出为 Markdown"},
    "page.export_json": {"en": "Export as JSON", "zh": "导出为 JSON"},
    "page.rename": {"en": "Rename", "zh": "重命名"},
    "page.rename_prompt": {"en": "New title", "zh": "新标题"},
    "page.delete": {"en": "Delete", "zh": "删除"},
    "page.confirm_delete": {"en": "Delete “{title}”? This cannot be undone.", "zh": "删除“{title}”？此操作无法撤销。"},
    "page.placeholder": {"en": "Message nanochat (Enter to send, Shift+Enter for a new line)",
                         "zh": "给 nanochat 发消息（Enter 发送，Shift+Enter 换行）"},
    "page.send": {"en": "Send", "zh": "发送"},
    "page.stop": {"en": "Stop (Esc)", "zh": "停止 (Esc)"},
    "page.regenerate": {"en": "Regenerate", "zh": "重新生成"},
    "page.edit": {"en": "Edit", "zh": "编辑"},
    "page.copy": {"en": "Copy", "zh": "复制"},
    "page.copied": {"en": "Copied", "zh": "已复制"},
    "page.save_send": {"en": "Save & send", "zh": "保存并发送"},
    "page.cancel": {"en": "Cancel", "zh": "取消"},
    "page.settings": {"en": "Settings", "zh": "设置"},
    "page.system_prompt": {"en": "System prompt", "zh": "系统提示"},
    "page.system_hint": {"en": "Used for new conversations", "zh": "用于新的对话"},
    "page.temperature": {"en": "Temperature", "zh": "温度"},
    "page.top_k": {"en": "Top-k (0 = all)", "zh": "Top-k（0 = 全部）"},
    "page.max_tokens": {"en": "Max tokens", "zh": "最大词元数"},
    "page.model": {"en": "Model", "zh": "模型"},
    "page.reset": {"en": "Reset to defaults", "zh": "恢复默认值"},
    "page.close": {"en": "Close", "zh": "关闭"},
    "page.theme": {"en": "Light / dark", "zh": "浅色 / 深色"},
    "page.language": {"en": "中文", "zh": "English"},
    "page.menu": {"en": "Show conversations", "zh": "显示对话列表"},
    "page.stats": {"en": "{tokens} tokens · {tps} tok/s · first token {ttft} s",
                   "zh": "{tokens} 个词元 · {tps} 词元/秒 · 首个词元 {ttft} 秒"},
    "page.stopped": {"en": "stopped", "zh": "已停止"},
    "page.cut": {"en": "reached the token limit", "zh": "达到词元上限"},
    "page.tool_call": {"en": "calculator", "zh": "计算器"},
    "page.tool_result": {"en": "result", "zh": "结果"},
    "page.empty_title": {"en": "Chat with your model", "zh": "与你的模型对话"},
    "page.empty_hint": {"en": "Everything stays on this machine; conversations are saved on disk.",
                        "zh": "一切都留在本机；对话保存在磁盘上。"},
    "page.no_model": {"en": "no model", "zh": "没有模型"},
    "page.step": {"en": "step {step}", "zh": "第 {step} 步"},
    "page.api_key": {"en": "This server needs an API key", "zh": "此服务器需要 API 密钥"},
    "page.api_key_hint": {"en": "The key nanochat serve was started with; this browser keeps it.",
                          "zh": "启动 nanochat serve 时设置的密钥；本浏览器会记住它。"},
    "page.ok": {"en": "OK", "zh": "确定"},
    "page.error": {"en": "Error: {message}", "zh": "出错：{message}"},
    "page.too_long": {"en": "The message has {n} characters; at most {max}.", "zh": "消息有 {n} 个字符；最多 {max} 个。"},
    "page.you": {"en": "You", "zh": "你"},
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
