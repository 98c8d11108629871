//! The chain on the key-value store ([`MemoryPlatform::key_value`]): every SQL statement fails
//! there, so each of these also proves the key-value path touches no SQL.

use super::*;
use crate::core::kv::{SEED, SHARD_BUDGET_BYTES, TOTALS_SHARDS};

fn assert_no_sql(p: &MemoryPlatform) {
    let logged = p.logged();
    assert!(!logged.iter().any(|line| line.contains("AccessDenied")), "SQL was tried: {logged:?}");
}

#[test]
fn the_compiled_in_seed_is_what_the_migrations_insert() {
    let sql = MemoryPlatform::new();
    let canned = sql.inspect(
        "SELECT id, language, personality, category, text, keywords FROM fallback_responses ORDER BY id",
        &[],
    );
    assert_eq!(canned.len() as u64, CANNED_ANSWERS);
    assert_eq!(SEED.canned.len(), canned.len());
    for (row, seeded) in canned.iter().zip(&SEED.canned) {
        let compiled = json!({"id": seeded.id, "language": seeded.language, "personality": seeded.personality,
            "category": seeded.category, "text": seeded.text, "keywords": seeded.keywords});
        assert_eq!(Value::Object(row.clone()), compiled);
    }
    let repeats = sql.inspect("SELECT language, personality, text FROM repeat_answers ORDER BY id", &[]);
    let compiled: Vec<Value> =
        SEED.repeats.iter().map(|(l, p, t)| json!({"language": l, "personality": p, "text": t})).collect();
    assert_eq!(repeats.into_iter().map(Value::Object).collect::<Vec<_>>(), compiled);
    let endings = sql.inspect("SELECT language, text FROM stream_endings ORDER BY id", &[]);
    let compiled: Vec<Value> = SEED.endings.iter().map(|(l, t)| json!({"language": l, "text": t})).collect();
    assert_eq!(endings.into_iter().map(Value::Object).collect::<Vec<_>>(), compiled);
}

#[test]
fn groq_then_ollama_then_a_compiled_in_canned_answer_with_the_dashboard_counting_them() {
    let p = MemoryPlatform::key_value();
    p.reply_in_turn(GROQ_CHAT, vec![groq_answer("Yes, the stars agree."), Reply::text(500, "oops")]);
    p.reply_in_turn(
        OLLAMA_CHAT,
        vec![ollama_answer(OLLAMA_MODEL, "Perhaps, in time."), Reply::text(500, "no")],
    );
    let config = chain_config(&[]);
    let sources: Vec<Source> =
        (0..3).map(|_| ask_recorded(&p, &config, &english("Will I find love?")).0.source).collect();
    assert_eq!(sources, [Source::Groq, Source::Ollama, Source::Sqlite]);
    let (answer, _) = ask_recorded(&p, &config, &english("Will I find love?"));
    assert!(SEED.canned.iter().any(|row| row.text == answer.answer && row.language == "en"), "{answer:?}");

    let dashboard = block_on(dashboard(&p, &config)).expect("the dashboard reads the store");
    assert_eq!(dashboard.total, 4);
    assert_eq!(dashboard.by_source["groq"], 1);
    assert_eq!(dashboard.by_source["ollama"], 1);
    assert_eq!(dashboard.by_source["sqlite"], 2);
    assert_eq!(dashboard.latency_window, 4);
    assert_eq!(dashboard.since, Some(rfc3339(EPOCH_MS)));
    assert_eq!(dashboard.providers["groq"].failures.get("http_error"), Some(&3));
    assert!(dashboard.providers["groq"].breaker_open_until.is_some(), "three failures open it");
    assert_no_sql(&p);
}

#[test]
fn the_dashboard_keeps_the_latest_consultations_across_its_shards() {
    let p = MemoryPlatform::key_value();
    let config = config(&[]);
    for n in 0..600u64 {
        ask_recorded(&p, &config, &english("Will it be?"));
        p.advance(1 + n % 7);
    }
    let dashboard = block_on(dashboard(&p, &config)).expect("the dashboard reads the store");
    assert_eq!(dashboard.total, 600, "no record lost when asks do not race");
    assert!(dashboard.latency_window <= super::super::dashboard::LATENCY_WINDOW);
    assert!(dashboard.latency_window >= 150, "{}", dashboard.latency_window);
    let keys: Vec<String> = p.kv_entries().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.iter().filter(|k| k.starts_with("totals/")).count() as u64, TOTALS_SHARDS);
}

