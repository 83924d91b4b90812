//! The database backend: a durable queue in the `queue_jobs` table of SQLite or PostgreSQL,
//! for deployments without a broker.
//!
//! - **Claims in batches**: a consumer claims up to its prefetch in one statement; on
//!   PostgreSQL concurrent consumers skip each other's rows (`FOR UPDATE SKIP LOCKED`).
//! - **Leases**: a claim stamps the consumer's token and a lease (default 30 s), which the
//!   consumer extends while it runs; a job held by a consumer that died is delivered again
//!   when its lease runs out, and settling checks the token, so a late worker cannot settle a
//!   job delivered again since.
//! - **Wake-ups**: a publish in this process wakes its consumers at once; on PostgreSQL,
//!   `LISTEN groundwork_jobs` wakes consumers in other processes; otherwise consumers poll,
//!   backing off from 25 ms to 1 s while the queue is empty.
//! - **Acks in batches**: a consumer's acks are gathered and deleted in one statement.
//! - **Retries and dead letters**: a retried job becomes visible again after the policy's
//!   delay (with jitter); after [`RetryPolicy::max_attempts`] deliveries, or when rejected, it
//!   stays in the table as dead ([`groundwork_db::Jobs::dead`] lists them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use groundwork_db::{ClaimedJob, Database, NewMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::queue::{
    BoxFuture, ConsumeOptions, Consumer, Delivery, Message, Outcome, Outgoing, Queue, QueueError,
    QueueStats, Result, RetryPolicy, Settle, validate_queue_name,
};

/// Most messages one enqueue transaction carries.
const PUBLISH_CHUNK: usize = 500;
/// Most acks one delete carries.
const ACK_BATCH: usize = 500;

/// Settings of a [`DbQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbQueueOptions {
    /// Retry delays and the attempt limit.
    pub retry: RetryPolicy,
    /// How long a claimed job stays with its consumer without being extended (default
    /// 30 s). A consumer extends its leases every third of this while it works.
    pub lease: Duration,
    /// First wait of an idle consumer before it looks again (default 25 ms).
    pub poll_min: Duration,
    /// Longest wait of an idle consumer (default 1 s): the worst delay before a job
    /// enqueued by another process is seen on SQLite.
    pub poll_max: Duration,
}

impl Default for DbQueueOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            lease: Duration::from_secs(30),
            poll_min: Duration::from_millis(25),
            poll_max: Duration::from_secs(1),
        }
    }
}

/// Counters of one queue kept by this handle.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    options: DbQueueOptions,
    /// Per queue: bumped when a job is enqueued (here, or elsewhere on PostgreSQL).
    wake: Mutex<HashMap<String, watch::Sender<u64>>>,
    counters: Mutex<HashMap<String, Arc<Counters>>>,
    /// The PostgreSQL listener task, started by the first consumer.
    listening: AtomicBool,
    stop: CancellationToken,
}

/// A durable queue in the database (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DbQueue {
    inner: Arc<Inner>,
}

