//! The gateway's cache: a miss calls the upstream and is stored; the same request (in any
//! key order, streaming or not) is then a hit without an upstream call; a stored stream
//! replays as a stream, a stored completion answers a streaming request as a real stream
//! (not one lump), and a recorded stream answers a non-streaming request; bypass,
//! non-deterministic requests and no-store are honoured.

mod gateway_common;

use gateway_common::{ask, gateway, read, request};
use groundwork_llm::policy::{CachePolicy, CacheStatus};
use groundwork_testkit::openai::MockOpenAi;
use serde_json::json;

#[tokio::test]
async fn a_completion_is_stored_and_answers_both_forms() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);

    let first = read(gateway.chat(ask(request("hello there", false))).await).await;
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(mock.calls(), 1);

    // Same request, other key order: a hit.
    let reordered = json!({
        "messages": [{"content": "hello there", "role": "user"}],
        "stream": false, "temperature": 0.0, "model": "mock-1"
    });
    let again = read(gateway.chat(ask(reordered)).await).await;
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(again.json, first.json);

    // The streaming form of the same request: a hit, several chunks, the same text.
    let streamed = read(gateway.chat(ask(request("hello there", true))).await).await;
    assert_eq!(streamed.cache, CacheStatus::Hit);
    assert!(streamed.done && !streamed.cut);
    assert!(
        streamed.events.len() >= 3,
        "{} chunks",
        streamed.events.len()
    );
    assert_eq!(streamed.text(), first.text());
    assert_eq!(mock.calls(), 1, "hits never reach the upstream");
    Ok(())
}

#[tokio::test]
async fn a_recorded_stream_replays_and_answers_the_non_streaming_form() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);

    let live = read(gateway.chat(ask(request("stream me", true))).await).await;
    assert_eq!(live.cache, CacheStatus::Miss);
    assert!(live.done);
    let replay = read(gateway.chat(ask(request("stream me", true))).await).await;
    assert_eq!(replay.cache, CacheStatus::Hit);
    assert_eq!(
        replay.events, live.events,
        "replayed chunk by chunk, as recorded"
    );
    let json = read(gateway.chat(ask(request("stream me", false))).await).await;
    assert_eq!(json.cache, CacheStatus::Hit);
    assert_eq!(json.text(), live.text());
    assert_eq!(
        json.json.as_ref().map(|j| j["object"].clone()),
        Some(json!("chat.completion"))
    );
    assert_eq!(mock.calls(), 1);
    Ok(())
}

#[tokio::test]
async fn bypass_nondeterministic_and_no_store_are_honoured() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);
    let bypass = CachePolicy::from_headers(Some("bypass"), None, None)?;
    for _ in 0..2 {
        let mut req = ask(request("bypassed", false));
        req.policy = bypass;
        assert_eq!(
            read(gateway.chat(req).await).await.cache,
            CacheStatus::Bypass
        );
    }
    assert_eq!(mock.calls(), 2);

    let mut hot = request("hot", false);
    hot["temperature"] = json!(0.9);
    for _ in 0..2 {
        assert_eq!(
            read(gateway.chat(ask(hot.clone())).await).await.cache,
            CacheStatus::Bypass
        );
    }
    hot["seed"] = json!(7);
    assert_eq!(
        read(gateway.chat(ask(hot.clone())).await).await.cache,
        CacheStatus::Miss
    );
    assert_eq!(
        read(gateway.chat(ask(hot)).await).await.cache,
        CacheStatus::Hit
    );

    let no_store = CachePolicy::from_headers(None, None, Some("no-store"))?;
    for _ in 0..2 {
        let mut req = ask(request("not kept", false));
        req.policy = no_store;
        assert_eq!(read(gateway.chat(req).await).await.cache, CacheStatus::Miss);
    }
    assert_eq!(mock.calls(), 2 + 2 + 1 + 2);
    Ok(())
}

#[tokio::test]
async fn without_a_temperature_a_request_is_not_deterministic() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    // No temperature: the provider's default (1) samples, so nothing is stored by default.
    let mut plain = request("no temperature", false);
    plain.as_object_mut().map(|body| body.remove("temperature"));
    let gateway = gateway(&mock, None);
    for _ in 0..2 {
        assert_eq!(
            read(gateway.chat(ask(plain.clone())).await).await.cache,
            CacheStatus::Bypass
        );
    }
    assert_eq!(gateway.cache().stats().stores, 0, "not stored");
    let mut null = plain.clone();
    null["temperature"] = json!(null);
    assert_eq!(
        read(gateway.chat(ask(null)).await).await.cache,
        CacheStatus::Bypass
    );
    assert_eq!(mock.calls(), 3);

    // With the setting on, it is cached like any other request.
    let caching = groundwork_llm::gateway::Gateway::new(
        gateway.client().clone(),
        groundwork_llm::client::Upstream::new(mock.base_url()),
        groundwork_llm::cache::ResponseCache::new(
            groundwork_llm::cache::ResponseCacheOptions::new(),
            None,
        ),
        groundwork_llm::gateway::GatewayOptions::new().cache_nondeterministic(true),
    );
    assert_eq!(
        read(caching.chat(ask(plain.clone())).await).await.cache,
        CacheStatus::Miss
    );
    assert_eq!(caching.cache().stats().stores, 1, "stored");
    assert_eq!(
        read(caching.chat(ask(plain)).await).await.cache,
        CacheStatus::Hit
    );
    assert_eq!(mock.calls(), 4);
    Ok(())
}

#[tokio::test]
async fn hits_are_counted_by_level() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);
    read(gateway.chat(ask(request("count me", false))).await).await;
    for _ in 0..3 {
        read(gateway.chat(ask(request("count me", true))).await).await;
    }
    let stats = gateway.stats();
    assert_eq!(
        (
            stats.hits,
            stats.hits_memory,
            stats.hits_redis,
            stats.misses
        ),
        (3, 3, 0, 1)
    );
    assert_eq!(stats.upstream_calls, 1);
    Ok(())
}
