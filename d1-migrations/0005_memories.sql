-- The spirit's memory (#13): the same asker asking the same question within MEMORY_TTL_S gets the
-- same answer again, and from the third time an annoyed one.
-- Nothing here can be turned back into an address or a question: `asker` is the keyed hash of the
-- client address (migration 0004) and `question` a keyed hash (same key, another domain) of the
-- question's folded words. The answer's text is the spirit's, not the asker's, so it is kept.

-- One row per (asker, question) remembered: the answer given, and how many times it was asked
-- since `remembered_at` (ms since epoch, when the answer was given). WITHOUT ROWID: the row is its
-- primary key, so remembering or counting an ask writes one row and no separate index entry.
-- Expired rows are pruned now and then by a scan (no index on `remembered_at`: D1 counts each
-- index entry written as a row written, on every ask; the prune runs on about one ask in 32).
CREATE TABLE memories (
  asker TEXT NOT NULL,
  question TEXT NOT NULL,
  times INTEGER NOT NULL DEFAULT 1,
  remembered_at INTEGER NOT NULL,
  answer TEXT NOT NULL,
  source TEXT NOT NULL CHECK (source IN ('groq', 'ollama', 'sqlite')),
  language TEXT NOT NULL CHECK (language IN ('es', 'en')),
  personality TEXT NOT NULL CHECK (personality IN ('wise', 'cryptic', 'dark', 'playful')),
  category TEXT NOT NULL,
  PRIMARY KEY (asker, question)
) WITHOUT ROWID;

-- What the annoyed spirit says from the third time: a kind of canned answer of its own, in its own
-- table so that the chain's pick from `fallback_responses` (and its category CHECK) never sees it.
-- At least 3 per (language, personality); given in turn, so the spirit does not repeat its
-- annoyance either.
CREATE TABLE repeat_answers (
  id INTEGER PRIMARY KEY,
  language TEXT NOT NULL CHECK (language IN ('es', 'en')),
  personality TEXT NOT NULL CHECK (personality IN ('wise', 'cryptic', 'dark', 'playful')),
  text TEXT NOT NULL CHECK (length(text) BETWEEN 1 AND 200)
);
CREATE INDEX repeat_answers_pick ON repeat_answers (language, personality);

INSERT INTO repeat_answers (language, personality, text) VALUES
  ('es', 'wise', 'Ya te respondí. Preguntar otra vez no cambia lo que es; escucha lo que oíste.'),
  ('es', 'wise', 'La respuesta no ha cambiado desde la última vez. Dale tiempo a que obre.'),
  ('es', 'wise', 'Repetir la pregunta es dudar de la respuesta. Confía en lo que ya sabes.'),
  ('es', 'cryptic', 'El eco responde lo mismo que la voz. Ya lo dijimos.'),
  ('es', 'cryptic', 'Tres veces llamas a la misma puerta; la puerta ya se abrió.'),
  ('es', 'cryptic', 'La rueda gira y vuelve al mismo punto. Tú también.'),
  ('es', 'dark', 'Otra vez esa pregunta... los muertos no olvidan, y se impacientan.'),
  ('es', 'dark', 'Ya te lo dije. No despiertes mi ira preguntando de nuevo.'),
  ('es', 'dark', 'Las sombras se cansan de repetirse. La respuesta sigue siendo la misma.'),
  ('es', 'playful', '¿Otra vez? ¡Si ya te lo dije! Los fantasmas también tenemos memoria, ¿eh?'),
  ('es', 'playful', 'Uy, esta pregunta ya me la sé de memoria. ¡Cambia de disco!'),
  ('es', 'playful', 'Jaja, ¿me estás poniendo a prueba? Mi respuesta no ha cambiado.'),
  ('en', 'wise', 'I have answered you already. Asking again does not change what is; listen to what you heard.'),
  ('en', 'wise', 'The answer has not changed since last time. Give it time to work.'),
  ('en', 'wise', 'To ask again is to doubt the answer. Trust what you already know.'),
  ('en', 'cryptic', 'The echo answers what the voice answered. It has been said.'),
  ('en', 'cryptic', 'Thrice you knock on the same door; the door was already open.'),
  ('en', 'cryptic', 'The wheel turns and comes back to the same place. So do you.'),
  ('en', 'dark', 'That question again... the dead do not forget, and they grow impatient.'),
  ('en', 'dark', 'I told you already. Do not wake my wrath by asking again.'),
  ('en', 'dark', 'The shadows tire of repeating themselves. The answer is still the same.'),
  ('en', 'playful', 'Again? I already told you! Ghosts have memories too, you know.'),
  ('en', 'playful', 'Ooh, I know this one by heart already. Change the record!'),
  ('en', 'playful', 'Haha, are you testing me? My answer has not changed.');
