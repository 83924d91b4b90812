//! Load and chaos tool for groundwork-messaging, driven by the scripts in `bench/`
//! (`bench/queue_load.sh`, `bench/queue_chaos.sh`). Each subcommand prints one JSON line.
//!
//! ```text
//! queue_load amqp-publish   --amqp URL [--messages N] [--size BYTES] [--batch N]
//! queue_load db-throughput  --database URL [--jobs N] [--consumers N] [--prefetch N]
//! queue_load db-latency     --database URL [--rate N] [--seconds N]
//! queue_load chaos-publish  --amqp URL --queue Q --messages N --confirmed FILE
//! queue_load chaos-consume  --amqp URL --database URL --queue Q
//! queue_load chaos-report   --database URL --confirmed FILE
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_messaging::amqp::{AmqpOptions, AmqpQueue};
use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};
use serde_json::json;

fn args() -> (String, HashMap<String, String>) {
    let mut it = std::env::args().skip(1);
    let command = it.next().unwrap_or_default();
    let mut flags = HashMap::new();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        flags.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    (command, flags)
}

fn flag<T: std::str::FromStr>(flags: &HashMap<String, String>, name: &str, default: T) -> T {
    flags
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn required<'a>(flags: &'a HashMap<String, String>, name: &str) -> anyhow::Result<&'a str> {
    flags
        .get(name)
        .map(String::as_str)
        .with_context(|| format!("--{name} is required"))
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_micros())
}

async fn database(url: &str) -> anyhow::Result<Database> {
    let db = Database::connect(DatabaseOptions::new(url).max_connections(10)).await?;
    db.wait_ready(Duration::from_secs(10)).await?;
    db.migrate().await?;
    Ok(db)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (command, flags) = args();
    match command.as_str() {
        "amqp-publish" => amqp_publish(&flags).await,
        "db-throughput" => db_throughput(&flags).await,
        "db-latency" => db_latency(&flags).await,
        "chaos-publish" => chaos_publish(&flags).await,
        "chaos-consume" => chaos_consume(&flags).await,
        "chaos-report" => chaos_report(&flags).await,
        other => bail!("unknown command {other:?}; see the file's documentation"),
    }
}

/// Publishing rate with confirms, 1 KB persistent messages: our `publish_batch` and, as the
/// peer in the same run, lapin alone on one confirm channel with the same pipelining.
async fn amqp_publish(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let url = required(flags, "amqp")?;
    let messages: usize = flag(flags, "messages", 100_000);
    let size: usize = flag(flags, "size", 1024);
    let batch: usize = flag(flags, "batch", 1_000);
    let payload = bytes::Bytes::from(vec![b'x'; size]);

    let ours = AmqpQueue::new(url, AmqpOptions::default())?;
    let queue = unique("load-publish");
    ours.declare(&queue).await?;
    let started = Instant::now();
    for b in 0..messages.div_ceil(batch) {
        let n = batch.min(messages - b * batch);
        let out = (0..n)
            .map(|i| Outgoing::with_id(format!("{b}-{i}"), payload.clone()))
            .collect();
        ours.publish_batch(&queue, out).await?;
    }
    let ours_rate = messages as f64 / started.elapsed().as_secs_f64();
    ours.shutdown().await;

    // The peer: lapin directly, same broker, same message size, confirms, pipelined.
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let peer_queue = unique("load-publish-lapin");
    // A durable quorum queue, as ours.
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            peer_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await?;
    let started = Instant::now();
    for b in 0..messages.div_ceil(batch) {
        let n = batch.min(messages - b * batch);
        let mut confirms = Vec::with_capacity(n);
        for i in 0..n {
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        peer_queue.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &payload,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_message_id(format!("{b}-{i}").into()),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            confirm.await?;
        }
    }
    let peer_rate = messages as f64 / started.elapsed().as_secs_f64();
    // Leave nothing behind: the peer's queue, and ours with its dead-letter and delay
    // queues (100,000 persistent messages each).
    let mut leftovers = vec![peer_queue.clone(), queue.clone(), format!("{queue}.dead")];
    leftovers.extend((0..8).map(|i| format!("{queue}.retry.{i}")));
    for name in leftovers {
        let _ = channel
            .queue_delete(name.as_str().into(), Default::default())
            .await;
    }
    let _ = conn.close(0, "done".into()).await;
    println!(
        "{}",
        json!({
            "bench": "amqp-publish", "messages": messages, "size": size, "batch": batch,
            "groundwork_msgs_per_s": ours_rate.round(), "lapin_msgs_per_s": peer_rate.round(),
            "ratio": (ours_rate / peer_rate * 100.0).round() / 100.0, "queue": queue,
        })
    );
    Ok(())
}

