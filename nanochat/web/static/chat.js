// nanochat's chat page. Plain JavaScript, no build step, nothing fetched from elsewhere.
// Conversations live on the server's disk (/api/conversations); replies stream from /v1/chat/completions;
// Markdown is rendered and sanitized by the server (/api/render) and inserted as it comes back.
"use strict";

const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const $ = (selector) => document.querySelector(selector);
const DEFAULTS = { model: "", system: "", temperature: 0.6, top_k: 50, max_tokens: 512 };
const ICONS = {
  copy: '<rect x="9" y="9" width="11" height="11" rx="2"/><path d="M5 15V5a2 2 0 0 1 2-2h8"/>',
  edit: '<path d="M4 20h4L19 9l-4-4L4 16v4z"/><path d="M13 7l4 4"/>',
  regenerate: '<path d="M20 11a8 8 0 1 0-2.3 5.7"/><path d="M20 4v7h-7"/>',
  more: '<circle cx="5" cy="12" r="1.2"/><circle cx="12" cy="12" r="1.2"/><circle cx="19" cy="12" r="1.2"/>',
};

const state = {
  lang: "en",
  settings: { ...DEFAULTS },
  list: [],          // conversation summaries, newest first
  conv: null,        // the open conversation (null: a new one, not saved until the first message)
  models: [],
  html: new WeakMap(),  // message -> its rendered HTML
  streaming: null,   // {controller, reply, stopped}
  busy: false,       // an exchange is under way (saving, streaming, saving)
  editing: -1,       // index of the user message being edited
};

// -- strings, theme, settings ------------------------------------------------------------------------

function t(key, values = {}) {
  const text = (PAGE.strings[state.lang] || PAGE.strings.en)[key] || PAGE.strings.en[key] || key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? values[name] : `{${name}}`));
}

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-title]").forEach((el) => {
    el.title = t(el.dataset.i18nTitle);
    el.setAttribute("aria-label", el.title);
  });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
  const root = document.documentElement.style;
  root.setProperty("--tool-call", JSON.stringify(t("tool_call")));
  root.setProperty("--tool-result", JSON.stringify(t("tool_result")));
  renderSidebar();
  renderHeader();
  renderMessages();
}

function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("nanochat.theme", theme);
}

function loadSettings() {
  try {
    Object.assign(state.settings, JSON.parse(localStorage.getItem("nanochat.settings") || "{}"));
  } catch (_) { /* damaged: the defaults below */ }
  for (const key of Object.keys(DEFAULTS)) {
    if (typeof state.settings[key] !== typeof DEFAULTS[key]) state.settings[key] = DEFAULTS[key];
  }
}

function saveSettings() { localStorage.setItem("nanochat.settings", JSON.stringify(state.settings)); }

function toast(text) {
  const el = $("#toast");
  el.textContent = text;
  el.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("show"), 3500);
}

// -- talking to the server ---------------------------------------------------------------------------

function authHeaders() {
  const key = localStorage.getItem("nanochat.key");
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askKey() {
  const dialog = $("#key-dialog");
  $("#key-input").value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const key = $("#key-input").value.trim();
      if (key) localStorage.setItem("nanochat.key", key);
      resolve(Boolean(key));
    }, { once: true });
  });
}

