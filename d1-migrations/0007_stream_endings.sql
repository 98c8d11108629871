-- How the spirit closes a streamed answer that was cut or fell silent (#12): the text spelled so
-- far is kept, and one of these ends it, in the asker's language, so a broken stream never looks
-- like a whole answer. Picked at random.
CREATE TABLE stream_endings (
  id INTEGER PRIMARY KEY,
  language TEXT NOT NULL CHECK (language IN ('es', 'en')),
  text TEXT NOT NULL CHECK (length(text) BETWEEN 1 AND 80)
);

INSERT INTO stream_endings (language, text) VALUES
  ('es', '... la voz se apaga.'),
  ('es', '... el espíritu se aleja antes de terminar.'),
  ('es', '... y la niebla se traga el resto.'),
  ('en', '... the voice fades.'),
  ('en', '... the spirit drifts away before it can finish.'),
  ('en', '... and the mist swallows the rest.');

-- A streamed answer's time to its first token (ms from the ask), for /dashboard's per-provider
-- time to first token; NULL for answers given whole.
ALTER TABLE consultations ADD COLUMN first_token_ms INTEGER;
