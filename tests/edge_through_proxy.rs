//! End-to-end (#12): a streamed answer down the whole Ollama path. The Spin component under
//! spin-host (no Groq key) asks the real ollama-proxy binary with its bearer token, and the proxy
//! asks the fake Ollama, which streams one word at a time. The first token reaches the client
//! while the fake is still writing, and a client that leaves makes the fake's stream end early:
//! the cancel travels edge → proxy → fake.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use support::Edge;
use support::client::{Client, PROXY_TOKEN};
use support::fakes::{Fake, Kind, Mode, Streaming};
use support::proxy::OllamaProxy;

/// The fake Ollama's pause before each word: slow enough that "before the fake finished" is
/// seconds, not scheduling noise.
const PACE: Duration = Duration::from_millis(200);

/// The fake Ollama streaming `answer` at [`PACE`], the proxy in front of it accepting the edge's
/// token, and the edge pointed at the proxy.
fn ollama_behind_proxy(answer: &str) -> (Fake, OllamaProxy, Edge) {
    let ollama = Fake::start(Kind::Ollama, Mode::Answer(answer.into()));
    ollama.set_streaming(Streaming::Whole, PACE);
    let proxy = OllamaProxy::start(&ollama.base_url(), PROXY_TOKEN);
    let edge = support::spin::start(&[
        ("ENVIRONMENT", "test".to_owned()),
        ("ASK_LIMITS", "off".to_owned()),
        ("MEMORY_TTL_S", "0".to_owned()),
        ("OLLAMA_URL", proxy.url.clone()),
        ("OLLAMA_PROXY_TOKEN", PROXY_TOKEN.to_owned()),
        // Deadlines far from the pace: a loaded machine (a cold build beside it) must not turn a
        // slow first token into a fall-through to the canned answers.
        ("OLLAMA_TIMEOUT_MS", "20000".to_owned()),
        ("STREAM_FIRST_TOKEN_MS", "20000".to_owned()),
        ("STREAM_GAP_MS", "10000".to_owned()),
        ("ASK_BUDGET_MS", "30000".to_owned()),
    ]);
    (ollama, proxy, edge)
}

#[test]
fn a_streamed_answer_through_ollama_proxy_arrives_before_the_fake_has_finished() {
    let answer = "The candle leans toward yes, but only after the third full moon has passed.";
    let (ollama, proxy, edge) = ollama_behind_proxy(answer);

    let streamed = Client::new(&edge.base).ask_streaming("Will my letter be answered?", None);
    assert_eq!((streamed.status, streamed.content_type.as_str()), (200, "text/event-stream"), "{streamed:?}");
    let done = streamed.done();
    let first = streamed.events.iter().find(|e| e.name == "token").expect("a token event");
    let finished =
        ollama.stream_finished_soon().unwrap_or_else(|| panic!("the fake finished its stream: {done}"));
    let ms = |at: Instant| at.duration_since(streamed.started).as_millis();
    eprintln!("first token at {} ms, fake finished at {} ms", ms(first.at), ms(finished));
    assert!(
        first.at < finished,
        "the first token ({} ms) reached the client before the fake had finished ({} ms)",
        ms(first.at),
        ms(finished)
    );
    assert!(streamed.events.iter().filter(|e| e.name == "token").count() > 3, "{streamed:?}");
    assert_eq!(streamed.tokens(), done["answer"].as_str().unwrap_or_default());
    assert_eq!(streamed.tokens(), answer);
    assert_eq!((done["source"].as_str(), done["complete"].as_bool()), (Some("ollama"), Some(true)));

    // The proxy took the edge's token (any other is a 401) and forwarded the streamed ask; the
    // edge's token itself never goes upstream.
    let chats: Vec<_> = ollama.seen().into_iter().filter(|seen| seen.route == "POST /api/chat").collect();
    assert_eq!(chats.len(), 1, "{chats:?}");
    assert_eq!(chats[0].body["stream"], json!(true), "{:?}", chats[0].body);
    assert_eq!(chats[0].authorization, None, "the proxy sends Ollama no client key");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("ollama_proxy_requests_total{route=\"/api/chat\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("reason=\"unauthorized\""), "the edge's token was accepted: {metrics}");
}

#[test]
fn the_client_leaving_after_the_first_token_cancels_the_fake_ollamas_stream_through_the_proxy() {
    let long = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen.";
    let (ollama, _proxy, edge) = ollama_behind_proxy(long);

    let streamed = Client::new(&edge.base).ask_streaming("Count for me, spirit?", Some(1));
    assert_eq!(streamed.events.len(), 1, "left after the first token: {streamed:?}");
    let left = Instant::now();
    while ollama.streams_cancelled() == 0 && left.elapsed() < Duration::from_secs(8) {
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the fake's stream was cancelled {} ms after the client left", left.elapsed().as_millis());
    assert_eq!(ollama.streams_cancelled(), 1, "the cancel reached the fake Ollama through the proxy");
    assert!(ollama.stream_finished().is_none(), "the fake never got to finish");
}