#[test]
fn limits_refuse_the_fourth_ask_in_a_second_and_count_it_without_a_write_per_refusal() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS]);
    let response = fourth_ask_within_a_second(&p, &config);
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_of(&response, "retry-after"), Some("1"));
    assert_eq!(p.calls_to(GROQ), 3);
    assert_eq!(send(&p, &config, &ask_from("198.51.100.9:1", "Will it be?")).status(), StatusCode::OK);
    p.advance(700);
    assert_eq!(send(&p, &config, &ask_from("203.0.113.7:40003", "Will it be 4?")).status(), StatusCode::OK);
    // The rest of this second's asks, then a flood of refusals: at most one write for them all
    // (and that one refusal in 16, see REFUSED_SAMPLE).
    for n in 5..7 {
        let response = send(&p, &config, &ask_from("203.0.113.7:40004", &format!("Will it be {n}?")));
        assert_eq!(response.status(), StatusCode::OK);
    }
    let writes = p.kv_writes();
    for n in 0..50 {
        let response = send(&p, &config, &ask_from("203.0.113.7:40004", &format!("Again {n}?")));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(p.kv_writes() - writes <= 1, "{} writes for 50 refusals", p.kv_writes() - writes);
    let dashboard = block_on(dashboard(&p, &config)).expect("the dashboard reads the store");
    assert_eq!(dashboard.total, 7);
    assert_eq!(dashboard.limited % crate::core::kv::REFUSED_SAMPLE, 0);
    assert_no_sql(&p);
}

#[test]
fn a_fourth_question_takes_the_memory_slot_asked_longest_ago() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    let config = chain_config(&[("MEMORY_TTL_S", "3600")]);
    let ask = |question: &str| {
        p.advance(1_000);
        send(&p, &config, &ask_from("203.0.113.7", question))
    };
    for question in ["A?", "B?", "C?", "D?"] {
        ask(question);
    }
    assert_eq!(p.calls_to(GROQ), 4);
    ask("B?");
    ask("C?");
    ask("D?");
    assert_eq!(p.calls_to(GROQ), 4, "B, C and D are remembered");
    ask("A?");
    assert_eq!(p.calls_to(GROQ), 5, "A's slot went to D");
}

#[test]
fn the_same_question_is_remembered_then_annoys_and_nothing_of_the_question_or_asker_is_stored() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    let config = chain_config(&[("MEMORY_TTL_S", "3600")]);
    let question = "Will my zebra Quixote-7731 marry this year?";
    let first = body_json(&send(&p, &config, &ask_from("203.0.113.7:1", question)));
    let again = body_json(&send(
        &p,
        &config,
        &ask_from("203.0.113.7:2", "will my ZEBRA quixote 7731 marry this year"),
    ));
    assert_eq!(
        (again["answer"].as_str(), again["source"].as_str()),
        (first["answer"].as_str(), Some("groq"))
    );
    assert_eq!(p.calls_to(GROQ), 1, "a remembered answer calls nothing");
    let third = body_json(&send(&p, &config, &ask_from("203.0.113.7:3", question)));
    assert_ne!(third["answer"], first["answer"]);
    assert!(SEED.repeats.iter().any(|(_, _, text)| third["answer"].as_str() == Some(text)), "{third}");
    // Another asker, or another question, is answered afresh.
    send(&p, &config, &ask_from("198.51.100.9:1", question));
    send(&p, &config, &ask_from("203.0.113.7:4", "Will it rain on my zebra?"));
    assert_eq!(p.calls_to(GROQ), 3);
    // An hour later the question is new again.
    p.advance(3_600_001);
    send(&p, &config, &ask_from("203.0.113.7:5", question));
    assert_eq!(p.calls_to(GROQ), 4);

    for (key, value) in p.kv_entries() {
        for secret in ["203.0.113.7", "198.51.100.9", "zebra", "Zebra", "Quixote", "quixote", "7731"] {
            assert!(!key.contains(secret) && !value.contains(secret), "{secret} stored under {key}: {value}");
        }
    }
    assert_no_sql(&p);
}

