// The Ouija board: lays the letters out on two arches, asks POST /api/ouija, and glides the
// planchette letter to letter to spell the answer. No framework, no external requests.
"use strict";

const MAX_QUESTION_CHARS = 500; // same limit as the API (characters, not bytes)
const ASK_TIMEOUT_MS = 20000;
const REST = { x: 500, y: 488 };

const STRINGS = {
  es: {
    title: "Ouija Virtual",
    boardLabel: "Tablero ouija: letras de la A a la Z, números, SÍ, NO y ADIÓS",
    askHeading: "Haz tu pregunta",
    questionLabel: "Tu pregunta a los espíritus",
    placeholder: "¿Encontraré el amor este año?",
    ask: "Preguntar",
    asking: "Los espíritus se acercan…",
    yes: "SÍ",
    goodbye: "ADIÓS",
    dashboard: "Panel",
    docs: "API",
    empty: "Escribe una pregunta antes de consultar a los espíritus.",
    tooLong: (n) => `Tu pregunta tiene ${n} caracteres; el límite es ${MAX_QUESTION_CHARS}. Acórtala un poco.`,
    offline: "No hay conexión: los espíritus no pueden oírte. Revisa tu red e inténtalo de nuevo.",
    network: "No se pudo contactar con los espíritus (fallo de red). Revisa tu conexión e inténtalo de nuevo.",
    timeout: "Los espíritus tardan demasiado en responder. Inténtalo de nuevo en unos segundos.",
    unavailable: "Los espíritus no pueden responder ahora. Inténtalo de nuevo en unos segundos.",
    rejected: (detail) => `La pregunta no fue aceptada: ${detail}`,
    failed: (status) => `Algo salió mal (HTTP ${status}). Inténtalo de nuevo.`,
    source: (source, ms) => `fuente: ${source} · ${ms} ms`,
    answerLabel: "Respuesta de los espíritus:",
  },
  en: {
    title: "Ouija Virtual",
    boardLabel: "Ouija board: letters A to Z, numbers, YES, NO and GOODBYE",
    askHeading: "Ask your question",
    questionLabel: "Your question for the spirits",
    placeholder: "Will I find love this year?",
    ask: "Ask",
    asking: "The spirits draw near…",
    yes: "YES",
    goodbye: "GOODBYE",
    dashboard: "Dashboard",
    docs: "API",
    empty: "Type a question before you consult the spirits.",
    tooLong: (n) => `Your question is ${n} characters long; the limit is ${MAX_QUESTION_CHARS}. Please shorten it.`,
    offline: "You are offline: the spirits cannot hear you. Check your network and try again.",
    network: "The spirits could not be reached (network error). Check your connection and try again.",
    timeout: "The spirits are taking too long to answer. Try again in a few seconds.",
    unavailable: "The spirits cannot answer right now. Try again in a few seconds.",
    rejected: (detail) => `The question was not accepted: ${detail}`,
    failed: (status) => `Something went wrong (HTTP ${status}). Please try again.`,
    source: (source, ms) => `source: ${source} · ${ms} ms`,
    answerLabel: "The spirits answer:",
  },
};

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

let language = pickLanguage();
let keys = new Map(); // board key ("A", "7", "YES") → { x, y, angle, el }
let spelling = 0; // bumped to cancel a spelling in progress
let here = { ...REST };

function pickLanguage() {
  const saved = safeStorage("get", "ouija.language");
  if (saved === "es" || saved === "en") return saved;
  const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "es"];
  for (const tag of preferred) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base === "es" || base === "en") return base;
  }
  return "es";
}

function safeStorage(op, key, value) {
  try {
    return op === "get" ? localStorage.getItem(key) : localStorage.setItem(key, value);
  } catch {
    return null; // storage disabled: the choice just is not remembered
  }
}

function t(key, ...args) {
  const entry = STRINGS[language][key];
  return typeof entry === "function" ? entry(...args) : entry;
}

function applyLanguage() {
  document.documentElement.lang = language;
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.setAttribute("aria-pressed", String(button.dataset.lang === language));
  }
  updateCounter();
}

