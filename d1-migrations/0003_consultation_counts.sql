-- Running totals for /dashboard, so it no longer scans every consultation on each view: D1 bills
-- rows read (5 million a day on the free plan) and the dashboard page refreshes itself, so three
-- full scans per view would spend that within a day once there are a few thousand consultations.
-- One row per combination of answer source and the two providers' outcomes (a few dozen rows at
-- most); a trigger keeps it current, so an ask writes one more row and no code path can forget it.
-- Consultations are append-only: nothing updates or deletes them. A clean-up or retention job that
-- does must adjust these totals in the same transaction.
-- Keep the trigger body's closing keyword upper case and this file's line endings LF: wrangler's
-- statement splitter looks for that keyword at the end of a line.
CREATE TABLE consultation_counts (
  source TEXT NOT NULL,
  groq_outcome TEXT NOT NULL,
  ollama_outcome TEXT NOT NULL,
  n INTEGER NOT NULL,
  -- The first consultation of this combination (ms since epoch): /dashboard's `since`.
  first_at INTEGER NOT NULL,
  PRIMARY KEY (source, groq_outcome, ollama_outcome)
);

-- The consultations recorded before this migration.
INSERT INTO consultation_counts (source, groq_outcome, ollama_outcome, n, first_at)
  SELECT source, groq_outcome, ollama_outcome, COUNT(*), MIN(created_at)
  FROM consultations
  GROUP BY source, groq_outcome, ollama_outcome;

CREATE TRIGGER consultations_counted AFTER INSERT ON consultations
BEGIN
  INSERT INTO consultation_counts (source, groq_outcome, ollama_outcome, n, first_at)
    VALUES (NEW.source, NEW.groq_outcome, NEW.ollama_outcome, 1, NEW.created_at)
    ON CONFLICT (source, groq_outcome, ollama_outcome)
    DO UPDATE SET n = n + 1, first_at = MIN(first_at, excluded.first_at);
END;
