// The Ouija board: lays the letters out on two arches, asks POST /api/ouija for a stream of the
// answer (text/event-stream) and glides the planchette letter to letter as the answer arrives.
// An answer given whole as JSON (an older edge, a proxy that buffers) is spelled the same way.
// No framework, no external requests.
"use strict";

const MAX_QUESTION_CHARS = 500; // same limit as the API (characters, not bytes)
const ASK_TIMEOUT_MS = 20000;
const MAX_EVENT_CHARS = 64 * 1024; // one event of the answer's stream; anything longer is not ours
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
    broken: "La voz de los espíritus se cortó antes de terminar. Inténtalo de nuevo.",
    source: (source, ms) => `fuente: ${source} · ${ms} ms`,
    cut: "respuesta interrumpida",
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
    broken: "The spirits' voice broke off before the end. Please try again.",
    source: (source, ms) => `source: ${source} · ${ms} ms`,
    cut: "answer cut short",
    answerLabel: "The spirits answer:",
  },
};

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

let language = pickLanguage();
let keys = new Map(); // board key ("A", "7", "YES") → { x, y, angle, el }
let spelling = 0; // bumped to cancel a spelling in progress
let reading = null; // the answer being received and spelled (see startReading)
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

/** The transcript of `text` under reduced motion: its board letters, word by word. */
function transcript(text) {
  return text.split(/\s+/).map(boardLetters).filter(Boolean).join(" ");
}

/**
 * Starts a reading: text pushed into it is spelled in order, the planchette gliding letter to
 * letter while more arrives (letters queue), then resting once it is ended. `spelled` resolves
 * with whether it finished (false when a newer question took over). `cancel` is called when it is
 * stopped (it aborts the ask).
 */
function startReading(cancel = () => {}) {
  reading?.stop();
  const current = {
    token: ++spelling,
    text: "", // everything received so far
    letters: 0, // how many board letters `text` holds (paces the planchette)
    ended: false,
    broken: false, // the stream broke before its answer: spell what came, reveal nothing
    wake: () => {},
    push(more) {
      current.text += more;
      current.letters += boardLetters(more).length;
      current.wake();
    },
    end() {
      current.ended = true;
      current.wake();
    },
    stop() {
      cancel();
      if (current.token === spelling) spelling++;
      current.end();
    },
  };
  const spelled = $("spelled");
  spelled.dataset.state = "spelling";
  spelled.dataset.spelled = "";
  $("planchette").removeAttribute("data-at");
  current.spelled = spell(current);
  reading = current;
  return current;
}

