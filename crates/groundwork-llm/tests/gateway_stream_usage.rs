//! `stream_options.include_usage` is a transport field (not in the key), so a streamed hit
//! honours the current request's own: the usage chunk (`"choices": []`) is replayed only
//! when asked for, and when it is asked for but the stored answer has none, the request
//! goes upstream as a miss and refreshes the entry. Identical streaming misses that differ
//! in `include_usage` do not share an upstream call.

mod gateway_common;

use std::time::Duration;

use gateway_common::{Answer, ask, gateway, read, request};
use groundwork_llm::policy::CacheStatus;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::{Value, json};

/// The streaming request for `content`, asking for the usage chunk.
fn with_usage(content: &str) -> Value {
    let mut body = request(content, true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// Whether the stream ended with the usage chunk (and only there).
fn ends_with_usage(answer: &Answer) -> bool {
    let usage_chunks = answer
        .events
        .iter()
        .filter(|event| event["choices"] == json!([]))
        .count();
    let last = answer.events.last();
    usage_chunks == 1
        && last.is_some_and(|last| last["choices"] == json!([]) && last["usage"].is_object())
}

fn has_usage_chunk(answer: &Answer) -> bool {
    answer
        .events
        .iter()
        .any(|event| event["choices"] == json!([]) || event["usage"].is_object())
}

#[tokio::test]
async fn a_stored_completion_replays_the_usage_chunk_only_when_asked() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);
    let first = read(gateway.chat(ask(request("usage?", false))).await).await;
    assert!(first.json.as_ref().is_some_and(|j| j["usage"].is_object()));

    let plain = read(gateway.chat(ask(request("usage?", true))).await).await;
    assert_eq!(plain.cache, CacheStatus::Hit);
    assert!(plain.done);
    assert!(
        !has_usage_chunk(&plain),
        "not asked for: {:?}",
        plain.events
    );

    let asked = read(gateway.chat(ask(with_usage("usage?"))).await).await;
    assert_eq!(asked.cache, CacheStatus::Hit);
    assert!(ends_with_usage(&asked), "{:?}", asked.events);
    assert_eq!(asked.text(), plain.text());
    assert_eq!(mock.calls(), 1);
    Ok(())
}

#[tokio::test]
async fn a_stream_recorded_without_usage_is_refreshed_when_usage_is_asked() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);
    let recorded = read(gateway.chat(ask(request("count tokens", true))).await).await;
    assert_eq!(recorded.cache, CacheStatus::Miss);
    assert!(!has_usage_chunk(&recorded));

    // Asked for, but the recording has no usage: a miss, which stores the new recording.
    let refreshed = read(gateway.chat(ask(with_usage("count tokens"))).await).await;
    assert_eq!(refreshed.cache, CacheStatus::Miss);
    assert!(ends_with_usage(&refreshed), "{:?}", refreshed.events);
    assert_eq!(mock.calls(), 2);

    let hit = read(gateway.chat(ask(with_usage("count tokens"))).await).await;
    assert_eq!(hit.cache, CacheStatus::Hit);
    assert_eq!(
        hit.events, refreshed.events,
        "the new recording, usage included"
    );

    // A request that does not ask gets the same recording without its usage chunk.
    let plain = read(gateway.chat(ask(request("count tokens", true))).await).await;
    assert_eq!(plain.cache, CacheStatus::Hit);
    assert!(plain.done);
    assert!(!has_usage_chunk(&plain), "{:?}", plain.events);
    assert_eq!(
        plain.events[..],
        refreshed.events[..refreshed.events.len() - 1]
    );

    // The non-streaming form has its usage either way.
    let json = read(gateway.chat(ask(request("count tokens", false))).await).await;
    assert_eq!(json.cache, CacheStatus::Hit);
    assert!(json.json.as_ref().is_some_and(|j| j["usage"].is_object()));
    assert_eq!(mock.calls(), 2);
    let stats = gateway.stats();
    assert_eq!((stats.misses, stats.hits), (2, 3));
    Ok(())
}

#[tokio::test]
async fn concurrent_misses_differing_in_include_usage_do_not_share_a_stream() -> anyhow::Result<()>
{
    let mock = MockOpenAi::start()?;
    mock.set_chunk_delay(Duration::from_millis(30));
    let gateway = gateway(&mock, None);
    let (plain, asked) = tokio::join!(
        async { read(gateway.chat(ask(request("both at once", true))).await).await },
        async { read(gateway.chat(ask(with_usage("both at once"))).await).await },
    );
    assert_eq!(
        (plain.cache, asked.cache),
        (CacheStatus::Miss, CacheStatus::Miss)
    );
    assert!(plain.done && asked.done);
    assert!(!has_usage_chunk(&plain), "{:?}", plain.events);
    assert!(ends_with_usage(&asked), "{:?}", asked.events);
    assert_eq!(mock.calls(), 2);
    Ok(())
}