// Letters sit on two arches (A–M above N–Z), digits on a straight row, like a 1890s board.
function layOutBoard() {
  const group = $("letters");
  arch(group, "ABCDEFGHIJKLM", { cx: 500, cy: 1239, r: 979, half: 410 });
  arch(group, "NOPQRSTUVWXYZ", { cx: 500, cy: 1332, r: 942, half: 380 });
  "1234567890".split("").forEach((digit, i) => {
    place(group, digit, 230 + i * 60, 540, 0, "digit");
  });
  for (const el of document.querySelectorAll("#board .word")) {
    keys.set(el.dataset.key, { x: Number(el.getAttribute("x")), y: Number(el.getAttribute("y")), angle: 0, el });
  }
}

function arch(group, letters, { cx, cy, r, half }) {
  const span = Math.asin(half / r);
  letters.split("").forEach((letter, i) => {
    const angle = -span + (2 * span * i) / (letters.length - 1);
    const x = cx + r * Math.sin(angle);
    const y = cy - r * Math.cos(angle);
    place(group, letter, x, y, (angle * 180) / Math.PI, "glyph");
  });
}

function place(group, key, x, y, angle, kind) {
  const el = document.createElementNS(SVG_NS, "text");
  el.textContent = key;
  el.setAttribute("x", x.toFixed(1));
  el.setAttribute("y", y.toFixed(1));
  el.setAttribute("class", kind);
  el.setAttribute("data-key", key);
  if (angle) el.setAttribute("transform", `rotate(${angle.toFixed(2)} ${x.toFixed(1)} ${y.toFixed(1)})`);
  group.appendChild(el);
  keys.set(key, { x, y, angle, el });
}

const reducedMotion = () => window.matchMedia("(prefers-reduced-motion: reduce)").matches;

/** The letters the planchette visits for `text`: accents folded, only A–Z and 0–9. */
function boardLetters(text) {
  return text.normalize("NFD").replace(/[\u0300-\u036f]/g, "").toUpperCase().replace(/[^A-Z0-9]/g, "");
}

function setPlanchette(x, y, angle) {
  $("planchette").setAttribute("transform", `translate(${x.toFixed(1)} ${y.toFixed(1)}) rotate(${angle.toFixed(1)})`);
  here = { x, y, angle };
}