// fetch with the API key; asks for the key once on a 401 and tries again
async function call(path, options = {}, retried = false) {
  const json = options.body ? { "Content-Type": "application/json" } : {};
  const headers = { ...json, ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && !retried && await askKey()) return call(path, options, true);
  return response;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function api(path, method = "GET", body = undefined) {
  const response = await call(path, { method, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) throw new Error(await errorOf(response));
  return response.status === 204 ? null : response.json();
}

// -- conversations -----------------------------------------------------------------------------------

async function refreshList() {
  try {
    state.list = (await api("/api/conversations")).data;
  } catch (error) {
    toast(t("error", { message: error.message }));
  }
  renderSidebar();
}

function stored(conv) {
  // what goes to disk: the conversation's own fields, messages without page-only state
  return {
    title: conv.title || null, model: conv.model || null, system: conv.system || null,
    messages: conv.messages.map((m) => ({ role: m.role, content: m.content, ...(m.meta ? { meta: m.meta } : {}) })),
  };
}

async function saveConversation() {
  const conv = state.conv;
  const saved = conv.id ? await api(`/api/conversations/${conv.id}`, "PUT", stored(conv))
                        : await api("/api/conversations", "POST", stored(conv));
  conv.id = saved.id;
  conv.title = saved.title;
  if (location.hash !== `#${conv.id}`) history.replaceState(null, "", `#${conv.id}`);
  await refreshList();
  renderHeader();
}

async function openConversation(id) {
  stopStreaming();
  closeDrawer();
  try {
    const conv = await api(`/api/conversations/${id}`);
    const rendered = conv.messages.length ? (await api("/api/render", "POST", { messages: conv.messages })).html : [];
    conv.messages.forEach((m, i) => { if (rendered[i] !== null) state.html.set(m, rendered[i]); });
    state.conv = conv;
    state.editing = -1;
    history.replaceState(null, "", `#${id}`);
  } catch (error) {
    toast(t("error", { message: error.message }));
    return newConversation();
  }
  renderSidebar();
  renderHeader();
  renderMessages(true);
}

function newConversation() {
  stopStreaming();
  closeDrawer();
  state.conv = { id: null, title: null, model: null, system: null, messages: [] };
  state.editing = -1;
  history.replaceState(null, "", location.pathname);
  renderSidebar();
  renderHeader();
  renderMessages();
  $("#input").focus();
}

async function renameConversation(id, title) {
  try {
    const conv = await api(`/api/conversations/${id}`, "PATCH", { title });
    if (state.conv && state.conv.id === id) state.conv.title = conv.title;
  } catch (error) {
    toast(t("error", { message: error.message }));
  }
  await refreshList();
  renderHeader();
}

async function deleteConversation(id) {
  const row = state.list.find((r) => r.id === id);
  if (!confirm(t("confirm_delete", { title: row ? row.title : id }))) return;
  try {
    await api(`/api/conversations/${id}`, "DELETE");
  } catch (error) {
    toast(t("error", { message: error.message }));
  }
  if (state.conv && state.conv.id === id) newConversation();
  await refreshList();
}

async function exportConversation(id, format) {
  const response = await call(`/api/conversations/${id}/export?format=${format}`);
  if (!response.ok) return toast(t("error", { message: await errorOf(response) }));
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `nanochat-${id}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function importConversation(file) {
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (error) {
    return toast(t("error", { message: `${file.name}: ${error.message}` }));
  }
  try {
    const conv = await api("/api/conversations/import", "POST", data);
    toast(t("imported", { title: conv.title }));
    await refreshList();
    await openConversation(conv.id);
  } catch (error) {
    toast(t("error", { message: error.message }));
  }
}

// -- models ------------------------------------------------------------------------------------------

async function loadModels() {
  try {
    const health = await api("/api/health");
    if (health.auth_required && !localStorage.getItem("nanochat.key")) await askKey();
    state.models = (await api("/v1/models")).data || [];
    state.defaultModel = health.default_model;
  } catch (error) {
    state.models = [];
    toast(t("error", { message: error.message }));
  }
  renderHeader();
}

function currentModel() {
  const wanted = state.settings.model || state.defaultModel;
  return state.models.find((m) => m.id === wanted) || state.models.find((m) => m.nanochat && m.nanochat.default)
    || state.models[0] || null;
}

// -- drawing -----------------------------------------------------------------------------------------

function iconButton(name, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `icon-btn action-${name}`;
  button.title = label;
  button.setAttribute("aria-label", label);
  button.innerHTML = `<svg viewBox="0 0 24 24" class="icon">${ICONS[name]}</svg>`;
  button.addEventListener("click", (event) => { event.stopPropagation(); onClick(event); });
  return button;
}

function renderHeader() {
  const conv = state.conv;
  $("#conv-title").textContent = (conv && conv.title) || t("new_chat");
  document.title = conv && conv.title ? `${conv.title} · nanochat` : "nanochat";
  const model = currentModel();
  const chip = $("#model-info");
  if (!model) {
    chip.textContent = t("no_model");
    chip.classList.add("off");
    return;
  }
  const info = model.nanochat || {};
  const bits = [info.run || model.id, info.stage || info.kind];
  if (info.step !== null && info.step !== undefined) bits.push(t("step", { step: info.step }));
  chip.textContent = bits.filter(Boolean).join(" · ");
  chip.title = model.id;
  chip.classList.remove("off");
}

function closeMenu() { document.querySelectorAll(".menu").forEach((m) => m.remove()); }

function openMenu(anchor, id) {
  closeMenu();
  const menu = document.createElement("div");
  menu.className = "menu";
  const items = [
    ["rename", () => startRename(id)],
    ["export_md", () => exportConversation(id, "md")],
    ["export_json", () => exportConversation(id, "json")],
    ["delete", () => deleteConversation(id), "danger"],
  ];
  for (const [key, action, cls] of items) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = t(key);
    button.dataset.action = key;
    if (cls) button.className = cls;
    button.addEventListener("click", (event) => { event.stopPropagation(); closeMenu(); action(); });
    menu.append(button);
  }
  document.body.append(menu);
  const box = anchor.getBoundingClientRect();
  menu.style.top = `${Math.min(box.bottom + 4, innerHeight - menu.offsetHeight - 8)}px`;
  menu.style.left = `${Math.max(8, Math.min(box.left, innerWidth - menu.offsetWidth - 8))}px`;
}

function startRename(id) {
  const row = document.querySelector(`.conv-row[data-id="${id}"]`);
  if (!row) return;
  const summary = state.list.find((r) => r.id === id);
  const input = document.createElement("input");
  input.value = summary ? summary.title : "";
  input.maxLength = PAGE.limits.title_chars;
  input.setAttribute("aria-label", t("rename_prompt"));
  row.querySelector(".conv-title").replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== (summary && summary.title)) renameConversation(id, title);
    else renderSidebar();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    if (event.key === "Escape") { event.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
  input.addEventListener("click", (event) => event.stopPropagation());
}

function renderSidebar() {
  const nav = $("#conversation-list");
  nav.replaceChildren();
  if (!state.list.length) {
    const empty = document.createElement("div");
    empty.className = "conv-empty";
    empty.textContent = t("no_conversations");
    nav.append(empty);
  }
  for (const row of state.list) {
    const item = document.createElement("div");
    item.className = "conv-row";
    item.dataset.id = row.id;
    if (state.conv && state.conv.id === row.id) item.classList.add("active");
    if (row.error) { item.classList.add("damaged"); item.title = row.error; }
    const title = document.createElement("span");
    title.className = "conv-title";
    title.textContent = row.title || row.id;
    item.append(title, iconButton("more", t("conversations"), (event) => openMenu(event.currentTarget, row.id)));
    item.querySelector(".icon-btn").classList.add("conv-more");
    item.addEventListener("click", () => { if (!row.error) openConversation(row.id); });
    nav.append(item);
  }
}

function messageText(message) {
  if (typeof message.content === "string") return message.content;
  const shown = { text: (s) => s, python: (s) => `\`python: ${s}\``, python_output: (s) => ` -> \`${s}\`` };
  return message.content.map((p) => shown[p.type](p.text)).join("");
}

function statsLine(meta) {
  if (!meta) return "";
  const parts = [];
  if (typeof meta.tokens === "number") {
    parts.push(t("stats", {
      tokens: meta.tokens,
      tps: typeof meta.tok_per_s === "number" ? meta.tok_per_s.toFixed(1) : "–",
      ttft: typeof meta.ttft_s === "number" ? meta.ttft_s.toFixed(2) : "–",
    }));
  }
  return parts.join(" · ");
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {  // no clipboard permission: the old way
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.title = t("copied");
  toast(t("copied"));
}

function messageElement(message, index) {
  const conv = state.conv;
  const el = document.createElement("div");
  el.className = `msg ${message.role}`;
  el.dataset.index = index;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  const body = document.createElement("div");
  body.className = "body";
  const streaming = state.streaming && state.streaming.reply === message;
  if (message.role === "assistant" && state.html.has(message)) {
    body.classList.add("md");
    body.innerHTML = state.html.get(message);  // sanitized by the server (nh3)
  } else {
    body.classList.add("plain");
    body.textContent = messageText(message);
  }
  if (streaming) el.classList.add("streaming");
  if (state.editing === index) {
    el.append(editBox(message, index));
    return el;
  }
  bubble.append(body);
  el.append(bubble);

  const foot = document.createElement("div");
  foot.className = "msg-foot";
  const actions = document.createElement("div");
  actions.className = "msg-actions";
  if (!streaming) {
    actions.append(iconButton("copy", t("copy"), (event) => copyText(messageText(message), event.currentTarget)));
    if (message.role === "user") actions.append(iconButton("edit", t("edit"), () => startEdit(index)));
    if (message.role === "assistant" && index === conv.messages.length - 1) {
      actions.append(iconButton("regenerate", t("regenerate"), regenerate));
    }
  }
  if (message.role === "assistant") {
    const stats = document.createElement("span");
    stats.className = "stats";
    stats.textContent = statsLine(message.meta);
    foot.append(stats);
    const meta = message.meta || {};
    if (meta.stopped || meta.finish_reason === "length") {
      const badge = document.createElement("span");
      badge.className = `badge ${meta.stopped ? "badge-stopped" : "badge-cut"}`;
      badge.textContent = t(meta.stopped ? "stopped" : "cut");
      foot.append(badge);
    }
    if (meta.error) {
      const line = document.createElement("span");
      line.className = "error-line";
      line.textContent = t("error", { message: meta.error });
      foot.append(line);
    }
  }
  foot.append(actions);  // after the figures, so they line up under every reply whether or not actions show
  el.append(foot);
  return el;
}

function editBox(message, index) {
  const box = document.createElement("div");
  box.className = "edit-box";
  const area = document.createElement("textarea");
  area.value = messageText(message);
  const row = document.createElement("div");
  row.className = "edit-actions";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "btn ghost small";
  cancel.textContent = t("cancel");
  cancel.addEventListener("click", () => { state.editing = -1; renderMessages(); });
  const send = document.createElement("button");
  send.type = "button";
  send.className = "btn primary small edit-send";
  send.textContent = t("save_send");
  send.addEventListener("click", () => resendFrom(index, area.value));
  area.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send.click(); }
    if (event.key === "Escape") { event.stopPropagation(); cancel.click(); }
  });
  row.append(cancel, send);
  box.append(area, row);
  setTimeout(() => area.focus(), 0);
  return box;
}

