// Starts what the browser tests run against, the way tests/support/workers.rs does for the Rust
// end-to-end tests: the Worker built once, a D1 migrated and seeded into a fresh directory,
// `wrangler dev` on a free port with every variable passed as --var (so a developer's .dev.vars
// never leaks in), and a fake Groq on 127.0.0.1 (`cargo run --example fake_upstream`).
// `node tests/browser/stack.mjs` starts it by hand and prints the URL.
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const WRANGLER = join(ROOT, "node_modules", ".bin", "wrangler");
const ENV = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  NO_COLOR: "1",
};

/** The answer the fake Groq gives: accents and punctuation, to exercise the board's folding. */
export const FAKE_ANSWER = "Sí, el destino sonríe: 7 lunas.";

/** Every variable the Worker reads, read from `core::config::VARIABLES` (the list the Rust tests use). */
const ALL_VARS = (() => {
  const source = readFileSync(join(ROOT, "src", "core", "config.rs"), "utf8");
  const list = source.match(/pub const VARIABLES: &\[&str\] = &\[([^\]]*)\]/);
  if (!list) throw new Error("core::config::VARIABLES not found in src/core/config.rs");
  return [...list[1].matchAll(/"([A-Z0-9_]+)"/g)].map((m) => m[1]);
})();

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Runs a setup command quietly; its output is shown only when it fails. */
function run(command, args, options = {}) {
  try {
    execFileSync(command, args, { cwd: ROOT, env: { ...ENV, ...options.env }, stdio: "pipe", maxBuffer: 1 << 26 });
  } catch (error) {
    process.stderr.write(`${command} ${args.join(" ")} failed:\n${error.stdout}${error.stderr}`);
    throw error;
  }
}

/** Starts a process in its own group; resolves with it and the first line it prints. */
function startProcess(command, args, { log, env } = {}) {
  const out = log ? openSync(log, "a") : "ignore";
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...ENV, ...env },
    detached: true, // its own process group, so stopping it stops its children (workerd)
    stdio: ["ignore", log ? out : "pipe", log ? out : "inherit"],
  });
  return child;
}

function firstLine(child) {
  return new Promise((resolve, reject) => {
    let buffered = "";
    child.stdout.on("data", (chunk) => {
      buffered += chunk;
      const end = buffered.indexOf("\n");
      if (end >= 0) resolve(buffered.slice(0, end).trim());
    });
    child.once("exit", (code) => reject(new Error(`exited with ${code} before printing its URL`)));
  });
}

/** Stops a process group: TERM, then KILL after 5 s. */
export async function stopGroup(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }, 5000);
  await exited;
  clearTimeout(timer);
}

async function waitReady(base, log, child) {
  const started = Date.now();
  while (Date.now() - started < 90000) {
    if (child.exitCode !== null) break;
    try {
      const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2000) });
      if (response.status === 200) return;
    } catch {
      // not up yet
    }
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  throw new Error(`wrangler dev did not answer at ${base}:\n${readFileSync(log, "utf8")}`);
}

/** A port that refuses connections (bound, then released). */
export async function refusedUrl() {
  return `http://127.0.0.1:${await freePort()}`;
}

/**
 * Builds and starts the stack. Returns { base, groq, stopGroq(), stop() }: the Worker's URL, the
 * fake Groq's URL, and functions to stop the fake Groq (to take the LLMs down) and everything.
 */
export async function startStack() {
  if (process.env.OUIJA_SKIP_BUILD !== "1") run("bash", ["scripts/build-worker.sh"]);
  run("cargo", ["build", "--quiet", "--example", "fake_upstream"]);
  mkdirSync(join(ROOT, "target", "e2e"), { recursive: true });
  const dir = mkdtempSync(join(ROOT, "target", "e2e", "browser-"));
  run(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", dir], { env: { CI: "true" } });

  const fakeGroq = startProcess(join(ROOT, "target", "debug", "examples", "fake_upstream"), ["groq", "40", FAKE_ANSWER, "--stream-gap", "150"]);
  const groq = await firstLine(fakeGroq);
  const vars = {
    GROQ_API_KEY: "browser-test-key",
    GROQ_BASE_URL: groq,
    GROQ_TIMEOUT_MS: "1500",
    OLLAMA_URL: await refusedUrl(),
    OLLAMA_TIMEOUT_MS: "500",
    ASK_BUDGET_MS: "4000",
    ENVIRONMENT: "browser-test",
    // One browser and schemathesis ask many times from one address: no per-asker limits, no memory.
    ASK_LIMITS: "off",
    MEMORY_TTL_S: "0",
  };
  // wrangler.toml without its custom build (see scripts/wrangler-test-config.sh): one workerd start.
  const config = join(dir, "wrangler.toml");
  run("bash", ["scripts/wrangler-test-config.sh", config]);
  const port = await freePort();
  const log = join(dir, "wrangler.log");
  const args = ["dev", "--config", config, "--ip", "127.0.0.1", "--port", String(port),
    "--inspector-port", String(await freePort()), "--persist-to", dir, "--show-interactive-dev-session=false"];
  for (const name of ALL_VARS) args.push("--var", `${name}:${vars[name] ?? ""}`);
  const wrangler = startProcess(WRANGLER, args, { log, env: { OUIJA_SKIP_BUILD: "1" } });
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitReady(base, log, wrangler);
  } catch (error) {
    await stopGroup(wrangler);
    await stopGroup(fakeGroq);
    throw error;
  }
  return {
    base,
    groq,
    log,
    stopGroq: () => stopGroup(fakeGroq),
    async stop() {
      await stopGroup(wrangler);
      await stopGroup(fakeGroq);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// By hand: start the stack, print the URL, stop on Ctrl-C.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const stack = await startStack();
  console.log(stack.base);
  const stop = async () => {
    await stack.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
