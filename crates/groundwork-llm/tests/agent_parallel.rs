//! Parallel LLM calls through the gateway: one deadline, one result per call in the
//! requests' order, cache hits answered at once while a stalled call is cut off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_core::{Classify as _, ErrorKind};
use groundwork_llm::agent::{ChatCallError, parallel_chat};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{ChatRequest, Gateway, GatewayOptions};
use groundwork_llm::policy::{CachePolicy, CacheStatus};
use groundwork_testkit::openai::MockOpenAi;
use serde_json::{Value, json};

fn gateway(mock: &MockOpenAi) -> Gateway {
    let http = HttpClient::new(HttpClientOptions::new()).expect("HTTP client");
    Gateway::new(
        LlmClient::new(http, ClientOptions::new()),
        Upstream::new(mock.base_url()),
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    )
}

fn body(content: &str) -> Value {
    json!({
        "model": "mock-1",
        "temperature": 0,
        "messages": [{"role": "user", "content": content}]
    })
}

fn ask(body: Value) -> ChatRequest {
    ChatRequest {
        tenant: "tester".to_owned(),
        body,
        policy: CachePolicy::normal(),
    }
}

fn questions(n: usize) -> Vec<ChatRequest> {
    (0..n).map(|i| ask(body(&format!("q{i}")))).collect()
}

/// Answers `q0`…`q4` except `q2`, so that they are cached.
async fn warm_all_but_the_third(gateway: &Gateway) {
    let warm: Vec<_> = [0, 1, 3, 4]
        .iter()
        .map(|i| ask(body(&format!("q{i}"))))
        .collect();
    let warmed = parallel_chat(gateway, warm, Duration::from_secs(10)).await;
    assert!(warmed.iter().all(Result::is_ok), "{warmed:?}");
}

#[tokio::test]
async fn every_call_is_answered_in_the_requests_order() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock);
    let results = parallel_chat(&gateway, questions(5), Duration::from_secs(10)).await;
    let contents: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().expect("an answer").content().map(str::to_owned))
        .collect();
    let expected: Vec<_> = (0..5).map(|i| Some(format!("echo: q{i}"))).collect();
    assert_eq!(contents, expected);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|c| c.cache == CacheStatus::Miss))
    );
    assert_eq!(mock.calls(), 5);
    let message = results[0].as_ref().expect("an answer").message();
    assert_eq!(
        message.and_then(|m| m.finish_reason).as_deref(),
        Some("stop")
    );
    Ok(())
}

#[tokio::test]
async fn a_stalled_call_is_cut_off_without_hiding_the_others() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock);
    warm_all_but_the_third(&gateway).await;

    // From now on the upstream takes 30 s: only the uncached third request waits on it.
    mock.set_latency(Duration::from_secs(30));
    let started = Instant::now();
    let results = parallel_chat(&gateway, questions(5), Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );

    assert_eq!(results.len(), 5);
    for (i, result) in results.iter().enumerate() {
        if i == 2 {
            match result {
                Err(err @ ChatCallError::Elapsed(elapsed)) => {
                    assert!(err.is_elapsed());
                    assert_eq!(elapsed.after, Duration::from_millis(300));
                    assert_eq!(err.kind(), ErrorKind::Unavailable);
                }
                other => panic!("expected the third call to time out, got {other:?}"),
            }
        } else {
            let completion = result.as_ref().expect("a cached answer");
            assert_eq!(completion.cache, CacheStatus::Hit);
            assert_eq!(completion.content(), Some(format!("echo: q{i}").as_str()));
        }
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    Ok(())
}

#[tokio::test]
async fn a_failed_call_fails_alone() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock);
    warm_all_but_the_third(&gateway).await;

    mock.fail_next(1, 400, None);
    let results = parallel_chat(&gateway, questions(5), Duration::from_secs(10)).await;
    match &results[2] {
        Err(err @ ChatCallError::Gateway(_)) => assert_eq!(err.kind(), ErrorKind::BadRequest),
        other => panic!("expected the upstream's refusal, got {other:?}"),
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    Ok(())
}

#[tokio::test]
async fn streaming_requests_are_answered_as_completions() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock);
    let mut streaming = body("stream me");
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let results = parallel_chat(&gateway, vec![ask(streaming)], Duration::from_secs(10)).await;
    let completion = results[0].as_ref().expect("an answer");
    assert_eq!(completion.content(), Some("echo: stream me"));
    assert_eq!(completion.body["object"], "chat.completion");
    let sent = mock.last_request().expect("a request");
    assert_eq!(sent["stream"], false);
    assert!(sent.get("stream_options").is_none());
    Ok(())
}

#[tokio::test]
async fn no_requests_no_results() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock);
    let results = parallel_chat(&gateway, Vec::new(), Duration::from_secs(1)).await;
    assert!(results.is_empty());
    Ok(())
}