function renderMessages(scroll = false) {
  const list = $("#message-list");
  const messages = state.conv ? state.conv.messages : [];
  $("#empty").hidden = messages.length > 0;
  list.replaceChildren(...messages.map(messageElement));
  if (scroll) scrollToEnd();
}

function scrollToEnd() {
  const box = $("#messages");
  box.scrollTop = box.scrollHeight;
}

function setBusy(busy) {
  $("#send-btn").hidden = busy;
  $("#stop-btn").hidden = !busy;
}

// -- sending and streaming ---------------------------------------------------------------------------

function tooLong(text) {
  if (text.length > PAGE.limits.message_chars) {
    toast(t("too_long", { n: text.length, max: PAGE.limits.message_chars }));
    return true;
  }
  return false;
}

async function send() {
  const input = $("#input");
  const text = input.value;
  if (!text.trim() || state.busy || tooLong(text)) return;
  if (!state.conv) newConversation();
  state.conv.messages.push({ role: "user", content: text });
  input.value = "";
  autosize();
  await respond();
}

function startEdit(index) {
  if (state.busy) return;
  state.editing = index;
  renderMessages();
}

async function resendFrom(index, text) {
  if (!text.trim() || state.busy || tooLong(text)) return;
  state.editing = -1;
  state.conv.messages = [...state.conv.messages.slice(0, index), { role: "user", content: text }];
  await respond();
}

