-- Schema of the fallback database: canned answers, consultation records, provider state.
-- Plain SQLite so the same file initialises Cloudflare D1 and Spin's SQLite.

-- Canned answers: the last link of the chain, always available.
CREATE TABLE fallback_responses (
  id INTEGER PRIMARY KEY,
  language TEXT NOT NULL CHECK (language IN ('es', 'en')),
  personality TEXT NOT NULL CHECK (personality IN ('wise', 'cryptic', 'dark', 'playful')),
  category TEXT NOT NULL CHECK (category IN ('love', 'career', 'health', 'family', 'death', 'future',
                                              'money', 'spirituality', 'general')),
  text TEXT NOT NULL CHECK (length(text) BETWEEN 1 AND 200),
  -- Space-separated words, lower case, accents folded: matched against the question's words.
  keywords TEXT NOT NULL DEFAULT '',
  -- When this answer was last given (ms since epoch), so recent answers are avoided.
  last_served_at INTEGER NOT NULL DEFAULT 0,
  served_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX fallback_responses_pick ON fallback_responses (language, personality, category);

-- One row per consultation. The question's text is never stored.
CREATE TABLE consultations (
  id TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  source TEXT NOT NULL CHECK (source IN ('groq', 'ollama', 'sqlite')),
  latency_ms INTEGER NOT NULL,
  language TEXT NOT NULL,
  personality TEXT NOT NULL,
  category TEXT NOT NULL,
  -- Per-provider outcome: ok, skipped_*, cool_down, breaker_open, budget_spent, rate_limited,
  -- timeout, http_error, network_error, junk.
  groq_outcome TEXT NOT NULL,
  groq_latency_ms INTEGER,
  ollama_outcome TEXT NOT NULL,
  ollama_latency_ms INTEGER,
  fallback_id INTEGER
);
CREATE INDEX consultations_created_at ON consultations (created_at);

-- Shared provider state, so every isolate and instance respects a cool-down or an open breaker.
CREATE TABLE provider_state (
  provider TEXT PRIMARY KEY CHECK (provider IN ('groq', 'ollama')),
  cool_down_until INTEGER NOT NULL DEFAULT 0,
  consecutive_failures INTEGER NOT NULL DEFAULT 0,
  breaker_open_until INTEGER NOT NULL DEFAULT 0,
  last_failure TEXT,
  updated_at INTEGER NOT NULL DEFAULT 0
);
INSERT INTO provider_state (provider) VALUES ('groq'), ('ollama');

-- Requests spent per provider per minute window (the edge's own Groq per-minute budget).
CREATE TABLE rate_windows (
  provider TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (provider, window_start)
);
