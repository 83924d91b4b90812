//! Database backend, on SQLite and PostgreSQL: a consumer that dies before acking leaves its
//! job to come again when the lease runs out, and a consumer deduplicating through the inbox
//! processes it once; a live consumer keeps its jobs past the lease by extending it; a late
//! ack after the job was delivered again is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db_common;

use std::time::Duration;

use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue, QueueError};

fn short_lease() -> DbQueueOptions {
    DbQueueOptions {
        lease: Duration::from_millis(300),
        poll_min: Duration::from_millis(10),
        poll_max: Duration::from_millis(50),
        ..DbQueueOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_consumer_died_comes_again_and_is_processed_once() -> anyhow::Result<()> {
    for t in db_common::all("a_job_whose_consumer_died_comes_again").await? {
        let queue = DbQueue::new(t.db.clone(), short_lease());
        queue
            .publish("work", Outgoing::with_id("once", &b"x"[..]))
            .await?;

        // A consumer takes it, "processes" it (records it in the inbox in the same
        // transaction as its effect) and dies before acking.
        let mut first = queue.consume("work", ConsumeOptions::default()).await?;
        let delivery = tokio::time::timeout(Duration::from_secs(5), first.next())
            .await?
            .expect("a delivery");
        assert_eq!(delivery.message.attempt, 1);
        assert!(t.db.inbox().record("worker", &delivery.message.id).await?);
        std::mem::forget(delivery); // no ack, no drop-time cleanup: as if the process died
        drop(first);

        // Another consumer gets it again once the lease has run out.
        let mut second = queue.consume("work", ConsumeOptions::default()).await?;
        let again = tokio::time::timeout(Duration::from_secs(5), second.next())
            .await?
            .expect("the job again");
        assert_eq!(again.message.id, "once");
        assert_eq!(again.message.attempt, 2, "{}", t.name);
        // The inbox says it was processed: the second consumer only acks.
        assert!(!t.db.inbox().record("worker", &again.message.id).await?);
        again.ack().await?;
        assert_eq!(queue.stats("work").await?.depth, 0);
        drop(second);
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_consumer_keeps_its_job_past_the_lease() -> anyhow::Result<()> {
    for t in db_common::all("a_live_consumer_keeps_its_job_past_the_lease").await? {
        let queue = DbQueue::new(t.db.clone(), short_lease());
        queue
            .publish("slow", Outgoing::with_id("long", &b"x"[..]))
            .await?;
        let mut consumer = queue.consume("slow", ConsumeOptions::default()).await?;
        let mut rival = queue.consume("slow", ConsumeOptions::default()).await?;
        let (delivery, from_rival) = tokio::select! {
            d = consumer.next() => (d.expect("a delivery"), false),
            d = rival.next() => (d.expect("a delivery"), true),
        };
        // Work for three leases: the holder extends, nobody else gets it.
        let other = if from_rival {
            &mut consumer
        } else {
            &mut rival
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(900), other.next())
                .await
                .is_err(),
            "{}: delivered twice while its consumer was alive",
            t.name
        );
        delivery.ack().await?;
        drop((consumer, rival));
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_after_the_job_came_again_is_refused() -> anyhow::Result<()> {
    for t in db_common::all("an_ack_after_the_job_came_again_is_refused").await? {
        let slow = DbQueue::new(t.db.clone(), short_lease());
        slow.publish("late", Outgoing::with_id("l", &b"x"[..]))
            .await?;
        let mut first = slow.consume("late", ConsumeOptions::default()).await?;
        let stale = first.next().await.expect("a delivery");
        // This handle stops extending (as a frozen process would), the lease runs out, and
        // another handle's consumer takes the job.
        slow.shutdown();
        let other = DbQueue::new(t.db.clone(), short_lease());
        let mut second = other.consume("late", ConsumeOptions::default()).await?;
        let fresh = tokio::time::timeout(Duration::from_secs(5), second.next())
            .await?
            .expect("the job again");
        let err = stale.ack().await.unwrap_err();
        assert!(
            matches!(err, QueueError::LeaseLost(_) | QueueError::Closed),
            "{}: {err}",
            t.name
        );
        fresh.ack().await?;
        assert_eq!(other.stats("late").await?.depth, 0);
        drop((first, second));
        other.shutdown();
        t.cleanup().await;
    }
    Ok(())
}
