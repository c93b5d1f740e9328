// The playground's script (an ES module, no library): words as chips, tap one to hide it, the model's top words as
// bars on one 0-100% scale, updated as the sentence changes (debounced; one request in flight, a stale one
// cancelled). In a Telegram Mini App every call carries the signed initData; locally there is none.
const app = document.getElementById("app");
const input = document.getElementById("sentence");
const chips = document.getElementById("chips");
const bars = document.getElementById("bars");
const errorLine = document.getElementById("error");
const needsMask = document.getElementById("needs-mask");
const comparePanel = document.getElementById("compare");
const language = app.dataset.language;
const tg = window.Telegram && window.Telegram.WebApp;
const initData = (tg && tg.initData) || "";
const MASK = /\[\s*mask\s*\]|<\s*mask\s*>/i;
const WORDS = /\[\s*mask\s*\]|<\s*mask\s*>|[\p{L}\p{N}]+(?:['’-][\p{L}\p{N}]+)*/giu;
const DEBOUNCE_MS = 300;

let tab = "try";
let timer = null;
let inFlight = null;

function applyTheme(params) {
  for (const [key, value] of Object.entries(params || {})) {
    document.documentElement.style.setProperty(`--tg-theme-${key.replace(/_/g, "-")}`, value);
  }
}

if (tg) {
  if (tg.ready) tg.ready();
  if (tg.expand) tg.expand();
  applyTheme(tg.themeParams);
  if (tg.onEvent) tg.onEvent("themeChanged", () => applyTheme(tg.themeParams));
}

function showError(message) {
  errorLine.textContent = message || "";
  errorLine.hidden = !message;
}

async function api(path, text, signal) {
  const headers = { "Content-Type": "application/json", "X-Language": language };
  if (initData) headers.Authorization = `tma ${initData}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify({ text }), signal });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = new Error((body && body.error) || `${response.status} ${response.statusText}`);
    // 429 (busy, or this person's pace) and 503 (a standby): the server says when to try again.
    if (response.status === 429 || response.status === 503) {
      error.retryAfter = Number(response.headers.get("Retry-After")) || (body && body.retry_after) || 1;
    }
    throw error;
  }
  return body;
}

function percent(score) {
  const value = score * 100;
  return value >= 0.1 ? `${value.toFixed(1)}%` : "<0.1%";
}

function barRow(word, score) {
  const row = document.createElement("div");
  row.className = "row";
  const label = document.createElement("span");
  label.className = "word";
  label.textContent = word;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
  bar.append(fill);
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = percent(score);
  row.append(label, bar, pct);
  return row;
}

function renderChips() {
  chips.replaceChildren();
  const text = input.value;
  for (const match of text.matchAll(WORDS)) {
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = MASK.test(match[0]) ? "chip mask" : "chip";
    chip.textContent = match[0];
    chip.addEventListener("click", () => {
      const start = match.index;
      const end = start + match[0].length;
      input.value = `${text.slice(0, start)}[MASK]${text.slice(end)}`;
      changed();
    });
    chips.append(chip);
  }
}

function renderBars(masks) {
  bars.replaceChildren();
  masks.forEach((words, n) => {
    if (masks.length > 1) {
      const title = document.createElement("p");
      title.className = "mask-title";
      title.textContent = `[MASK] ${n + 1}`;
      bars.append(title);
    }
    for (const { word, score } of words) bars.append(barRow(word, score));
  });
}

function renderCompare(models) {
  comparePanel.replaceChildren();
  for (const model of models) {
    const card = document.createElement("div");
    card.className = "model-card";
    const title = document.createElement("h2");
    title.textContent = model.label;
    card.append(title);
    if (model.error) {
      const line = document.createElement("p");
      line.className = "error";
      line.textContent = model.error;
      card.append(line);
    } else {
      for (const { word, score } of model.masks[0] || []) card.append(barRow(word, score));
    }
    comparePanel.append(card);
  }
}

async function ask() {
  const text = input.value.trim();
  if (inFlight) inFlight.abort(); // the newer sentence wins: the stale answer is never drawn
  const hasMask = MASK.test(text);
  needsMask.hidden = hasMask || !text;
  if (!text || !hasMask) {
    bars.replaceChildren();
    showError("");
    return;
  }
  const controller = new AbortController();
  inFlight = controller;
  app.setAttribute("aria-busy", "true");
  try {
    if (tab === "compare") {
      renderCompare((await api("/app/api/compare", text, controller.signal)).models);
    } else {
      renderBars((await api("/app/api/fill-mask", text, controller.signal)).masks);
    }
    showError("");
  } catch (error) {
    if (error.name !== "AbortError") {
      showError(error.message);
      // Busy: try the same sentence again when the server says (unless the sentence changes first, which
      // cancels this timer). The wait is at most a minute, whatever the header says.
      if (error.retryAfter && inFlight === controller) {
        clearTimeout(timer);
        timer = setTimeout(ask, Math.min(error.retryAfter, 60) * 1000);
      }
    }
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      app.removeAttribute("aria-busy");
    }
  }
}

function changed() {
  renderChips();
  clearTimeout(timer);
  timer = setTimeout(ask, DEBOUNCE_MS);
}

function show(name) {
  tab = name;
  for (const button of document.querySelectorAll("[data-tab]")) {
    const selected = button.dataset.tab === name;
    button.setAttribute("aria-selected", String(selected));
    document.getElementById(`panel-${button.dataset.tab}`).hidden = !selected;
  }
  if (name !== "experiments") changed();
}

for (const button of document.querySelectorAll("[data-tab]")) {
  button.addEventListener("click", () => show(button.dataset.tab));
}

for (const { label, sentence } of JSON.parse(app.dataset.experiments || "[]")) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", () => {
    input.value = sentence;
    show("try");
  });
  document.getElementById("experiments").append(button);
}

input.addEventListener("input", changed);
changed();