async function regenerate() {
  if (state.busy) return;
  const messages = state.conv.messages;
  if (messages.length && messages[messages.length - 1].role === "assistant") messages.pop();
  await respond();
}

function stopStreaming() {
  if (state.streaming) {
    state.streaming.stopped = true;
    state.streaming.controller.abort();
  }
}

function requestMessages(conv) {
  const messages = conv.system ? [{ role: "system", content: conv.system }] : [];
  return messages.concat(conv.messages.map((m) => ({ role: m.role, content: m.content })));
}

// save the user's turn, stream the reply into a new assistant message, save again
async function respond() {
  state.busy = true;  // from saving the question until the reply is on disk: one exchange at a time
  document.body.dataset.busy = "1";  // (tests wait for it too)
  try {
    await streamReply();
  } finally {
    state.busy = false;
    delete document.body.dataset.busy;
  }
}

async function streamReply() {
  const conv = state.conv;
  const model = currentModel();
  conv.system = state.settings.system.trim() || null;
  conv.model = model ? model.id : conv.model;
  renderMessages(true);
  try {
    await saveConversation();
  } catch (error) {  // refused (e.g. over a limit): the message goes back to the composer, nothing is sent
    toast(t("error", { message: error.message }));
    const refused = conv.messages.pop();
    $("#input").value = messageText(refused);
    autosize();
    renderMessages();
    return;
  }
  const reply = { role: "assistant", content: "", meta: {} };
  const stream = { controller: new AbortController(), reply, stopped: false };
  state.streaming = stream;
  conv.messages.push(reply);
  setBusy(true);
  renderMessages(true);
  const started = performance.now();
  let text = "";
  let final = null;
  let finish = null;
  let firstAt = null;
  const body = {
    model: conv.model, messages: requestMessages({ ...conv, messages: conv.messages.slice(0, -1) }), stream: true,
    temperature: state.settings.temperature, top_k: state.settings.top_k, max_tokens: state.settings.max_tokens,
    stream_options: { include_usage: true },
  };
  const liveRender = throttledRender(reply);
  try {
    const response = await call("/v1/chat/completions",
      { method: "POST", body: JSON.stringify(body), signal: stream.controller.signal });
    if (!response.ok) throw new Error(await errorOf(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of frame.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message || "error");
          const choice = (chunk.choices || [])[0];
          const delta = choice && choice.delta && choice.delta.content;
          if (delta) {
            if (firstAt === null) firstAt = performance.now();
            text += delta;
            reply.content = text;
            showLive(reply, text);
            liveRender(text);
          }
          if (choice && choice.finish_reason) finish = choice.finish_reason;
          if (chunk.nanochat) final = chunk.nanochat;
        }
      }
    }
  } catch (error) {
    if (!stream.stopped) reply.meta.error = error.message;
  }
  state.streaming = null;
  setBusy(false);
  if (final && !stream.stopped) {
    const message = final.message;  // the whole assistant message, or just its content
    const content = message && typeof message === "object" && !Array.isArray(message) ? message.content : message;
    reply.content = typeof content === "string" || Array.isArray(content) ? content : text;
    reply.meta = { tokens: final.tokens, tok_per_s: final.tok_per_s, ttft_s: final.ttft_s, model: final.model,
                   step: final.step, finish_reason: finish };
  } else {
    reply.content = text;
    reply.meta = { ...reply.meta, ...(stream.stopped ? { stopped: true } : {}),
                   ...(firstAt !== null ? { ttft_s: (firstAt - started) / 1000 } : {}) };
  }
  if (reply.content) {
    try {
      state.html.set(reply, (await api("/api/render", "POST", { message: { content: reply.content } })).html);
    } catch (_) { /* shown as plain text */ }
  }
  if (state.conv === conv) renderMessages(true);
  try {
    state.conv === conv ? await saveConversation() : await api(`/api/conversations/${conv.id}`, "PUT", stored(conv));
  } catch (error) {
    toast(t("error", { message: error.message }));
  }
}