/** Glides the planchette to (x, y); resolves when it arrives (at once under reduced motion). */
function glide(x, y, angle, duration) {
  const planchette = $("planchette");
  if (reducedMotion() || duration <= 0) {
    setPlanchette(x, y, angle);
    return Promise.resolve();
  }
  const from = here;
  const token = spelling;
  return new Promise((resolve) => {
    const start = performance.now();
    const step = (now) => {
      if (token !== spelling) return resolve(); // a new question took over the planchette
      const p = Math.min(1, (now - start) / duration);
      const e = p < 0.5 ? 4 * p * p * p : 1 - Math.pow(-2 * p + 2, 3) / 2; // ease in-out cubic
      const lift = Math.sin(Math.PI * p) * 6; // a slight drift off the straight line, like a hand
      setPlanchette(from.x + (x - from.x) * e, from.y + (y - from.y) * e - lift, from.angle + (angle - from.angle) * e);
      if (p < 1 && planchette.isConnected) requestAnimationFrame(step);
      else resolve();
    };
    requestAnimationFrame(step);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Spells `text` on the board; the transcript shows each letter as the planchette reaches it. */
async function spell(text) {
  const token = ++spelling;
  const letters = boardLetters(text);
  const spelled = $("spelled");
  spelled.dataset.state = "spelling";
  spelled.dataset.spelled = "";
  spelled.textContent = "";
  const planchette = $("planchette");
  planchette.removeAttribute("data-at");

  if (reducedMotion()) {
    spelled.dataset.spelled = letters;
    spelled.textContent = text.split(/\s+/).map(boardLetters).filter(Boolean).join(" ");
  } else {
    // The whole answer takes about 10 s: slower for short answers, never a blur for long ones.
    const perLetter = Math.max(110, Math.min(420, 10000 / Math.max(1, letters.length)));
    let shown = "";
    for (const ch of text) {
      if (token !== spelling) return false;
      const key = boardLetters(ch);
      if (!key) {
        if (/\s/.test(ch) && shown && !shown.endsWith(" ")) shown += " ";
        continue;
      }
      for (const part of key) {
        const target = keys.get(part);
        await glide(target.x, target.y, target.angle * 0.5 + (Math.random() * 8 - 4), perLetter * 0.72);
        if (token !== spelling) return false;
        planchette.dataset.at = part;
        target.el.classList.add("lit");
        shown += part;
        spelled.dataset.spelled += part;
        spelled.textContent = shown;
        await sleep(perLetter * 0.28);
        target.el.classList.remove("lit");
      }
    }
  }
  if (token !== spelling) return false;
  await glide(REST.x, REST.y, 0, 700);
  spelled.dataset.state = "done";
  return true;
}

function showMessage(text) {
  const message = $("message");
  message.textContent = text;
  message.hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").textContent = "";
  $("question").removeAttribute("aria-invalid");
}

function questionLength() {
  return Array.from($("question").value.trim()).length;
}

function updateCounter() {
  const n = questionLength();
  const counter = $("counter");
  counter.textContent = `${n}/${MAX_QUESTION_CHARS}`;
  counter.classList.toggle("over", n > MAX_QUESTION_CHARS);
}

function resetReading() {
  spelling++;
  const spelled = $("spelled");
  spelled.dataset.state = "idle";
  spelled.dataset.spelled = "";
  spelled.textContent = "";
  $("answer").hidden = true;
  $("source").hidden = true;
}

/** Reads a problem+json error into a message the person can act on. */
async function describeProblem(response) {
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    // not JSON: fall back to the status
  }
  if (response.status === 503) return t("unavailable");
  if (response.status === 400 || response.status === 413) return t("rejected", problem.detail || response.statusText);
  return t("failed", response.status);
}

async function ask(event) {
  event.preventDefault();
  clearMessage();
  const question = $("question").value.trim();
  const length = Array.from(question).length;
  if (length === 0) return invalid(t("empty"));
  if (length > MAX_QUESTION_CHARS) return invalid(t("tooLong", length));
  if (navigator.onLine === false) return showMessage(t("offline"));

  resetReading();
  const button = $("ask-button");
  button.disabled = true;
  $("spelled").textContent = t("asking");
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ASK_TIMEOUT_MS);
  let answer;
  try {
    const response = await fetch("/api/ouija", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ question, language }),
      signal: controller.signal,
    });
    if (!response.ok) {
      $("spelled").textContent = "";
      return showMessage(await describeProblem(response));
    }
    answer = await response.json();
  } catch (error) {
    $("spelled").textContent = "";
    return showMessage(error && error.name === "AbortError" ? t("timeout") : t("network"));
  } finally {
    clearTimeout(timer);
    button.disabled = false;
  }
  reveal(answer);
}

function invalid(text) {
  $("question").setAttribute("aria-invalid", "true");
  showMessage(text);
  $("question").focus();
}

async function reveal(answer) {
  const text = String(answer.answer || answer.response || "");
  const finished = await spell(text);
  if (!finished) return;
  const shown = $("answer");
  shown.textContent = text;
  shown.setAttribute("aria-label", `${t("answerLabel")} ${text}`);
  shown.hidden = false;
  const source = $("source");
  source.textContent = t("source", answer.source, answer.latency_ms);
  source.dataset.source = answer.source;
  source.hidden = false;
}

function switchLanguage(event) {
  const chosen = event.currentTarget.dataset.lang;
  if (chosen === language) return;
  language = chosen;
  safeStorage("set", "ouija.language", language);
  applyLanguage();
}

function start() {
  layOutBoard();
  setPlanchette(REST.x, REST.y, 0);
  applyLanguage();
  $("ask").addEventListener("submit", ask);
  $("question").addEventListener("input", () => {
    updateCounter();
    if (questionLength() <= MAX_QUESTION_CHARS) clearMessage();
  });
  for (const button of document.querySelectorAll("[data-lang]")) button.addEventListener("click", switchLanguage);
  document.body.dataset.ready = "true";
}

start();
