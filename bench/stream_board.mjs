// The board in headless Chromium (#12), run by bench/stream.sh: the time from clicking Ask to the
// planchette's first move, asking as the board does (streamed) and as a JSON ask (the request's
// Accept header turned to application/json on its way out, on the page of an edge whose fake Groq
// answers whole when the stream would have ended), with when the first token (or the whole JSON
// answer) reached the page. Alternates the two ways; each ask is a fresh page, closed once its
// answer has arrived. Only 127.0.0.1 is reached. Prints a markdown table.
//
// usage: node bench/stream_board.mjs STREAMED_EDGE_URL JSON_EDGE_URL ASKS
import { chromium } from "playwright-core";

const [streamedBase, jsonBase, asks] = [process.argv[2], process.argv[3], Number(process.argv[4] || 10)];
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

/** Runs in the page before its scripts: the click on Ask, and when the answer's bytes arrive. */
function instrument() {
  const bench = (window.bench = { askedAt: null, tokenAt: null, answerAt: null, movedAt: null });
  window.addEventListener("click", (event) => {
    if (!bench.askedAt && event.target.closest?.("#ask-button")) bench.askedAt = performance.now();
  }, true);
  const fetch = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch(...args);
    const [forPage, copy] = response.body.tee();
    const streamed = /^text\/event-stream/.test(response.headers.get("content-type") || "");
    (async () => {
      const reader = copy.getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        text += decoder.decode(read.value, { stream: true });
        if (streamed && !bench.tokenAt && /^event: ?token\r?$/m.test(text)) bench.tokenAt = performance.now();
      }
      bench.answerAt = performance.now();
      if (!streamed) bench.tokenAt = bench.answerAt; // the JSON ask's first word comes with its last
    })();
    return new Response(forPage, response);
  };
}

function percentile(values, p) {
  const ordered = [...values].sort((a, b) => a - b);
  return ordered[Math.max(0, Math.ceil((ordered.length * p) / 100) - 1)];
}

const cell = (values) => `${percentile(values, 50).toFixed(0)} / ${percentile(values, 95).toFixed(0)}`;

async function askOnce(context, streaming, i) {
  const page = await context.newPage();
  try {
    await page.goto(`${streaming ? streamedBase : jsonBase}/`);
    await page.waitForSelector("body[data-ready]");
    await page.evaluate(() => {
      const planchette = document.getElementById("planchette");
      const rest = planchette.getAttribute("transform");
      new MutationObserver(() => {
        if (!window.bench.movedAt && planchette.getAttribute("transform") !== rest) window.bench.movedAt = performance.now();
      }).observe(planchette, { attributes: true, attributeFilter: ["transform"] });
    });
    await page.fill("#question", `Will the board answer ask ${i} (${streaming ? "streamed" : "JSON"})?`);
    await page.click("#ask-button");
    await page.waitForFunction(() => window.bench.movedAt && window.bench.answerAt, null, { timeout: 20000 });
    const b = await page.evaluate(() => window.bench);
    return { token: b.tokenAt - b.askedAt, moved: b.movedAt - b.askedAt, lag: b.movedAt - b.tokenAt };
  } finally {
    await page.close();
  }
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, locale: "en-US" });
  let json = false; // whether the ask being sent now is to be a JSON one
  await context.route("**/*", (route) => {
    const request = route.request();
    const url = new URL(request.url());
    if (url.hostname !== "127.0.0.1") return route.abort("blockedbyclient");
    if (!(url.pathname === "/api/ouija" && request.method() === "POST")) return route.continue();
    // Both ways pass through the same interception, so it costs them alike.
    const headers = { ...request.headers() };
    if (json) headers.accept = "application/json";
    return route.continue({ headers });
  });
  await context.addInitScript(instrument);
  const results = { streamed: [], json: [] };
  // Warm-ups: the first page load and each Worker's first ask.
  await askOnce(context, true, -1);
  json = true;
  await askOnce(context, false, -1);
  for (let i = 0; i < asks; i++) {
    for (const streaming of [true, false]) {
      json = !streaming;
      results[streaming ? "streamed" : "json"].push(await askOnce(context, streaming, i));
    }
  }
  await context.close();
  const row = (name, r, token) =>
    `| ${name} | ${r.length} | ${cell(r.map((x) => x.token))} | ${cell(r.map((x) => x.moved))} | ${token ? cell(r.map((x) => x.lag)) : "–"} |`;
  console.log("| Board asks | Asks | Ask → first token reaches the page, p50 / p95 (ms) | Ask → planchette's first move, p50 / p95 (ms) | First move − first token, p50 / p95 (ms) |");
  console.log("|---|---:|---:|---:|---:|");
  console.log(row("Streamed (text/event-stream)", results.streamed, true));
  console.log(row("JSON (whole answer; its token column is when the JSON arrived)", results.json, true));
} finally {
  await browser.close();
}
