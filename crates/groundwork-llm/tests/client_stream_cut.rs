//! A stream cut midway gives its events, then an error, never `Done`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client_common;

use client_common::{chat, client, collect, fast, upstream};
use groundwork_core::{Classify as _, ErrorKind};
use groundwork_llm::client::{LlmError, SseEvent, StreamCut};
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test]
async fn a_cut_stream_ends_with_an_error_after_its_events() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.cut_stream_after(Some(3));
    let client = client(fast());

    let mut items = collect(client.stream(&upstream(&mock), &chat("a b c d")).await?).await;

    assert_eq!(items.len(), 4, "{items:?}");
    let last = items.pop().unwrap();
    assert!(
        items
            .iter()
            .all(|item| matches!(item, Ok(SseEvent::Data(_)))),
        "{items:?}"
    );
    let err = last.unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::StreamAborted {
                events: 3,
                cause: StreamCut::Connection(_)
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(mock.calls(), 1, "not retried once events were handed over");
    let stats = client.stats();
    assert_eq!((stats.streams_completed, stats.streams_aborted), (0, 1));
    Ok(())
}

#[tokio::test]
async fn a_cut_just_before_done_is_still_an_error() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_chunks(4);
    mock.cut_stream_after(Some(6));
    let client = client(fast());

    let items = collect(client.stream(&upstream(&mock), &chat("a b c d")).await?).await;

    assert_eq!(items.len(), 7);
    assert!(items.iter().all(|item| !matches!(item, Ok(SseEvent::Done))));
    assert!(matches!(
        items.last(),
        Some(Err(LlmError::StreamAborted { events: 6, .. }))
    ));
    Ok(())
}

#[tokio::test]
async fn a_cut_before_the_first_event_is_retried() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.cut_stream_after(Some(0));
    let client = client(fast());

    let err = client
        .stream(&upstream(&mock), &chat("hi"))
        .await
        .unwrap_err();

    assert!(
        matches!(err, LlmError::StreamAborted { events: 0, .. }),
        "{err:?}"
    );
    assert_eq!(mock.calls(), 3);
    Ok(())
}
