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
    # -- the dashboard (nanochat-app) --
    "app.language_now": {"en": "Language: English", "zh": "语言：简体中文"},
    "key.runs": {"en": "Runs", "zh": "运行"},
    "key.checkpoints": {"en": "Checkpoints", "zh": "检查点"},
    "key.chat": {"en": "Chat", "zh": "对话"},
    "key.plugins": {"en": "Plugins", "zh": "插件"},
    "key.switch_language": {"en": "中文", "zh": "English"},
    "key.new_run": {"en": "New run", "zh": "新建运行"},
    "key.stop": {"en": "Stop", "zh": "停止"},
    "key.resume": {"en": "Resume", "zh": "恢复"},
    "key.logs": {"en": "Logs", "zh": "日志"},
    "key.back": {"en": "Back", "zh": "返回"},
    "key.follow": {"en": "Follow", "zh": "跟随"},
    "key.start": {"en": "Start", "zh": "启动"},
    "key.delete": {"en": "Delete", "zh": "删除"},
    "key.chat_with": {"en": "Chat with this", "zh": "与之对话"},
    "key.new_chat": {"en": "New chat", "zh": "新对话"},
    "key.stop_reply": {"en": "Stop reply", "zh": "停止生成"},
    "key.yes": {"en": "Yes", "zh": "是"},
    "key.no": {"en": "No", "zh": "否"},
    "palette.runs": {"en": "Every run: state, progress, ETA, curves", "zh": "所有运行：状态、进度、剩余时间、曲线"},
    "palette.checkpoints": {"en": "Checkpoints on disk: size, delete, chat", "zh": "磁盘上的检查点：大小、删除、对话"},
    "palette.chat": {"en": "Talk to a model you trained", "zh": "与你训练的模型对话"},
    "palette.plugins": {"en": "Installed plugins, broken ones with their errors", "zh": "已安装的插件，以及出错插件的错误"},
    "palette.switch_language": {"en": "Switch between English and Simplified Chinese", "zh": "在英文和简体中文之间切换"},
    "palette.new_run": {"en": "Start a run from a preset", "zh": "从预设启动一个运行"},
    "palette.stop": {"en": "Stop the selected run's stage (it can be resumed)", "zh": "停止所选运行的当前阶段（可恢复）"},
    "palette.resume": {"en": "Resume the selected interrupted or failed run", "zh": "恢复所选的已中断或失败的运行"},
    "palette.logs": {"en": "Follow the selected stage's log", "zh": "跟随所选阶段的日志"},
    "palette.delete": {"en": "Delete the selected checkpoints", "zh": "删除所选检查点"},
    "palette.chat_with": {"en": "Chat with the selected model", "zh": "与所选模型对话"},
    "palette.new_chat": {"en": "Start a new conversation", "zh": "开始新的对话"},
    "palette.stop_reply": {"en": "Stop the reply being written", "zh": "停止正在生成的回复"},
    "palette.toggle_follow": {"en": "Follow the log or hold it still", "zh": "跟随日志或暂停滚动"},
    "palette.back": {"en": "Back to the previous screen", "zh": "返回上一屏"},
    "palette.start": {"en": "Start the run", "zh": "启动运行"},
    "palette.refresh": {"en": "Read the checkpoint folders again", "zh": "重新读取检查点目录"},
    "state.damaged": {"en": "damaged", "zh": "文件损坏"},
    "state.stale": {"en": "process gone", "zh": "进程已消失"},
    "state.paused": {"en": "paused", "zh": "已暂停"},
    "col.eta": {"en": "ETA", "zh": "剩余时间"},
    "col.note": {"en": "Note", "zh": "备注"},
    "col.step": {"en": "Step", "zh": "步数"},
    "col.loss": {"en": "Loss", "zh": "损失"},
    "col.val_bpb": {"en": "Val bpb", "zh": "验证 bpb"},
    "col.tok_per_s": {"en": "tok/s", "zh": "词元/秒"},
    "col.mfu": {"en": "MFU", "zh": "MFU"},
    "col.size": {"en": "Size", "zh": "大小"},
    "col.date": {"en": "Date", "zh": "日期"},
    "col.kind": {"en": "Kind", "zh": "类型"},
    "col.name": {"en": "Name", "zh": "名称"},
    "col.plugin": {"en": "Plugin", "zh": "插件"},
    "col.version": {"en": "Version", "zh": "版本"},
    "col.from": {"en": "From", "zh": "来源"},
    "col.status": {"en": "Status", "zh": "状态"},
    "col.error": {"en": "Error", "zh": "错误"},
    "col.model": {"en": "Model", "zh": "模型"},
    "col.summary": {"en": "Summary", "zh": "摘要"},
    "curve.loss": {"en": "train loss", "zh": "训练损失"},
    "curve.val_bpb": {"en": "val bpb", "zh": "验证 bpb"},
    "curve.tok_per_s": {"en": "tok/s", "zh": "词元/秒"},
    "curve.mfu": {"en": "MFU %", "zh": "MFU %"},
    "runs.eval": {"en": "eval", "zh": "评测"},
    "runs.detail_hint": {"en": "Enter: the stage's log · n: new run · s: stop · r: resume · Ctrl+P: every command",
                         "zh": "回车：阶段日志 · n：新建运行 · s：停止 · r：恢复 · Ctrl+P：全部命令"},
    "runs.launch_failed": {"en": "run {name} ended with exit code {code}", "zh": "运行 {name} 以退出码 {code} 结束"},
    "runs.stopping": {"en": "stopping {stage} of {run} (process {pid}); it ends interrupted and can be resumed",
                      "zh": "正在停止 {run} 的 {stage}（进程 {pid}）；它会以“已中断”结束，之后可以恢复"},
    "runs.cannot_resume": {"en": "run {run} is {state}: nothing to resume", "zh": "运行 {run} 的状态是{state}：无需恢复"},
    "runs.resuming": {"en": "resuming {run} in the background", "zh": "正在后台恢复 {run}"},
    "logs.following": {"en": "following", "zh": "跟随中"},
    "logs.paused": {"en": "held still (f follows again)", "zh": "已暂停滚动（按 f 继续跟随）"},
    "logs.empty": {"en": "(no log yet)", "zh": "（还没有日志）"},
    "new.title": {"en": "New run", "zh": "新建运行"},
    "new.preset": {"en": "Preset", "zh": "预设"},
    "new.name": {"en": "Run name", "zh": "运行名称"},
    "new.overrides": {"en": "Overrides, one key=value or stage.key=value a line (as --set)",
                      "zh": "覆盖设置，每行一个 key=value 或 stage.key=value（同 --set）"},
    "new.device": {"en": "Device", "zh": "设备"},
    "new.nproc": {"en": "Processes", "zh": "进程数"},
    "new.resolved": {"en": "Resolved settings", "zh": "最终设置"},
    "new.checking": {"en": "checking…", "zh": "检查中…"},
    "new.started": {"en": "started run {name} in the background; its output goes to {log}",
                    "zh": "已在后台启动运行 {name}；输出写入 {log}"},
    "new.invalid": {"en": "fix the settings first: {error}", "zh": "请先修正设置：{error}"},
    "new.bad_nproc": {"en": "processes must be a whole number from 1 to 64, got {value!r}",
                      "zh": "进程数必须是 1 到 64 的整数，收到的是 {value!r}"},
    "ckpt.total": {"en": "{count} checkpoint folders, {size} on disk", "zh": "{count} 个检查点目录，共占用 {size}"},
    "ckpt.none": {"en": "No checkpoints yet.", "zh": "还没有检查点。"},
    "ckpt.confirm": {"en": "Delete the checkpoints of {run} / {stage} ({size})?", "zh": "删除 {run} / {stage} 的检查点（{size}）？"},
    "ckpt.needed_by": {"en": "Needed by: {stages}. They could not start (or run again) without it.",
                       "zh": "以下阶段需要它：{stages}。没有它，这些阶段将无法开始（或重新运行）。"},
    "ckpt.needed_by_none": {"en": "No later stage needs it; chatting with this model will no longer work.",
                            "zh": "没有后续阶段需要它；删除后将无法再与该模型对话。"},
    "ckpt.refused": {"en": "refused: stage {stage} is {verb} these checkpoints right now; stop it first",
                     "zh": "已拒绝：阶段 {stage} 正在{verb}这些检查点；请先停止它"},
    "ckpt.writing": {"en": "writing", "zh": "写入"},
    "ckpt.reading": {"en": "reading", "zh": "读取"},
    "ckpt.deleted": {"en": "deleted {path}", "zh": "已删除 {path}"},
    "ckpt.no_model": {"en": "{stage} of {run} has no finished model to chat with", "zh": "{run} 的 {stage} 没有可对话的已完成模型"},
    "chat.model": {"en": "Model", "zh": "模型"},
    "chat.system": {"en": "System prompt (optional)", "zh": "系统提示（可选）"},
    "chat.temperature": {"en": "Temperature", "zh": "温度"},
    "chat.placeholder": {"en": "Message (Enter sends)", "zh": "消息（回车发送）"},
    "chat.loading": {"en": "loading {model}…", "zh": "正在加载 {model}…"},
    "chat.no_models": {"en": "No finished chat model yet; train one with: nanochat run --preset cpu-tiny",
                       "zh": "还没有训练完成的对话模型；用以下命令训练：nanochat run --preset cpu-tiny"},
    "chat.conversations": {"en": "Conversations", "zh": "对话记录"},
    "chat.busy": {"en": "a reply is being written; stop it first (Esc)", "zh": "正在生成回复；请先停止（Esc）"},
    "chat.bad_temperature": {"en": "temperature must be a number from 0 to 2, got {value!r}",
                             "zh": "温度必须是 0 到 2 之间的数，收到的是 {value!r}"},
    "chat.speed": {"en": "{tokens} tokens, {rate:.1f} tok/s", "zh": "{tokens} 个词元，{rate:.1f} 词元/秒"},
    "plugins.broken": {"en": "{count} broken plugin(s): they are listed with their errors; the rest work",
                       "zh": "{count} 个插件出错：已列出其错误；其余插件正常工作"},
    "plugins.ok": {"en": "{count} plugins, all working", "zh": "{count} 个插件，全部正常"},
}


_chosen: str | None = None  # set_language() at run time (the dashboard's switch) wins over the environment


def set_language(lang: str | None) -> None:
    """Use `lang` from now on in this process (None: follow NANOCHAT_LANG / the locale again)."""
    global _chosen
    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; valid: {', '.join(LANGUAGES)}")
    _chosen = lang


def language() -> str:
    if _chosen:
        return _chosen
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
