//! Database backend, on SQLite and PostgreSQL: publish, consume, ack; ids are kept and
//! deduplicated; a batch of 1,000 is delivered once each; figures; bad input is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db_common;

use std::collections::HashSet;
use std::time::Duration;

use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue, QueueError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_are_consumed_and_acked() -> anyhow::Result<()> {
    for t in db_common::all("published_messages_are_consumed_and_acked").await? {
        let queue = DbQueue::new(t.db.clone(), DbQueueOptions::default());
        queue
            .publish("jobs", Outgoing::with_id("m-1", &b"{\"n\":1}"[..]))
            .await?;
        // The same id again is the same message: stored once.
        queue
            .publish("jobs", Outgoing::with_id("m-1", &b"{\"n\":1}"[..]))
            .await?;
        let stats = queue.stats("jobs").await?;
        assert_eq!((stats.depth, stats.in_flight), (1, 0), "{}", t.name);

        let mut consumer = queue.consume("jobs", ConsumeOptions::default()).await?;
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await?
            .expect("a delivery");
        assert_eq!(delivery.message.id, "m-1");
        assert_eq!(delivery.message.queue, "jobs");
        assert_eq!(delivery.message.attempt, 1);
        assert_eq!(delivery.message.json::<serde_json::Value>()?["n"], 1);
        assert_eq!(queue.stats("jobs").await?.in_flight, 1, "{}", t.name);
        delivery.ack().await?;

        let stats = queue.stats("jobs").await?;
        assert_eq!(
            (
                stats.depth,
                stats.in_flight,
                stats.dead_lettered,
                stats.acked
            ),
            (0, 0, 0, 1),
            "{}",
            t.name
        );
        // Nothing more comes.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), consumer.next())
                .await
                .is_err()
        );
        drop(consumer);
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_delivered_once_each() -> anyhow::Result<()> {
    for t in db_common::all("a_batch_is_delivered_once_each").await? {
        let queue = DbQueue::new(t.db.clone(), DbQueueOptions::default());
        let messages: Vec<Outgoing> = (0..1_000)
            .map(|n| Outgoing::with_id(format!("b-{n}"), format!("{n}").into_bytes()))
            .collect();
        queue.publish_batch("batch", messages).await?;
        assert_eq!(queue.stats("batch").await?.depth, 1_000, "{}", t.name);

        let mut consumer = queue
            .consume("batch", ConsumeOptions { prefetch: 100 })
            .await?;
        let mut seen = HashSet::new();
        while seen.len() < 1_000 {
            let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await?
                .expect("a delivery");
            assert!(seen.insert(delivery.message.id.clone()), "delivered twice");
            delivery.ack().await?;
        }
        assert!(
            db_common::eventually(Duration::from_secs(5), || async {
                queue
                    .stats("batch")
                    .await
                    .map(|s| s.depth + s.in_flight)
                    .ok()
                    == Some(0)
            })
            .await,
            "{}: the queue should be empty",
            t.name
        );
        drop(consumer);
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test]
async fn bad_names_and_ids_are_refused_with_a_clear_error() -> anyhow::Result<()> {
    let t = db_common::sqlite().await?;
    let queue = DbQueue::new(t.db.clone(), DbQueueOptions::default());
    let err = queue
        .publish("no spaces", Outgoing::new(&b"x"[..]))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("queue name"), "{err}");
    let err = queue
        .publish("ok", Outgoing::with_id("", &b"x"[..]))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::Invalid(_)), "{err}");
    assert!(queue.consume("", ConsumeOptions::default()).await.is_err());
    // Nothing was stored.
    assert_eq!(queue.stats("ok").await?.depth, 0);
    t.cleanup().await;
    Ok(())
}
