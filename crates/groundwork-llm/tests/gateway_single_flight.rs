//! 100 identical concurrent misses make one upstream call — non-streaming and streaming —
//! and every caller gets the whole answer.

mod gateway_common;

use std::time::Duration;

use gateway_common::{ask, gateway, read, request};
use groundwork_llm::policy::CacheStatus;
use groundwork_testkit::openai::MockOpenAi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_concurrent_misses_share_one_upstream_call() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    mock.set_latency(Duration::from_millis(200));
    let gateway = gateway(&mock, None);
    for stream in [false, true] {
        mock.reset();
        mock.set_latency(Duration::from_millis(200));
        let prompt = format!("together, streaming {stream}");
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let gateway = gateway.clone();
                let body = request(&prompt, stream);
                tokio::spawn(async move { read(gateway.chat(ask(body)).await).await })
            })
            .collect();
        let mut texts = Vec::new();
        for caller in callers {
            let answer = caller.await?;
            assert_eq!(answer.cache, CacheStatus::Miss);
            if stream {
                assert!(answer.done && !answer.cut);
            }
            texts.push(answer.text());
        }
        assert_eq!(mock.calls(), 1, "stream: {stream}");
        assert!(texts.iter().all(|t| t == &texts[0] && !t.is_empty()));
    }
    Ok(())
}