#[test]
fn a_cool_down_read_stale_costs_one_more_groq_call_per_stale_ask_and_is_never_undone_by_the_breaker() {
    let p = MemoryPlatform::key_value();
    p.reply_in_turn(GROQ_CHAT, vec![groq_rate_limited(60), groq_rate_limited(60), Reply::text(500, "oops")]);
    ollama_always_answers(&p);
    let config = chain_config(&[]);
    // A replica that has not seen the 429's write yet (e.g. another region).
    p.stale_reads(true);
    let (first, _) = ask_recorded(&p, &config, &english("Will it rain?"));
    let written = p.kv_value("state/groq/cool-down").expect("the 429 wrote a cool-down");
    let until = written["until"].as_u64().expect("until");
    assert_eq!(until, EPOCH_MS + 60_000);
    p.advance(1_000);
    let (second, _) = ask_recorded(&p, &config, &english("Will it rain?")); // reads no cool-down
    p.advance(1_000);
    let (third, _) = ask_recorded(&p, &config, &english("Will it rain?")); // Groq's 500: the breaker
    assert_eq!([first.source, second.source, third.source], [Source::Ollama; 3], "every ask answered");
    assert_eq!(p.calls_to(GROQ), 3, "one Groq call per ask that read stale");
    let kept = p.kv_value("state/groq/cool-down").expect("still there");
    assert!(kept["until"].as_u64() >= Some(until), "a stale write never shortens the cool-down: {kept}");
    assert_eq!(p.kv_value("state/groq/breaker").expect("the 500 counted")["failures"], 1);

    // Once the replica catches up, Groq is skipped until the cool-down ends.
    p.stale_reads(false);
    let (answer, consultation) = ask_recorded(&p, &config, &english("Will it rain?"));
    assert_eq!((answer.source, consultation.groq.outcome.as_str()), (Source::Ollama, "cool_down"));
    assert_eq!(p.calls_to(GROQ), 3);
}

#[test]
fn the_per_minute_budget_on_the_store_sends_the_overflow_to_ollama() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    ollama_always_answers(&p);
    let config = chain_config(&[("GROQ_RPM", "5")]);
    let sources: Vec<Source> =
        (0..7).map(|_| ask_recorded(&p, &config, &english("Will it rain?")).0.source).collect();
    assert_eq!(sources.iter().filter(|s| **s == Source::Groq).count(), 5);
    assert_eq!(p.calls_to(GROQ), 5);
    p.advance(60_000);
    assert_eq!(ask_recorded(&p, &config, &english("Will it rain?")).0.source, Source::Groq);
}

#[test]
fn three_thousand_askers_stay_within_the_stores_key_count() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS, ("MEMORY_TTL_S", "3600")]);
    for n in 0..3_000u32 {
        let address = format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255);
        let response = send(&p, &config, &ask_from(&address, &format!("Question number {n}?")));
        assert_eq!(response.status(), StatusCode::OK);
    }
    let entries = p.kv_entries();
    assert!(entries.len() <= 271, "{} keys", entries.len());
    let largest = entries.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    assert!(largest <= SHARD_BUDGET_BYTES, "largest value {largest} bytes");
    assert_no_sql(&p);
}

#[test]
fn health_counts_the_compiled_in_answers_and_fails_when_the_store_does() {
    let p = MemoryPlatform::key_value();
    both_list_their_models(&p);
    let config = chain_config(&[]);
    let response = send(&p, &config, &get("/health"));
    let health = body_json(&response);
    assert_eq!(health["checks"]["database"]["count"], CANNED_ANSWERS);
    assert_eq!(health["checks"]["database"]["status"], "ok");
    p.fail_db(true);
    let health = body_json(&send(&p, &config, &get("/health")));
    assert_eq!(health["checks"]["database"]["status"], "error");
    // The chain still answers, from the compiled-in answers when the providers fail too.
    p.reply_always(GROQ_CHAT, Reply::text(500, "oops"));
    p.reply_always(OLLAMA_CHAT, Reply::text(500, "oops"));
    let response = send(&p, &config, &post("/api/ouija", &json!({"question": "Will it be?"})));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(&response)["source"], "sqlite");
}

#[test]
fn an_ask_the_providers_answer_writes_four_keys_and_a_remembered_one_two() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    let config = chain_config(&[DEFAULT_LIMITS, ("MEMORY_TTL_S", "3600")]);
    send(&p, &config, &ask_from("203.0.113.7", "First question?")); // also makes the asker key
    let writes = |request| {
        let before = p.kv_writes();
        assert_eq!(send(&p, &config, &request).status(), StatusCode::OK);
        p.kv_writes() - before
    };
    // The asker's shard (limits and memory), Groq's minute, a totals shard, the answer into the
    // memory's slot.
    assert_eq!(writes(ask_from("203.0.113.7", "Will it be?")), 4);
    assert_eq!(writes(ask_from("203.0.113.7", "Will it be?")), 2, "remembered: no answer to keep");
    let off = chain_config(&[("ASK_LIMITS", "off"), ("MEMORY_TTL_S", "0")]);
    let before = p.kv_writes();
    send(&p, &off, &ask_from("203.0.113.7", "Will it be?"));
    assert_eq!(p.kv_writes() - before, 2, "limits and memory off: Groq's minute and the totals");
}

