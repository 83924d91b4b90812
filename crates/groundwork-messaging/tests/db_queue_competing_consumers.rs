//! Database backend, on SQLite and PostgreSQL: consumers competing for one queue (in one
//! handle and in several, as separate processes would) each get distinct jobs: 2,000 jobs,
//! every one delivered exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod db_common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers_get_each_job_once() -> anyhow::Result<()> {
    for t in db_common::all("competing_consumers_get_each_job_once").await? {
        let publisher = DbQueue::new(t.db.clone(), DbQueueOptions::default());
        let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let queue = DbQueue::new(t.db.clone(), DbQueueOptions::default());
            let mut consumer = queue
                .consume("shared", ConsumeOptions { prefetch: 20 })
                .await?;
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(delivery) = consumer.next().await {
                    *seen
                        .lock()
                        .unwrap()
                        .entry(delivery.message.id.clone())
                        .or_default() += 1;
                    delivery.ack().await.unwrap();
                }
            }));
            handles.push(queue);
        }
        for chunk in 0..4 {
            let batch = (0..500)
                .map(|n| Outgoing::with_id(format!("j-{chunk}-{n}"), &b"x"[..]))
                .collect();
            publisher.publish_batch("shared", batch).await?;
        }
        let done = db_common::eventually(Duration::from_secs(20), || async {
            seen.lock().unwrap().len() == 2_000
        })
        .await;
        assert!(
            done,
            "{}: {} of 2000 delivered",
            t.name,
            seen.lock().unwrap().len()
        );
        // Let any duplicate show up, then check.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let twice: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id.clone())
            .collect();
        assert!(twice.is_empty(), "{}: delivered twice: {twice:?}", t.name);
        assert_eq!(publisher.stats("shared").await?.depth, 0);
        for queue in &handles {
            queue.shutdown();
        }
        for task in tasks {
            task.await?;
        }
        t.cleanup().await;
    }
    Ok(())
}
