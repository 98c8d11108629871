// Entry of the Worker: hands each request to the Rust `fetch` handler (src/platform/cloudflare.rs).
// A trimmed version of worker-build's shim: if the wasm instance traps (a Rust panic aborts), the
// next request gets a fresh instance instead of a poisoned one.
import { WorkerEntrypoint } from "cloudflare:workers";
import * as wasm from "./worker/index.js";

let poisoned = false;

export default class OuijaWorker extends WorkerEntrypoint {
  async fetch(request) {
    if (poisoned) {
      wasm.__wbg_reset_state();
      poisoned = false;
    }
    try {
      return await wasm.fetch(request, this.env, this.ctx);
    } catch (error) {
      if (error instanceof WebAssembly.RuntimeError) poisoned = true;
      throw error;
    }
  }
}
