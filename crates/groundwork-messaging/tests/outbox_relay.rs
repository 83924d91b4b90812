//! The transactional outbox, on SQLite and PostgreSQL: an execution and its messages commit
//! together (or not at all); the relay publishes staged messages and removes them; while the
//! queue is down they stay, and the relay delivers them once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use groundwork_db::{NewMessage, NewWorkflow};
use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::outbox::{OutboxRelay, RelayOptions};
use groundwork_messaging::{
    ConsumeOptions, Consumer, Outgoing, Queue, QueueError, QueueStats, Result,
};
use serde_json::json;

fn job(queue: &str, id: String, execution: i64) -> NewMessage {
    NewMessage {
        queue: queue.to_owned(),
        message_id: id,
        payload: serde_json::to_vec(&json!({ "execution_id": execution })).unwrap(),
    }
}

fn relay_options() -> RelayOptions {
    RelayOptions {
        poll: Duration::from_millis(20),
        ..RelayOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_and_its_message_commit_together() -> anyhow::Result<()> {
    for t in db_common::all("an_execution_and_its_message_commit_together").await? {
        let w =
            t.db.workflows()
                .create(
                    "test",
                    &NewWorkflow {
                        name: "w".into(),
                        description: None,
                        steps: json!([]),
                    },
                )
                .await?;
        let e =
            t.db.executions()
                .enqueue(w.id, &json!({}), |e| {
                    vec![job("workflow.execute", format!("run-{}", e.id), e.id)]
                })
                .await?;
        assert_eq!(e.status.as_str(), "queued");
        assert_eq!(t.db.outbox().pending().await?, 1, "{}", t.name);

        // A failing write stages nothing.
        let missing =
            t.db.executions()
                .enqueue(w.id + 1_000, &json!({}), |e| {
                    vec![job("workflow.execute", format!("run-{}", e.id), e.id)]
                })
                .await;
        assert!(missing.is_err());
        assert_eq!(t.db.outbox().pending().await?, 1, "{}", t.name);

        // The relay publishes it and removes it.
        let queue = DbQueue::new(t.db.clone(), DbQueueOptions::default());
        let relay = OutboxRelay::new(t.db.clone(), queue.clone(), relay_options());
        assert_eq!(relay.relay_once().await?, 1);
        assert_eq!(t.db.outbox().pending().await?, 0);
        let mut consumer = queue
            .consume("workflow.execute", ConsumeOptions::default())
            .await?;
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await?
            .expect("the relayed message");
        assert_eq!(delivery.message.id, format!("run-{}", e.id));
        assert_eq!(
            delivery.message.json::<serde_json::Value>()?["execution_id"],
            e.id
        );
        delivery.ack().await?;
        drop(consumer);
        queue.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

/// A queue that refuses everything while `down` is set.
#[derive(Clone)]
struct Flaky {
    inner: DbQueue,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl Flaky {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(QueueError::Unavailable("broker down (test)".into()));
        }
        Ok(())
    }
}

impl Queue for Flaky {
    async fn declare(&self, queue: &str) -> Result<()> {
        self.inner.declare(queue).await
    }
    async fn publish(&self, queue: &str, message: Outgoing) -> Result<()> {
        self.check()?;
        self.inner.publish(queue, message).await
    }
    async fn publish_batch(&self, queue: &str, messages: Vec<Outgoing>) -> Result<()> {
        self.check()?;
        self.inner.publish_batch(queue, messages).await
    }
    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        self.inner.consume(queue, options).await
    }
    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.inner.stats(queue).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_messages_wait_out_an_outage_and_are_relayed_after() -> anyhow::Result<()> {
    for t in db_common::all("staged_messages_wait_out_an_outage").await? {
        let inner = DbQueue::new(t.db.clone(), DbQueueOptions::default());
        let flaky = Flaky {
            inner: inner.clone(),
            down: Arc::new(AtomicBool::new(true)),
            refused: Arc::default(),
        };
        let relay = OutboxRelay::new(t.db.clone(), flaky.clone(), relay_options());
        let wake = relay.notifier();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = relay.spawn(stop.clone());

        let staged: Vec<NewMessage> = (0..50)
            .map(|n| NewMessage {
                queue: "notification.send".into(),
                message_id: format!("n-{n}"),
                payload: b"{}".to_vec(),
            })
            .collect();
        t.db.outbox().stage(&staged).await?;
        wake.notify_one();

        // While the queue is down the relay keeps trying and nothing is lost.
        assert!(
            db_common::eventually(Duration::from_secs(5), || async {
                flaky.refused.load(Ordering::SeqCst) >= 2
            })
            .await
        );
        assert_eq!(t.db.outbox().pending().await?, 50, "{}", t.name);

        // Back up: everything is relayed, once.
        flaky.down.store(false, Ordering::SeqCst);
        assert!(
            db_common::eventually(Duration::from_secs(10), || async {
                t.db.outbox().pending().await.ok() == Some(0)
            })
            .await,
            "{}: the outbox should drain after the outage",
            t.name
        );
        assert_eq!(
            inner.stats("notification.send").await?.depth,
            50,
            "{}",
            t.name
        );
        stop.cancel();
        task.await?;
        inner.shutdown();
        t.cleanup().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_remembers_ids_until_pruned() -> anyhow::Result<()> {
    for t in db_common::all("the_inbox_remembers_ids_until_pruned").await? {
        let inbox = t.db.inbox();
        assert!(inbox.record("c", "m-1").await?, "{}", t.name);
        assert!(
            !inbox.record("c", "m-1").await?,
            "{}: recorded twice",
            t.name
        );
        assert!(inbox.record("other", "m-1").await?, "consumers are apart");
        assert!(inbox.contains("c", "m-1").await?);
        // Nothing is older than an hour ago; everything is older than an hour from now.
        let hour = chrono::TimeDelta::hours(1);
        assert_eq!(inbox.prune(groundwork_db::now() - hour).await?, 0);
        assert_eq!(
            inbox.prune(groundwork_db::now() + hour).await?,
            2,
            "{}",
            t.name
        );
        assert!(!inbox.contains("c", "m-1").await?);
        t.cleanup().await;
    }
    Ok(())
}
