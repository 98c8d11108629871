# Ouija Virtual: every command a person can run here. `make help` lists them.
# Tools are installed once, at pinned versions, outside the clone (TOOLS), and skipped when present.
SHELL := /bin/bash
TOOLS ?= $(HOME)/.cache/ouija-tools
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3; exit}' Cargo.lock)
WRANGLER := node_modules/.bin/wrangler
PORT ?= 8787
# Browser and API tests (tests/browser): Debian's chromium, a Python venv with schemathesis.
CHROMIUM ?= /usr/bin/chromium
VENV_API ?= $(TOOLS)/venv-api
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export WASM_BINDGEN_BIN := $(TOOLS)/bin/wasm-bindgen
export OUIJA_TOOLS := $(TOOLS)
# wrangler offline and quiet: no telemetry, no request.cf fetch, no update banner in CI logs.
export WRANGLER_SEND_METRICS := false
export CLOUDFLARE_CF_FETCH_ENABLED := false

.PHONY: help dev test tools rust-targets db build lint test-edge test-proxy bench clean test-pages page-tools openapi vendor spin-build spin-dev

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

dev: tools db ## Migrate and seed the local D1, then serve the board and API on http://localhost:8787 (no keys needed)
	$(WRANGLER) dev --ip 127.0.0.1 --port $(PORT)

test: tools lint test-edge test-pages test-proxy ## Every lint and test: core, Worker end to end, pages in Chromium, ollama-proxy

tools: rust-targets node_modules $(WASM_BINDGEN_BIN).$(WASM_BINDGEN_VERSION) ## Install pinned tools (rust targets, wasm-bindgen-cli, wrangler)

# Every target any step builds for: rust-toolchain.toml's `targets` (rustup does not install them by
# itself where RUSTUP_AUTO_INSTALL=0) plus the proxy image's static musl build (bench, image-test).
RUST_TARGETS := $(shell sed -n 's/^targets *= *\[\(.*\)\]/\1/p' rust-toolchain.toml | tr -d '",') x86_64-unknown-linux-musl
rust-targets: ## Add the rustup targets the builds need (wasm32-unknown-unknown, wasm32-wasip2, x86_64-unknown-linux-musl)
	@installed="$$(rustup target list --installed)"; missing=""; \
	for t in $(RUST_TARGETS); do grep -qx "$$t" <<<"$$installed" || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then echo "rustup target add$$missing"; rustup target add $$missing; fi

# npm ci when package-lock.json changed since the last install.
node_modules: package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

# wasm-bindgen-cli must match the wasm-bindgen library in Cargo.lock exactly. Its own lock file
# wants a webpki-roots version the registry lacks, so it is installed without --locked.
$(WASM_BINDGEN_BIN).$(WASM_BINDGEN_VERSION):
	@if [ "$$($(WASM_BINDGEN_BIN) --version 2>/dev/null)" != "wasm-bindgen $(WASM_BINDGEN_VERSION)" ]; then \
		echo "installing wasm-bindgen-cli $(WASM_BINDGEN_VERSION) into $(TOOLS) (one time, ~3 min)"; \
		cargo install --quiet --root $(TOOLS) wasm-bindgen-cli --version $(WASM_BINDGEN_VERSION); \
	fi
	@touch $@

db: node_modules ## Apply d1-migrations/ (schema + seed) to the local D1
	CI=true $(WRANGLER) d1 migrations apply DB --local

build: tools ## Build the release Worker into build/ (wasm + glue + entry)
	bash scripts/build-worker.sh

lint: rust-targets ## rustfmt check and clippy (warnings are errors) for native and wasm targets
	cargo fmt --check
	cargo clippy --locked --all-targets -p ouija-edge -p ouija-harness -- -D warnings
	cargo clippy --locked --release --target wasm32-unknown-unknown --features cloudflare -- -D warnings
	cargo clippy --locked --release --target wasm32-wasip2 --features spin -- -D warnings
	bash spin-host/build.sh lint

test-edge: tools spin-build ## Core unit tests and end-to-end tests against wrangler dev and spin-host with fake upstreams
	cargo test --locked -p ouija-edge -p ouija-harness

spin-build: rust-targets ## Build the Spin component and the spin-host test runtime (cached) into target/spin/
	bash spin-host/build.sh

# SPIN_STORE=key_value serves it on Spin's key-value store instead (as on Akamai Functions: no SQLite).
SPIN_STORE ?= sqlite
spin-dev: spin-build ## Serve the Spin component on http://127.0.0.1:3000 under spin-host (SQLite in .spin/, no keys needed; SPIN_STORE=key_value for the key-value store)
	@mkdir -p .spin
	@if [ "$(SPIN_STORE)" = key_value ]; then \
	    set -x; SPIN_VARIABLE_STORE=key_value exec target/spin/spin-host --listen 127.0.0.1:3000 --key-value .spin/sqlite_key_value.db target/spin/ouija_edge.wasm; \
	else \
	    set -x; exec target/spin/spin-host --listen 127.0.0.1:3000 --sqlite .spin/sqlite_db.db --migrations d1-migrations target/spin/ouija_edge.wasm; \
	fi

test-proxy: rust-targets ## ollama-proxy's tests and lints (see ollama-proxy/Makefile)
	$(MAKE) -C ollama-proxy test