/// No-op jobs through the database queue, producers and consumers at the same time:
/// `producers` tasks enqueue `jobs` in batches of `batch` while `consumers` consumers claim
/// (in batches of `prefetch`) and ack them. Reports the enqueue rate and the end-to-end rate
/// (jobs / time from the first enqueue to the last ack).
async fn db_throughput(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let url = required(flags, "database")?;
    let jobs: usize = flag(flags, "jobs", 50_000);
    let consumers: usize = flag(flags, "consumers", 2);
    let producers: usize = flag(flags, "producers", 2);
    let batch: usize = flag(flags, "batch", 100);
    let prefetch: u16 = flag(flags, "prefetch", 200);
    let db = database(url).await?;
    let queue_name = unique("load-db");
    let queue = DbQueue::new(db.clone(), DbQueueOptions::default());

    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let mut consumer = queue
            .consume(&queue_name, ConsumeOptions { prefetch })
            .await?;
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                // A no-op job: acknowledge at once, from its own task so acks batch up.
                let done = done.clone();
                tokio::spawn(async move {
                    if delivery.ack().await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }));
    }
    let started = Instant::now();
    let batches = jobs.div_ceil(batch);
    let mut producing = Vec::new();
    for p in 0..producers {
        let queue = queue.clone();
        let name = queue_name.clone();
        producing.push(tokio::spawn(async move {
            for b in (p..batches).step_by(producers) {
                let n = batch.min(jobs - b * batch);
                let out = (0..n)
                    .map(|i| Outgoing::with_id(format!("{b}-{i}"), &b"{}"[..]))
                    .collect();
                queue.publish_batch(&name, out).await?;
            }
            anyhow::Ok(())
        }));
    }
    for p in producing {
        p.await??;
    }
    let enqueue_rate = jobs as f64 / started.elapsed().as_secs_f64();
    while done.load(Ordering::Relaxed) < jobs as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "only {} of {jobs} jobs done in 300 s",
                done.load(Ordering::Relaxed)
            );
        }
    }
    let end_to_end = jobs as f64 / started.elapsed().as_secs_f64();
    queue.shutdown();
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "{}",
        json!({
            "bench": "db-throughput", "backend": db.backend_kind().as_str(), "jobs": jobs,
            "producers": producers, "batch": batch, "consumers": consumers, "prefetch": prefetch,
            "enqueue_jobs_per_s": enqueue_rate.round(), "end_to_end_jobs_per_s": end_to_end.round(),
        })
    );
    Ok(())
}