function showLive(reply, text) {
  const el = document.querySelector("#message-list .msg.streaming .body");
  if (!el || state.html.has(reply)) return;
  el.textContent = text;
  const box = $("#messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) scrollToEnd();
}

// while a reply streams, its Markdown is re-rendered by the server at most a few times a second
function throttledRender(reply) {
  let busy = false;
  let pending = null;
  let last = 0;
  const run = async () => {
    busy = true;
    const text = pending;
    pending = null;
    last = performance.now();
    try {
      const html = (await api("/api/render", "POST", { text })).html;
      const el = document.querySelector("#message-list .msg.streaming .body");
      if (state.streaming && state.streaming.reply === reply && el) {
        state.html.set(reply, html);
        el.classList.replace("plain", "md");
        el.innerHTML = html;  // sanitized by the server (nh3)
      }
    } catch (_) { /* the plain text stays */ }
    busy = false;
    if (pending !== null) setTimeout(run, Math.max(0, 300 - (performance.now() - last)));
  };
  return (text) => {
    const wasPending = pending !== null;
    pending = text;
    if (!busy && !wasPending) setTimeout(run, Math.max(0, 300 - (performance.now() - last)));
  };
}

// -- settings panel ----------------------------------------------------------------------------------

function openSettings() {
  const select = $("#set-model");
  select.replaceChildren(...state.models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.id;
    return option;
  }));
  const model = currentModel();
  if (model) select.value = model.id;
  $("#set-system").value = state.settings.system;
  $("#set-temperature").value = state.settings.temperature;
  $("#set-top-k").value = state.settings.top_k;
  $("#set-max-tokens").value = state.settings.max_tokens;
  $("#settings-dialog").showModal();
}

