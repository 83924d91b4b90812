//! Database backend, on SQLite and PostgreSQL: a poison message is dead-lettered after
//! exactly `max_attempts` deliveries, after the policy's delays; a rejected one at once; a
//! message whose consumers keep dying is dead-lettered too instead of looping forever.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db_common;

use std::time::{Duration, Instant};

use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue, RetryPolicy};

fn options() -> DbQueueOptions {
    DbQueueOptions {
        retry: RetryPolicy {
            max_attempts: 5,
            delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
        },
        lease: Duration::from_millis(300),
        poll_min: Duration::from_millis(5),
        poll_max: Duration::from_millis(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_exactly_max_attempts() -> anyhow::Result<()> {
    for t in db_common::all("a_poison_message_is_dead_lettered").await? {
        let queue = DbQueue::new(t.db.clone(), options());
        queue
            .publish("poison", Outgoing::with_id("p", &b"bad"[..]))
            .await?;
        let mut consumer = queue.consume("poison", ConsumeOptions::default()).await?;
        let started = Instant::now();
        let mut attempts = Vec::new();
        while let Ok(Some(delivery)) =
            tokio::time::timeout(Duration::from_millis(800), consumer.next()).await
        {
            attempts.push(delivery.message.attempt);
            delivery.retry("always fails").await?;
        }
        assert_eq!(attempts, vec![1, 2, 3, 4, 5], "{}", t.name);
        // Four waits: 50 ms, then 100 ms three times (give or take 10 %).
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        let stats = queue.stats("poison").await?;
        assert_eq!(
            (stats.depth, stats.delayed, stats.dead_lettered),
            (0, 0, 1),
            "{}",
            t.name
        );
        assert_eq!(stats.retried, 4);
        let dead = t.db.jobs().dead("poison", 10).await?;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, "p");
        assert_eq!(dead[0].attempts, 5);
        assert_eq!(dead[0].last_error.as_deref(), Some("always fails"));
        drop(consumer);
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dead_lettered_at_once() -> anyhow::Result<()> {
    for t in db_common::all("a_rejected_message_is_dead_lettered_at_once").await? {
        let queue = DbQueue::new(t.db.clone(), options());
        queue
            .publish("rej", Outgoing::with_id("r", &b"?"[..]))
            .await?;
        let mut consumer = queue.consume("rej", ConsumeOptions::default()).await?;
        let delivery = consumer.next().await.expect("a delivery");
        delivery.reject("cannot parse").await?;
        assert!(
            tokio::time::timeout(Duration::from_millis(300), consumer.next())
                .await
                .is_err()
        );
        let stats = queue.stats("rej").await?;
        assert_eq!((stats.depth, stats.dead_lettered), (0, 1), "{}", t.name);
        drop(consumer);
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumers_keep_dying_is_dead_lettered() -> anyhow::Result<()> {
    for t in db_common::all("a_message_whose_consumers_keep_dying").await? {
        let mut opts = options();
        opts.retry.max_attempts = 2;
        queue_crash_loop(&t, opts).await?;
        t.cleanup().await;
    }
    Ok(())
}

async fn queue_crash_loop(t: &db_common::TestDb, opts: DbQueueOptions) -> anyhow::Result<()> {
    queue_publish(t, &opts).await?;
    // Two consumers in a row take it and "die" (their handle stops, leases run out).
    for attempt in 1..=2 {
        let queue = DbQueue::new(t.db.clone(), opts.clone());
        let mut consumer = queue.consume("crash", ConsumeOptions::default()).await?;
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await?
            .expect("a delivery");
        assert_eq!(delivery.message.attempt, attempt);
        std::mem::forget(delivery);
        queue.shutdown();
    }
    // The third claim finds it out of attempts and dead-letters it instead of delivering.
    let queue = DbQueue::new(t.db.clone(), opts);
    let mut consumer = queue.consume("crash", ConsumeOptions::default()).await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(800), consumer.next())
            .await
            .is_err(),
        "{}: delivered past max_attempts",
        t.name
    );
    assert_eq!(queue.stats("crash").await?.dead_lettered, 1, "{}", t.name);
    drop(consumer);
    queue.shutdown();
    Ok(())
}

async fn queue_publish(t: &db_common::TestDb, opts: &DbQueueOptions) -> anyhow::Result<()> {
    let queue = DbQueue::new(t.db.clone(), opts.clone());
    queue
        .publish("crash", Outgoing::with_id("c", &b"x"[..]))
        .await?;
    Ok(())
}