/// Enqueue-to-start latency of the database queue at a fixed rate: one job at a time,
/// `rate` per second for `seconds`, each carrying its enqueue time; the consumer notes when
/// it starts it.
async fn db_latency(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let url = required(flags, "database")?;
    let rate: u64 = flag(flags, "rate", 1_000);
    let seconds: u64 = flag(flags, "seconds", 20);
    let db = database(url).await?;
    let queue_name = unique("load-latency");
    let queue = DbQueue::new(db.clone(), DbQueueOptions::default());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut consumer = queue
        .consume(&queue_name, ConsumeOptions::default())
        .await?;
    let seen = latencies.clone();
    let consumer_task = tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            let started = now_micros();
            let sent: u64 = std::str::from_utf8(&delivery.message.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(started);
            seen.lock().unwrap().push(started.saturating_sub(sent));
            tokio::spawn(async move {
                let _ = delivery.ack().await;
            });
        }
    });
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = tokio::time::Instant::now();
    let mut publishers = Vec::new();
    for n in 0..total {
        // Open loop: job n is due at n / rate, whatever happened to the others.
        tokio::time::sleep_until(started + interval * n as u32).await;
        let queue = queue.clone();
        let name = queue_name.clone();
        publishers.push(tokio::spawn(async move {
            let body = now_micros().to_string();
            queue
                .publish(
                    &name,
                    Outgoing::with_id(format!("l-{n}"), body.into_bytes()),
                )
                .await
        }));
    }
    let mut errors = 0;
    for p in publishers {
        if !matches!(p.await, Ok(Ok(()))) {
            errors += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (latencies.lock().unwrap().len() as u64) < total - errors && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    queue.shutdown();
    let _ = consumer_task.await;
    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort_unstable();
    println!(
        "{}",
        json!({
            "bench": "db-latency", "backend": db.backend_kind().as_str(), "rate": rate,
            "seconds": seconds, "jobs": total, "started": sorted.len(), "publish_errors": errors,
            "p50_ms": percentile(&sorted, 50.0) as f64 / 1000.0,
            "p99_ms": percentile(&sorted, 99.0) as f64 / 1000.0,
            "max_ms": sorted.last().copied().unwrap_or(0) as f64 / 1000.0,
        })
    );
    Ok(())
}

/// Publishes `messages` ids `chaos-0..` to `queue` in batches, appending each confirmed
/// batch's ids to `confirmed` (one per line) with the time; a batch that fails (its
/// publish timed out) is retried until it is confirmed.
async fn chaos_publish(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let url = required(flags, "amqp")?;
    let queue_name = required(flags, "queue")?;
    let messages: usize = flag(flags, "messages", 100_000);
    let batch: usize = flag(flags, "batch", 200);
    let path = required(flags, "confirmed")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let queue = AmqpQueue::new(url, AmqpOptions::default())?;
    let payload = bytes::Bytes::from(vec![b'c'; 256]);
    let mut failures = 0_u64;
    for b in 0..messages.div_ceil(batch) {
        let ids: Vec<String> = (b * batch..(b * batch + batch).min(messages))
            .map(|n| format!("chaos-{n}"))
            .collect();
        loop {
            let out_batch = ids
                .iter()
                .map(|id| Outgoing::with_id(id.clone(), payload.clone()))
                .collect();
            match queue.publish_batch(queue_name, out_batch).await {
                Ok(()) => break,
                Err(err) => {
                    failures += 1;
                    eprintln!("publish failed ({err}); again");
                }
            }
        }
        let at = now_micros();
        for id in &ids {
            writeln!(out, "{id} {at}")?;
        }
        out.flush()?;
    }
    queue.shutdown().await;
    println!(
        "{}",
        json!({ "bench": "chaos-publish", "messages": messages, "failed_batches": failures })
    );
    Ok(())
}

/// Consumes `queue`: records every delivery, then processes it once through an inbox (the
/// effect and the inbox row in one transaction, as `Audit::record_once` does). Runs until
/// killed. Its tables live in the PostgreSQL database `--database` (created if missing).
async fn chaos_consume(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let url = required(flags, "amqp")?;
    let queue_name = required(flags, "queue")?.to_owned();
    let pool = chaos_pool(required(flags, "database")?).await?;
    let queue = AmqpQueue::new(url, AmqpOptions::default())?;
    let mut consumer = queue
        .consume(&queue_name, ConsumeOptions { prefetch: 50 })
        .await?;
    eprintln!("chaos consumer {} running", std::process::id());
    let slots = Arc::new(tokio::sync::Semaphore::new(50));
    while let Some(delivery) = consumer.next().await {
        let permit = slots.clone().acquire_owned().await?;
        let pool = pool.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let id = delivery.message.id.clone();
            let recorded = sqlx::query("INSERT INTO chaos_deliveries (message_id) VALUES ($1)")
                .bind(&id)
                .execute(&pool)
                .await;
            if recorded.is_err() {
                return; // not acked: it comes again
            }
            match chaos_process(&pool, &id).await {
                Ok(()) => {
                    let _ = delivery.ack().await;
                }
                Err(err) => {
                    let _ = delivery.retry(err.to_string()).await;
                }
            }
        });
    }
    Ok(())
}

