-- Askers (#13): the per-asker limits' windows and the key asker hashes are made with.
-- An asker is a keyed hash (HMAC-SHA-256, 128 bits in hex) of the client address: no address is
-- ever stored. Nothing here can be turned back into an address without the key.

-- The key used when ASKER_KEY is unset: random, made here once, never sent anywhere.
CREATE TABLE edge_secrets (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO edge_secrets (name, value) VALUES ('asker', lower(hex(randomblob(32))));

-- One row per asker seen within the last day: up to three limit windows (ASK_LIMITS), each the
-- time its window started (ms since epoch) and the asks counted in it. WITHOUT ROWID: the row is
-- its primary key, so counting an ask writes one row and no separate index entry.
CREATE TABLE askers (
  asker TEXT PRIMARY KEY,
  start1 INTEGER NOT NULL DEFAULT 0,
  count1 INTEGER NOT NULL DEFAULT 0,
  start2 INTEGER NOT NULL DEFAULT 0,
  count2 INTEGER NOT NULL DEFAULT 0,
  start3 INTEGER NOT NULL DEFAULT 0,
  count3 INTEGER NOT NULL DEFAULT 0,
  -- The last ask counted, for pruning.
  seen_at INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
