//! Upstream errors are passed on with their status and body and never stored; a stream cut
//! midway reaches the client as a cut stream and is not stored either.

mod gateway_common;

use gateway_common::{ask, gateway, read, request};
use groundwork_llm::client::LlmError;
use groundwork_llm::gateway::GatewayError;
use groundwork_llm::policy::CacheStatus;
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn an_upstream_error_is_passed_on_and_not_stored() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);
    mock.fail_next(1, 400, None);
    match gateway.chat(ask(request("bad", false))).await {
        Err(GatewayError::Upstream { error, cache }) => {
            assert_eq!(cache, CacheStatus::Miss);
            match &*error {
                LlmError::Upstream { status, body, .. } => {
                    assert_eq!(status.as_u16(), 400);
                    assert!(!body.is_empty());
                }
                other => panic!("expected the upstream's answer, got {other:?}"),
            }
        }
        other => panic!("expected an upstream error, got {other:?}"),
    }
    // Not stored: the next identical request reaches the upstream and succeeds.
    let next = read(gateway.chat(ask(request("bad", false))).await).await;
    assert_eq!(next.cache, CacheStatus::Miss);
    assert_eq!(mock.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn a_cut_stream_is_cut_for_the_client_and_not_stored() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let gateway = gateway(&mock, None);
    mock.cut_stream_after(Some(2));
    let cut = read(gateway.chat(ask(request("cut me", true))).await).await;
    assert!(cut.cut && !cut.done, "{cut:?}");
    mock.cut_stream_after(None);
    let whole = read(gateway.chat(ask(request("cut me", true))).await).await;
    assert_eq!(
        whole.cache,
        CacheStatus::Miss,
        "the cut stream was not stored"
    );
    assert!(whole.done);
    let hit = read(gateway.chat(ask(request("cut me", true))).await).await;
    assert_eq!(hit.cache, CacheStatus::Hit);
    Ok(())
}