function readSettings() {
  const number = (selector, fallback, min, max) => {
    const value = Number($(selector).value);
    return Number.isFinite(value) && $(selector).value !== "" ? Math.min(max, Math.max(min, value)) : fallback;
  };
  state.settings.model = $("#set-model").value || "";
  state.settings.system = $("#set-system").value;
  state.settings.temperature = number("#set-temperature", DEFAULTS.temperature, 0, 2);
  state.settings.top_k = Math.round(number("#set-top-k", DEFAULTS.top_k, 0, 1000));
  state.settings.max_tokens = Math.round(number("#set-max-tokens", DEFAULTS.max_tokens, 1, 4096));
  saveSettings();
  renderHeader();
}

// -- wiring ------------------------------------------------------------------------------------------

function autosize() {
  const input = $("#input");
  input.style.height = "auto";
  input.style.height = `${Math.min(input.scrollHeight, 220)}px`;
}

function closeDrawer() { document.body.classList.remove("drawer"); }

function wire() {
  $("#composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("#input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
  });
  $("#input").addEventListener("input", autosize);
  $("#stop-btn").addEventListener("click", stopStreaming);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.streaming && !document.querySelector("dialog[open]")) stopStreaming();
    if (event.key === "Escape") closeMenu();
  });
  document.addEventListener("click", closeMenu);
  $("#new-chat").addEventListener("click", newConversation);
  $("#menu-btn").addEventListener("click", () => document.body.classList.toggle("drawer"));
  $("#scrim").addEventListener("click", closeDrawer);
  $("#import-btn").addEventListener("click", () => $("#import-file").click());
  $("#import-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (file) importConversation(file);
  });
  $("#lang-btn").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("nanochat.lang", state.lang);
    applyLanguage();
  });
  $("#theme-btn").addEventListener("click", () => {
    setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");
  });
  $("#settings-btn").addEventListener("click", openSettings);
  $("#settings-dialog").addEventListener("close", readSettings);
  $("#set-reset").addEventListener("click", () => {
    state.settings = { ...DEFAULTS };
    saveSettings();
    $("#settings-dialog").close();
    openSettings();
  });
  addEventListener("hashchange", () => {
    const id = location.hash.slice(1);
    if (id && (!state.conv || state.conv.id !== id)) openConversation(id);
  });
}

async function start() {
  const chosen = localStorage.getItem("nanochat.lang");
  const browser = ((navigator.languages && navigator.languages[0]) || navigator.language || "en").toLowerCase();
  state.lang = chosen === "zh" || chosen === "en" ? chosen : (browser.startsWith("zh") ? "zh" : "en");
  loadSettings();
  $("#input").maxLength = PAGE.limits.message_chars;
  wire();
  state.conv = { id: null, title: null, model: null, system: null, messages: [] };
  applyLanguage();
  await loadModels();
  await refreshList();
  const id = location.hash.slice(1);
  if (id) await openConversation(id);
  document.body.dataset.ready = "1";  // for tests: the first load is done
  $("#input").focus();
}

start();
