-- The ask fits the edge (#13): at most one D1 round trip before the first provider call, and at
-- most two rows written per ask (D1's free tier counts rows written, index entries included).
-- Before: the asker's windows, the per-minute slot, the consultation (+ two index entries), the
-- running total (a trigger) and the memory: up to 7 rows an ask. After: the asker's row (windows
-- and memory together) and the consultation (no index); the running totals are rolled up on about
-- one ask in 32; the Groq minute slot moves to the Workers rate-limiting binding where there is one.

-- 1. Consultations keyed by time, with no index but the rowid: `key` is created_at * 1024 plus a
-- random number below 1024 (unique, and in time order to the millisecond). The answer's text is
-- kept only when memory is on (the spirit's words, never the question), with the random `memo_tag`
-- the asker's row points at, so a memory can only find the consultation it was made for.
CREATE TABLE consultations_keyed (
  key INTEGER PRIMARY KEY,
  id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  source TEXT NOT NULL CHECK (source IN ('groq', 'ollama', 'sqlite')),
  latency_ms INTEGER NOT NULL,
  language TEXT NOT NULL,
  personality TEXT NOT NULL,
  category TEXT NOT NULL,
  groq_outcome TEXT NOT NULL,
  groq_latency_ms INTEGER,
  ollama_outcome TEXT NOT NULL,
  ollama_latency_ms INTEGER,
  fallback_id INTEGER,
  answer TEXT,
  memo_tag INTEGER
);
INSERT INTO consultations_keyed (key, id, created_at, source, latency_ms, language, personality, category,
    groq_outcome, groq_latency_ms, ollama_outcome, ollama_latency_ms, fallback_id)
  SELECT created_at * 1024 + rowid % 1024, id, created_at, source, latency_ms, language, personality,
    category, groq_outcome, groq_latency_ms, ollama_outcome, ollama_latency_ms, fallback_id
  FROM consultations;
-- Also drops the old table's indexes and its counting trigger (0003).
DROP TABLE consultations;
ALTER TABLE consultations_keyed RENAME TO consultations;

-- 2. Running totals, rolled up: consultation_counts (0003) holds every consultation up to
-- `upto` (a key); the dashboard adds the few after it. Moving `upto` forward is one UPDATE whose
-- trigger folds the consultations in between into the totals and the canned answers' served marks,
-- in that statement's transaction. A consultation written late (its key already at or below
-- `upto`) is counted by its insert's trigger instead: each is counted exactly once.
CREATE TABLE consultation_rollup (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  upto INTEGER NOT NULL
);
INSERT INTO consultation_rollup (id, upto) SELECT 1, COALESCE(MAX(key), 0) FROM consultations;

-- The canned answers' "last given" is a consultation key now (ms * 1024), so two given within
-- one millisecond still have an order.
ALTER TABLE fallback_responses RENAME COLUMN last_served_at TO last_served_key;
UPDATE fallback_responses SET last_served_key = last_served_key * 1024 WHERE last_served_key > 0;

CREATE TRIGGER consultations_rolled_up AFTER UPDATE OF upto ON consultation_rollup
BEGIN
  INSERT INTO consultation_counts (source, groq_outcome, ollama_outcome, n, first_at)
    SELECT source, groq_outcome, ollama_outcome, COUNT(*), MIN(created_at) FROM consultations
    WHERE key > OLD.upto AND key <= NEW.upto
    GROUP BY source, groq_outcome, ollama_outcome
    ON CONFLICT (source, groq_outcome, ollama_outcome)
    DO UPDATE SET n = n + excluded.n, first_at = MIN(first_at, excluded.first_at);
  UPDATE fallback_responses SET
    served_count = served_count + (SELECT COUNT(*) FROM consultations
      WHERE key > OLD.upto AND key <= NEW.upto AND fallback_id = fallback_responses.id),
    last_served_key = MAX(last_served_key, (SELECT MAX(key) FROM consultations
      WHERE key > OLD.upto AND key <= NEW.upto AND fallback_id = fallback_responses.id))
    WHERE id IN (SELECT fallback_id FROM consultations WHERE key > OLD.upto AND key <= NEW.upto);
END;

CREATE TRIGGER consultations_counted_late AFTER INSERT ON consultations
  WHEN NEW.key <= (SELECT upto FROM consultation_rollup)
BEGIN
  INSERT INTO consultation_counts (source, groq_outcome, ollama_outcome, n, first_at)
    VALUES (NEW.source, NEW.groq_outcome, NEW.ollama_outcome, 1, NEW.created_at)
    ON CONFLICT (source, groq_outcome, ollama_outcome)
    DO UPDATE SET n = n + 1, first_at = MIN(first_at, excluded.first_at);
  UPDATE fallback_responses SET served_count = served_count + 1,
    last_served_key = MAX(last_served_key, NEW.key) WHERE id = NEW.fallback_id;
END;

-- 3. The memory moves into the asker's row, which each ask writes anyway (its limit windows):
-- three slots, each the keyed hash of a question (as in 0005), when it was first asked, how many
-- times it was asked since, and the consultation (key and tag) whose answer is remembered. A
-- question not in a slot takes the slot asked longest ago: an asker's last three questions are
-- remembered. `last_ask` is a random number per ask, so the other statements of the ask's batch
-- can tell whether this ask was counted or refused.
ALTER TABLE askers ADD COLUMN memo1_question TEXT;
ALTER TABLE askers ADD COLUMN memo1_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE askers ADD COLUMN memo1_times INTEGER NOT NULL DEFAULT 0;
ALTER TABLE askers ADD COLUMN memo1_key INTEGER;
ALTER TABLE askers ADD COLUMN memo1_tag INTEGER;
ALTER TABLE askers ADD COLUMN memo2_question TEXT;
ALTER TABLE askers ADD COLUMN memo2_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE askers ADD COLUMN memo2_times INTEGER NOT NULL DEFAULT 0;
ALTER TABLE askers ADD COLUMN memo2_key INTEGER;
ALTER TABLE askers ADD COLUMN memo2_tag INTEGER;
ALTER TABLE askers ADD COLUMN memo3_question TEXT;
ALTER TABLE askers ADD COLUMN memo3_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE askers ADD COLUMN memo3_times INTEGER NOT NULL DEFAULT 0;
ALTER TABLE askers ADD COLUMN memo3_key INTEGER;
ALTER TABLE askers ADD COLUMN memo3_tag INTEGER;
ALTER TABLE askers ADD COLUMN last_ask INTEGER;
DROP TABLE memories;

-- 4. Counters that are not consultations: asks refused by a per-asker limit (`limited`).
CREATE TABLE edge_counts (
  name TEXT PRIMARY KEY,
  n INTEGER NOT NULL
) WITHOUT ROWID;