/** Spells what `current` receives, as it arrives; the transcript shows each letter as it is reached. */
async function spell(current) {
  const { token } = current;
  const spelled = $("spelled");
  const planchette = $("planchette");
  let read = 0; // how much of current.text is spelled
  let shown = null; // the transcript, once the first text arrived ("asking…" until then)
  for (;;) {
    if (token !== spelling) return false;
    if (read === current.text.length) {
      if (current.ended) break;
      await new Promise((resolve) => (current.wake = resolve));
      continue;
    }
    if (shown === null) shown = "";
    if (reducedMotion()) {
      read = current.text.length;
      spelled.dataset.spelled = boardLetters(current.text);
      spelled.textContent = transcript(current.text);
      continue;
    }
    const ch = String.fromCodePoint(current.text.codePointAt(read));
    read += ch.length;
    spelled.textContent = shown;
    const key = boardLetters(ch);
    if (!key) {
      if (/\s/.test(ch) && shown && !shown.endsWith(" ")) shown += " ";
      continue;
    }
    // An answer takes about 10 s: slower for short answers, never a blur for long ones. The
    // length is what has arrived so far; for an answer given whole, the whole answer.
    const perLetter = Math.max(110, Math.min(420, 10000 / Math.max(1, current.letters)));
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
  if (shown === null) spelled.textContent = "";
  await glide(REST.x, REST.y, 0, 700);
  if (token !== spelling) return false;
  spelled.dataset.state = current.broken ? "broken" : "done";
  return !current.broken;
}

/** What of `whole` comes after the letters of `received`; null when `whole` does not begin with them. */
function restAfter(whole, received) {
  const want = boardLetters(received);
  let got = "";
  let at = 0;
  for (const ch of whole) {
    if (got.length >= want.length) break;
    got += boardLetters(ch);
    at += ch.length;
  }
  return got === want ? whole.slice(at) : null;
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

/**
 * Splits a text/event-stream into events as its bytes arrive: `push` each chunk, `end` after the
 * last. Lines end in \n, \r\n or \r (a \r at a chunk's end waits for the next chunk); an event is
 * dispatched at its blank line; a line or event past MAX_EVENT_CHARS is an error, not a buffer.
 */
function eventStream(onEvent) {
  const decoder = new TextDecoder(); // keeps a character split across chunks for the next one
  let buffer = "";
  let name = "";
  let data = null;
  const line = (text) => {
    if (text === "") {
      if (data !== null) onEvent(name || "message", data);
      name = "";
      data = null;
      return;
    }
    const colon = text.indexOf(":");
    if (colon === 0) return; // a comment (a keep-alive)
    const field = colon < 0 ? text : text.slice(0, colon);
    const value = colon < 0 ? "" : text.slice(text[colon + 1] === " " ? colon + 2 : colon + 1);
    if (field === "event") name = value;
    if (field === "data") data = data === null ? value : `${data}\n${value}`;
    if (data !== null && data.length > MAX_EVENT_CHARS) throw new Error("event too long");
  };
  const lines = (final) => {
    const cut = !final && buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
    const parts = buffer.slice(0, cut).split(/\r\n|\r|\n/);
    buffer = parts.pop() + buffer.slice(cut);
    parts.forEach(line);
    if (buffer.length > MAX_EVENT_CHARS) throw new Error("line too long");
  };
  return {
    push: (bytes) => {
      buffer += decoder.decode(bytes, { stream: true });
      lines(false);
    },
    end: () => {
      buffer += decoder.decode();
      lines(true);
    },
  };
}

/** Reads the answer's stream: each token is spelled as it arrives; resolves with `done`'s answer. */
async function readAnswerStream(response, current) {
  let answer = null;
  const parser = eventStream((name, data) => {
    if (name === "token") current.push(String(JSON.parse(data).text ?? ""));
    else if (name === "done") answer = JSON.parse(data);
  });
  const reader = response.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(value);
    if (answer) return answer; // `done` is the last event: the edge ends the stream after it
  }
  parser.end();
  if (!answer) throw new Error("the stream ended before its answer");
  return answer;
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
  const current = startReading(() => controller.abort());
  const timer = setTimeout(() => controller.abort(), ASK_TIMEOUT_MS);
  let answer;
  try {
    const response = await fetch("/api/ouija", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({ question, language }),
      signal: controller.signal,
    });
    if (!response.ok) {
      const problem = await describeProblem(response); // before abandon(), which aborts the body
      abandon(current);
      return showMessage(problem);
    }
    const streamed = /^text\/event-stream/i.test(response.headers.get("content-type") || "");
    answer = streamed ? await readAnswerStream(response, current) : await response.json();
  } catch (error) {
    if (current.token !== spelling) return; // a newer question took over
    const spoken = current.text.length > 0;
    if (spoken) {
      current.broken = true; // what was spoken is spelled, and no more
      current.end();
    } else {
      abandon(current);
    }
    const aborted = error && error.name === "AbortError";
    return showMessage(aborted ? t("timeout") : spoken ? t("broken") : t("network"));
  } finally {
    clearTimeout(timer);
    button.disabled = false;
  }
  finish(current, answer);
}

/** Gives up a reading before anything was spoken: the board is as before the question. */
function abandon(current) {
  current.stop();
  $("spelled").dataset.state = "idle";
  $("spelled").textContent = "";
}

/** Ends a reading with the answer: `answer` is the truth, whatever the tokens said before it. */
async function finish(current, answer) {
  const whole = String(answer.answer || answer.response || "");
  let rest = restAfter(whole, current.text);
  if (rest === null) {
    // The tokens and the answer disagree: spell the answer afresh.
    current = startReading();
    rest = whole;
  }
  // A broken stream closed by the spirit: what comes after the tokens is its closing.
  const closing = answer.complete === false && current.text ? rest.trim() : "";
  current.push(rest);
  current.end();
  if (await current.spelled) reveal(answer, whole, closing);
}

function invalid(text) {
  $("question").setAttribute("aria-invalid", "true");
  showMessage(text);
  $("question").focus();
}

function reveal(answer, text, closing) {
  const shown = $("answer");
  const spoken = closing ? text.slice(0, text.lastIndexOf(closing)) : text;
  shown.textContent = spoken;
  if (closing) {
    const ending = document.createElement("span");
    ending.className = "closing";
    ending.textContent = closing;
    shown.append(ending);
  }
  shown.dataset.complete = String(answer.complete !== false);
  shown.setAttribute("aria-label", `${t("answerLabel")} ${text}`);
  shown.hidden = false;
  const source = $("source");
  const cut = answer.complete === false ? ` · ${t("cut")}` : "";
  source.textContent = t("source", answer.source, answer.latency_ms) + cut;
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