async fn chaos_pool(url: &str) -> anyhow::Result<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect(url)
        .await?;
    for statement in [
        "CREATE TABLE IF NOT EXISTS chaos_deliveries (message_id TEXT NOT NULL, \
         at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())",
        "CREATE TABLE IF NOT EXISTS chaos_inbox (message_id TEXT PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS chaos_effects (message_id TEXT NOT NULL)",
    ] {
        sqlx::query(statement).execute(&pool).await?;
    }
    Ok(pool)
}

/// The effect, once per message id: the inbox row and the effect row in one transaction.
async fn chaos_process(pool: &sqlx::PgPool, id: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let first = sqlx::query(
        "INSERT INTO chaos_inbox (message_id) VALUES ($1) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if first {
        sqlx::query("INSERT INTO chaos_effects (message_id) VALUES ($1)")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Lost (confirmed, never processed), delivered twice, processed twice, and the longest gap
/// between two consecutive confirmations (the publisher's stall during the restart).
async fn chaos_report(flags: &HashMap<String, String>) -> anyhow::Result<()> {
    let pool = chaos_pool(required(flags, "database")?).await?;
    let path = required(flags, "confirmed")?;
    let text = std::fs::read_to_string(path)?;
    let mut confirmed = std::collections::HashSet::new();
    let mut times = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(id), Some(at)) = (parts.next(), parts.next()) {
            confirmed.insert(id.to_owned());
            times.push(at.parse::<u64>().unwrap_or(0));
        }
    }
    times.sort_unstable();
    times.dedup();
    let longest_gap_ms = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / 1000.0;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await }
    };
    let deliveries = count("SELECT COUNT(*) FROM chaos_deliveries").await?;
    let distinct_delivered =
        count("SELECT COUNT(DISTINCT message_id) FROM chaos_deliveries").await?;
    let effects = count("SELECT COUNT(*) FROM chaos_effects").await?;
    let distinct_effects = count("SELECT COUNT(DISTINCT message_id) FROM chaos_effects").await?;
    let processed: std::collections::HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT DISTINCT message_id FROM chaos_effects")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .collect();
    let lost = confirmed
        .iter()
        .filter(|id| !processed.contains(*id))
        .count();
    // Time to resume: from the broker's return (`--broker-up-us`, microseconds since the
    // epoch) to the next confirmation and the next delivery.
    let up: u64 = flag(flags, "broker-up-us", 0);
    let first_confirm_after = times
        .iter()
        .find(|t| **t >= up)
        .map(|t| (t - up) as f64 / 1e6);
    let first_delivery_after: Option<f64> = if up > 0 {
        sqlx::query_scalar::<_, Option<f64>>(
            "SELECT EXTRACT(EPOCH FROM MIN(at))::float8 FROM chaos_deliveries \
             WHERE at >= to_timestamp($1::float8 / 1000000)",
        )
        .bind(up as i64)
        .fetch_one(&pool)
        .await?
        .map(|t| t - up as f64 / 1e6)
    } else {
        None
    };
    println!(
        "{}",
        json!({
            "bench": "chaos-report", "confirmed": confirmed.len(), "processed": distinct_effects,
            "lost": lost, "deliveries": deliveries, "delivered_twice": deliveries - distinct_delivered,
            "processed_twice": effects - distinct_effects,
            "longest_confirm_gap_ms": longest_gap_ms,
            "resume_publish_s": first_confirm_after, "resume_consume_s": first_delivery_after,
        })
    );
    Ok(())
}