#[test]
fn a_failing_provider_adds_a_write_for_its_state_and_so_does_the_first_success_after_it() {
    let p = MemoryPlatform::key_value();
    p.reply_in_turn(
        GROQ_CHAT,
        vec![groq_answer("Yes."), Reply::text(500, "oops"), Reply::text(500, "oops"), groq_answer("Yes.")],
    );
    p.reply_in_turn(
        OLLAMA_CHAT,
        vec![
            ollama_answer(OLLAMA_MODEL, "Perhaps."),
            Reply::text(500, "no"),
            ollama_answer(OLLAMA_MODEL, "Soon."),
        ],
    );
    let config = chain_config(&[DEFAULT_LIMITS, ("MEMORY_TTL_S", "3600")]);
    let ask = |question: &str| {
        p.advance(2_000);
        let before = p.kv_writes();
        let response = send(&p, &config, &ask_from("203.0.113.7", question));
        assert_eq!(response.status(), StatusCode::OK);
        (body_json(&response)["source"].as_str().map(str::to_owned), p.kv_writes() - before)
    };
    ask("First question?"); // also makes the asker key
    // The four of an ask, and Groq's breaker.
    assert_eq!(ask("Will it be 1?"), (Some("ollama".into()), 5));
    // And Ollama's.
    assert_eq!(ask("Will it be 2?"), (Some("sqlite".into()), 6));
    // Groq's first success after failures closes its breaker.
    assert_eq!(ask("Will it be 3?"), (Some("groq".into()), 5));
    assert_no_sql(&p);
}

#[test]
fn what_an_ask_health_and_the_dashboard_read() {
    let p = MemoryPlatform::key_value();
    groq_always_answers(&p);
    let config = chain_config(&[
        DEFAULT_LIMITS,
        ("MEMORY_TTL_S", "3600"),
        ("ASKER_KEY", "a-key-of-sixteen-bytes-or-more"),
    ]);
    let reads = |request: Request<Vec<u8>>| {
        let before = p.kv_reads();
        assert_eq!(send(&p, &config, &request).status(), StatusCode::OK);
        p.kv_reads() - before
    };
    // The asker's shard, four provider-state keys, Groq's minute, a totals shard, the shard again
    // for the answer to remember (DEPLOY.md's reads per request; +1 with no ASKER_KEY).
    assert_eq!(reads(ask_from("203.0.113.7", "Will it be?")), 8);
    assert_eq!(reads(ask_from("203.0.113.7", "Will it be?")), 6, "remembered: no minute, no answer to keep");
    assert_eq!(reads(get("/health")), 5);
    assert_eq!(reads(get("/dashboard")), 13, "eight totals shards, the refused count, four state keys");
}

#[test]
fn a_store_that_cannot_count_groqs_minute_keeps_groq_out_and_the_ask_still_answers() {
    for failing in ["writes", "everything"] {
        let p = MemoryPlatform::key_value();
        groq_always_answers(&p);
        ollama_always_answers(&p);
        if failing == "writes" {
            p.fail_kv_writes(true);
        } else {
            p.fail_db(true);
        }
        let response =
            send(&p, &chain_config(&[]), &post("/api/ouija", &json!({"question": "Will it rain?"})));
        assert_eq!(response.status(), StatusCode::OK, "{failing}");
        assert_eq!(body_json(&response)["source"], "ollama", "{failing}");
        assert_eq!(p.calls_to(GROQ), 0, "{failing} failing: Groq's minute could not be counted");
        p.reply_always(OLLAMA_CHAT, Reply::text(500, "no"));
        let response =
            send(&p, &chain_config(&[]), &post("/api/ouija", &json!({"question": "Will it rain?"})));
        assert_eq!(response.status(), StatusCode::OK, "{failing}");
        assert_eq!(
            body_json(&response)["source"],
            "sqlite",
            "{failing}: a compiled-in answer needs no store"
        );
    }
}