# --- smoke tests and workflows (.github/, smoke/) ---------------------------------------------
CI_VENV ?= $(TOOLS)/ci-venv
export CI_VENV
.PHONY: smoke test-smoke test-workflows

# The smoke program and the workflow checks are part of every `make test`, after the targets above.
test: test-smoke test-workflows

smoke: ## Smoke-test a deployment: make smoke URL=https://... [PROXY_URL=https://... PROXY_KEY=...] [SMOKE_ARGS=...]
	@if [ -z "$(URL)" ]; then echo "usage: make smoke URL=https://... [PROXY_URL=https://... PROXY_KEY=...] [SMOKE_ARGS=...]" >&2; exit 2; fi
	SMOKE_PROXY_KEY="$${PROXY_KEY:-$${SMOKE_PROXY_KEY:-}}" cargo run --quiet --locked --manifest-path smoke/Cargo.toml -- \
		--url "$(URL)" --proxy-url "$(PROXY_URL)" $(SMOKE_ARGS)

test-smoke: tools spin-build ## The smoke program: unit tests, then against local wrangler dev + ollama-proxy and spin-host (passes; fails on a missing database or a wrong key)
	bash scripts/build-worker.sh
	$(MAKE) -C ollama-proxy build
	cargo fmt --check --manifest-path smoke/Cargo.toml
	cargo clippy --locked --all-targets --manifest-path smoke/Cargo.toml -- -D warnings
	cargo test --locked --manifest-path smoke/Cargo.toml

test-workflows: ## actionlint (+ shellcheck) on every workflow; workflows name only jobs, files and targets that exist
	sh .github/scripts/tools.sh
	PATH="$(CI_VENV)/bin:$$PATH" actionlint
	$(CI_VENV)/bin/python -m unittest discover -s .github/scripts -p 'test_*.py'

test-pages: tools page-tools ## Pages in headless Chromium, the OpenAPI document (fresh, valid) and schemathesis, against wrangler dev
	cargo clippy --locked --all-targets --features openapi,pages -- -D warnings
	cargo test --locked --features openapi,pages --lib -- core::pages core::openapi
	cargo test --locked --features openapi,pages --test openapi
	CHROMIUM=$(CHROMIUM) OUIJA_API_VENV=$(VENV_API) node --test --test-reporter=spec tests/browser/pages.test.mjs

page-tools: $(CHROMIUM) $(VENV_API)/.installed ## Install the browser tests' tools: Debian chromium, a venv with schemathesis (pinned)

$(CHROMIUM):
	$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(VENV_API)/.installed: tests/browser/requirements.txt
	python3 -m venv $(VENV_API)
	$(VENV_API)/bin/pip install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
	@touch $@

openapi: ## Regenerate public/api/openapi.json from the code's types (commit it)
	OUIJA_BLESS=1 cargo test --locked --features openapi,pages --test openapi

vendor: node_modules ## Copy Swagger UI from the pinned swagger-ui-dist npm package into public/vendor/
	cp node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui-bundle.js.LICENSE.txt,swagger-ui.css,LICENSE,NOTICE} public/vendor/swagger-ui/

.PHONY: fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := ask_body clean classify provider_replies stream_replies
# cargo-fuzz needs a nightly toolchain (installed here when missing) and a pinned cargo-fuzz.
CARGO_FUZZ_VERSION := 0.13.2
fuzz: ## Fuzz the edge's input handling (fuzz/) for FUZZ_SECONDS (60) per target, then ollama-proxy's targets if it has any
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@[ "$$($(TOOLS)/bin/cargo-fuzz --version 2>/dev/null)" = "cargo-fuzz $(CARGO_FUZZ_VERSION)" ] || \
		cargo install --locked cargo-fuzz --version $(CARGO_FUZZ_VERSION) --root "$(TOOLS)"
	@# New inputs go to fuzz/target/corpus (ignored); fuzz/corpus holds the committed seeds and reproducers.
	for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$target && \
		(cd fuzz && PATH="$(TOOLS)/bin:$$PATH" cargo +nightly fuzz run $$target \
			target/corpus/$$target corpus/$$target -- -max_total_time=$(FUZZ_SECONDS)) || exit 1; \
	done
	if grep -q '^fuzz:' ollama-proxy/Makefile; then $(MAKE) -C ollama-proxy fuzz FUZZ_SECONDS=$(FUZZ_SECONDS); fi

bench: build $(CHROMIUM) ## Benchmarks: edge sqlite path vs hello world, chain overhead, wasm size; Spin vs Workers; D1 cost per ask; streaming (TTFT, planchette)
	bash bench/edge.sh
	bash bench/spin-vs-workers.sh
	bash bench/d1-cost.sh
	CHROMIUM=$(CHROMIUM) bash bench/stream.sh

.PHONY: soak
SOAK_SECONDS ?= 600
soak: build spin-build ## Soak with faults on 127.0.0.1 for SOAK_SECONDS (600): both runtimes, ollama-proxy, attacks; bench/results/soak.md
	SOAK_SECONDS=$(SOAK_SECONDS) bash bench/soak.sh

clean: ## Remove build output (keeps installed tools)
	rm -rf build target/e2e .wrangler