impl DbQueue {
    /// A queue over `db` (migrated). Tasks start with the first consumer.
    #[must_use]
    pub fn new(db: Database, options: DbQueueOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                options,
                wake: Mutex::new(HashMap::new()),
                counters: Mutex::new(HashMap::new()),
                listening: AtomicBool::new(false),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// The database it runs on.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Stops every consumer of this handle (their unsettled jobs come back when their leases
    /// run out).
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    fn check(&self, queue: &str) -> Result<()> {
        validate_queue_name(queue)?;
        self.inner.options.retry.check()
    }
}

impl Inner {
    fn waker(&self, queue: &str) -> watch::Sender<u64> {
        let mut wake = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        wake.entry(queue.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    fn wake(&self, queue: &str) {
        self.waker(queue).send_modify(|n| *n = n.wrapping_add(1));
    }

    fn wake_all(&self) {
        let wake = self.wake.lock().unwrap_or_else(PoisonError::into_inner);
        for sender in wake.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn counters(&self, queue: &str) -> Arc<Counters> {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.entry(queue.to_owned()).or_default().clone()
    }

    /// On PostgreSQL, starts (once) the task that turns `NOTIFY groundwork_jobs` into
    /// wake-ups, reconnecting after failures.
    fn listen(self: &Arc<Self>) {
        if self.db.backend_kind() != groundwork_db::BackendKind::Postgres {
            return;
        }
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::downgrade(self);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                let Some(this) = inner.upgrade() else { return };
                let listener = this.db.jobs().listen().await;
                drop(this);
                match listener {
                    Ok(Some(mut listener)) => {
                        pause = Duration::from_millis(100);
                        if let Some(this) = inner.upgrade() {
                            // Anything enqueued while no one listened.
                            this.wake_all();
                        }
                        loop {
                            let event = tokio::select! {
                                () = stop.cancelled() => return,
                                event = listener.next() => event,
                            };
                            let Some(this) = inner.upgrade() else { return };
                            match event {
                                Ok(Some(queue)) => this.wake(&queue),
                                Ok(None) => this.wake_all(),
                                Err(err) => {
                                    tracing::warn!(error = %err, "job listener lost its connection");
                                    break;
                                }
                            }
                        }
                    }
                    Ok(None) => return,
                    Err(err) => {
                        tracing::debug!(error = %err, "job listener cannot connect yet");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }
}

impl Queue for DbQueue {
    async fn declare(&self, queue: &str) -> Result<()> {
        self.check(queue)
    }

    async fn publish(&self, queue: &str, message: Outgoing) -> Result<()> {
        self.publish_batch(queue, vec![message]).await
    }

    async fn publish_batch(&self, queue: &str, messages: Vec<Outgoing>) -> Result<()> {
        self.check(queue)?;
        for message in &messages {
            message.check()?;
        }
        let counters = self.inner.counters(queue);
        for chunk in messages.chunks(PUBLISH_CHUNK) {
            let rows: Vec<NewMessage> = chunk
                .iter()
                .map(|m| NewMessage {
                    queue: queue.to_owned(),
                    message_id: m.id.clone(),
                    payload: m.payload.to_vec(),
                })
                .collect();
            self.inner.db.jobs().enqueue(&rows).await?;
            counters
                .published
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            metrics::counter!("groundwork_queue_published_total", "queue" => queue.to_owned(), "backend" => "database")
                .increment(chunk.len() as u64);
            self.inner.wake(queue);
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        self.check(queue)?;
        let prefetch = options.prefetch.max(1);
        let (tx, rx) = mpsc::channel(usize::from(prefetch));
        let stop = self.inner.stop.child_token();
        // Cancelled by `Consumer::cancel` (no more claims) or with `stop`; leases of the jobs
        // handed out are extended until `stop`.
        let cancel = stop.child_token();
        self.inner.listen();
        let consumer = ConsumerTask {
            inner: self.inner.clone(),
            queue: queue.to_owned(),
            token: fastrand::i64(1..i64::MAX),
            in_flight: Arc::new(Semaphore::new(usize::from(prefetch))),
            prefetch: u32::from(prefetch),
            counters: self.inner.counters(queue),
        };
        tokio::spawn(consumer.run(tx, stop.clone(), cancel.clone()));
        Ok(Consumer::with_cancel(rx, stop, cancel))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        self.check(queue)?;
        let counts = self.inner.db.jobs().counts(queue).await?;
        let counters = self.inner.counters(queue);
        let stats = QueueStats {
            queue: queue.to_owned(),
            depth: u64::try_from(counts.ready).unwrap_or(0),
            in_flight: u64::try_from(counts.leased).unwrap_or(0),
            delayed: u64::try_from(counts.delayed).unwrap_or(0),
            dead_lettered: u64::try_from(counts.dead).unwrap_or(0),
            retried: counters.retried.load(Ordering::Relaxed),
            published: counters.published.load(Ordering::Relaxed),
            acked: counters.acked.load(Ordering::Relaxed),
        };
        crate::figures::publish(&stats, "database");
        Ok(stats)
    }
}

/// One consumer: claims, hands out, extends leases, batches acks.
struct ConsumerTask {
    inner: Arc<Inner>,
    queue: String,
    token: i64,
    in_flight: Arc<Semaphore>,
    prefetch: u32,
    counters: Arc<Counters>,
}

type AckRequest = (i64, oneshot::Sender<Result<()>>);

impl ConsumerTask {
    /// Claims and hands out jobs until `claiming` is cancelled (by [`Consumer::cancel`], or
    /// with `stop`); extends the leases of the jobs handed out until `stop`.
    async fn run(
        self,
        tx: mpsc::Sender<Delivery>,
        stop: CancellationToken,
        claiming: CancellationToken,
    ) {
        let this = Arc::new(self);
        let (ack_tx, ack_rx) = mpsc::channel::<AckRequest>(ACK_BATCH * 2);
        tokio::spawn(this.clone().acks(ack_rx));
        tokio::spawn(this.clone().extend_leases(stop));
        let stop = claiming;
        let mut wake = this.inner.waker(&this.queue).subscribe();
        let options = &this.inner.options;
        let mut idle = options.poll_min;
        loop {
            // Room for at least one more delivery before claiming.
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                permit = this.in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let room = u32::try_from(this.in_flight.available_permits())
                .unwrap_or(u32::MAX)
                .saturating_add(1)
                .min(this.prefetch);
            wake.borrow_and_update();
            match this
                .inner
                .db
                .jobs()
                .claim(&this.queue, room, options.lease, this.token)
                .await
            {
                Ok(jobs) if !jobs.is_empty() => {
                    idle = options.poll_min;
                    let mut permit = Some(permit);
                    for job in jobs {
                        let permit = match permit.take() {
                            Some(p) => p,
                            None => match this.in_flight.clone().try_acquire_owned() {
                                Ok(p) => p,
                                // Cannot happen (we claimed no more than the room), but a
                                // job without a permit is still delivered, never dropped.
                                Err(_) => match this.in_flight.clone().acquire_owned().await {
                                    Ok(p) => p,
                                    Err(_) => return,
                                },
                            },
                        };
                        if let Some(delivery) = this.deliver(job, permit, &ack_tx).await
                            && tx.send(delivery).await.is_err()
                        {
                            // The consumer was dropped: the unsettled jobs come back when
                            // their leases run out.
                            return;
                        }
                    }
                }
                Ok(_) => {
                    drop(permit);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = wake.changed() => {}
                        () = tokio::time::sleep(idle) => {}
                    }
                    idle = (idle * 2).min(options.poll_max);
                }
                Err(err) => {
                    drop(permit);
                    tracing::warn!(queue = %this.queue, error = %err, "cannot claim jobs");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(options.poll_max) => {}
                    }
                }
            }
        }
    }

    /// A delivery for `job`, or `None` when it has used up its attempts without being
    /// settled (its consumers died) and was dead-lettered instead.
    async fn deliver(
        self: &Arc<Self>,
        job: ClaimedJob,
        permit: OwnedSemaphorePermit,
        acks: &mpsc::Sender<AckRequest>,
    ) -> Option<Delivery> {
        let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
        let policy = &self.inner.options.retry;
        if attempt > policy.max_attempts {
            let error = format!(
                "delivered {} times without being settled (its consumers stopped)",
                policy.max_attempts
            );
            match self.inner.db.jobs().bury(job.id, self.token, &error).await {
                Ok(_) => self.dead_lettered(),
                Err(err) => {
                    tracing::warn!(queue = %self.queue, error = %err, "cannot dead-letter a job")
                }
            }
            return None;
        }
        let message = Message {
            id: job.message_id,
            queue: self.queue.clone(),
            payload: job.payload.into(),
            attempt,
        };
        Some(Delivery::new(
            message,
            Box::new(DbSettle {
                task: self.clone(),
                id: job.id,
                acks: acks.clone(),
                _permit: permit,
            }),
        ))
    }

    fn dead_lettered(&self) {
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("groundwork_queue_dead_lettered_total", "queue" => self.queue.clone(), "backend" => "database")
            .increment(1);
    }

    /// Gathers acks and deletes them in batches.
    async fn acks(self: Arc<Self>, mut rx: mpsc::Receiver<AckRequest>) {
        let mut batch: Vec<AckRequest> = Vec::with_capacity(ACK_BATCH);
        while rx.recv_many(&mut batch, ACK_BATCH).await > 0 {
            let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
            match self.inner.db.jobs().ack(&ids, self.token).await {
                Ok(deleted) => {
                    self.counters
                        .acked
                        .fetch_add(deleted.len() as u64, Ordering::Relaxed);
                    metrics::counter!("groundwork_queue_acked_total", "queue" => self.queue.clone(), "backend" => "database")
                        .increment(deleted.len() as u64);
                    for (id, reply) in batch.drain(..) {
                        let outcome = if deleted.contains(&id) {
                            Ok(())
                        } else {
                            Err(QueueError::LeaseLost(id.to_string()))
                        };
                        let _ = reply.send(outcome);
                    }
                }
                Err(err) => {
                    let message = err.to_string();
                    for (_, reply) in batch.drain(..) {
                        let _ = reply.send(Err(QueueError::Unavailable(message.clone())));
                    }
                }
            }
        }
    }

    /// Extends this consumer's leases every third of the lease until it stops.
    async fn extend_leases(self: Arc<Self>, stop: CancellationToken) {
        let every = self.inner.options.lease / 3;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if self.in_flight.available_permits() == self.prefetch as usize {
                continue; // nothing held
            }
            if let Err(err) = self
                .inner
                .db
                .jobs()
                .extend(self.token, self.inner.options.lease)
                .await
            {
                tracing::warn!(queue = %self.queue, error = %err, "cannot extend job leases");
            }
        }
    }
}

/// Settles one job of a [`DbQueue`].
struct DbSettle {
    task: Arc<ConsumerTask>,
    id: i64,
    acks: mpsc::Sender<AckRequest>,
    /// Frees the consumer's room for another delivery when settled (or dropped).
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for DbSettle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSettle")
            .field("queue", &self.task.queue)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Settle for DbSettle {
    fn settle(self: Box<Self>, message: &Message, outcome: Outcome) -> BoxFuture<'_, Result<()>> {
        let attempt = message.attempt;
        Box::pin(async move {
            let task = &self.task;
            let jobs = task.inner.db.jobs();
            let policy = &task.inner.options.retry;
            let lost = || QueueError::LeaseLost(message.id.clone());
            match outcome {
                Outcome::Ack => {
                    let (reply, answer) = oneshot::channel();
                    self.acks
                        .send((self.id, reply))
                        .await
                        .map_err(|_| QueueError::Closed)?;
                    answer.await.map_err(|_| QueueError::Closed)?
                }
                Outcome::Retry(error) if !policy.exhausted(attempt) => {
                    let delay = jittered(policy.delay(attempt));
                    let at = groundwork_db::now()
                        + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
                    if !jobs.retry(self.id, task.token, at, &error).await? {
                        return Err(lost());
                    }
                    task.counters.retried.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("groundwork_queue_retried_total", "queue" => task.queue.clone(), "backend" => "database")
                        .increment(1);
                    Ok(())
                }
                Outcome::Retry(error) | Outcome::Reject(error) => {
                    if !jobs.bury(self.id, task.token, &error).await? {
                        return Err(lost());
                    }
                    task.dead_lettered();
                    Ok(())
                }
            }
        })
    }
}

/// `delay` give or take up to 10 %, so that jobs that failed together do not all come back
/// in the same instant.
fn jittered(delay: Duration) -> Duration {
    let spread = delay.as_secs_f64() * 0.1;
    Duration::from_secs_f64((delay.as_secs_f64() + spread * (fastrand::f64() * 2.0 - 1.0)).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1_000 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
