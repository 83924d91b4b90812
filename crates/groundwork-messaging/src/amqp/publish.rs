//! Publishing with confirms: pipelined on one confirm-mode channel per connection, and sent
//! again on the next connection when the confirm never came.

use std::task::Poll;

use bytes::Bytes;
use futures_util::future::join_all;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use tokio::time::Instant;
use tracing::debug;

use super::connection::{Backoff, Live, Shared, pause};
use super::stats::Counters;
use super::topology::{ATTEMPT_HEADER, ERROR_HEADER, QUEUE_HEADER, TopologyError};
use crate::queue::{Outgoing, QueueError, Result};

/// The most publishes sent before waiting for their confirms, in a batch: bounds what one
/// batch queues in memory, at the cost of one round trip per window.
const WINDOW: usize = 1024;
/// The longest error text kept in a header.
const MAX_ERROR_LEN: usize = 1024;

/// One message to publish.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    /// The RabbitMQ queue (the default exchange routes by queue name).
    routing_key: String,
    id: String,
    payload: Bytes,
    headers: FieldTable,
}

impl Draft {
    /// A message published by the application to `queue`: attempt 1.
    pub(super) fn first_attempt(queue: &str, message: Outgoing) -> Self {
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(1));
        Self {
            routing_key: queue.to_owned(),
            id: message.id,
            payload: message.payload,
            headers,
        }
    }

    /// A copy of a delivered message for `target` (a delay or dead-letter queue of `queue`),
    /// for attempt `attempt`, after `error`.
    pub(super) fn copy(
        target: String,
        queue: &str,
        id: &str,
        payload: Bytes,
        attempt: u32,
        error: &str,
    ) -> Self {
        let mut headers = FieldTable::default();
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        headers.insert(
            ERROR_HEADER.into(),
            AMQPValue::LongString(truncate(error, MAX_ERROR_LEN).into()),
        );
        headers.insert(QUEUE_HEADER.into(), AMQPValue::LongString(queue.into()));
        Self {
            routing_key: target,
            id: id.to_owned(),
            payload,
            headers,
        }
    }

    fn properties(&self) -> BasicProperties {
        BasicProperties::default()
            .with_delivery_mode(2) // persistent
            .with_content_type("application/octet-stream".into())
            .with_message_id(self.id.as_str().into())
            .with_headers(self.headers.clone())
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What became of one publish.
#[derive(Debug)]
enum Sent {
    /// The broker confirmed it.
    Confirmed,
    /// The broker returned it as unroutable (the queue does not exist).
    Returned(String),
    /// The broker refused it (a negative confirm).
    Nacked,
    /// The channel or connection failed before the confirm: send it again.
    Failed(String),
}

impl Sent {
    fn of(confirmation: lapin::Result<Confirmation>) -> Self {
        match confirmation {
            Ok(Confirmation::Ack(None)) => Self::Confirmed,
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => {
                Self::Returned(format!("{} {}", returned.reply_code, returned.reply_text))
            }
            Ok(Confirmation::Nack(None)) => Self::Nacked,
            Ok(Confirmation::NotRequested) => {
                Self::Failed("the publishing channel is not in confirm mode".into())
            }
            Err(err) => Self::Failed(err.to_string()),
        }
    }
}

/// Publishes `drafts` on `live` and waits for their confirms: all frames of a window first,
/// then all confirms, so that a batch costs one round trip per window, not per message.
async fn send_all(live: &Live, drafts: &[Draft]) -> Vec<Sent> {
    let channel = match live.publisher().await {
        Ok(channel) => channel,
        Err(err) => {
            return drafts
                .iter()
                .map(|_| Sent::Failed(format!("opening the publishing channel: {err}")))
                .collect();
        }
    };
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut outcomes = Vec::with_capacity(drafts.len());
    for window in drafts.chunks(WINDOW) {
        let mut confirms = Vec::with_capacity(window.len());
        for draft in window {
            let mut send = Box::pin(channel.basic_publish(
                "".into(),
                draft.routing_key.as_str().into(),
                options,
                &draft.payload,
                draft.properties(),
            ));
            let started = live.start_send(&mut send).await;
            confirms.push(async move {
                let sent = match started {
                    Poll::Ready(sent) => sent,
                    Poll::Pending => send.await,
                };
                match sent {
                    Ok(confirm) => Sent::of(confirm.await),
                    Err(err) => Sent::Failed(err.to_string()),
                }
            });
        }
        outcomes.extend(join_all(confirms).await);
    }
    outcomes
}

impl Shared {
    /// Publishes `drafts` for the logical queue `queue` (declaring its topology first) and
    /// waits for their confirms, sending the unconfirmed ones again, on a new channel or
    /// connection, until [`AmqpOptions::publish_timeout`](super::AmqpOptions::publish_timeout).
    /// Counts the confirmed ones in `counters`. Gives up with [`QueueError::Unavailable`]
    /// when `wanted` says so before sending again.
    ///
    /// # Errors
    /// [`QueueError::Refused`] when the broker refuses or returns a message (the others may
    /// have been stored), [`QueueError::Timeout`] when the confirms did not come in time,
    /// [`QueueError::Closed`] after shutdown.
    pub(super) async fn publish(
        &self,
        queue: &str,
        mut drafts: Vec<Draft>,
        counters: Option<&Counters>,
        wanted: Option<&(dyn Fn() -> bool + Send + Sync)>,
    ) -> Result<()> {
        let budget = self.options.publish_timeout;
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::new(self.options.reconnect_min, self.options.reconnect_max);
        loop {
            let live = self.live_until(deadline, budget).await?;
            match tokio::time::timeout_at(deadline, self.ensure_declared(&live, queue)).await {
                Err(_) => return Err(QueueError::Timeout(budget)),
                Ok(Err(TopologyError::Refused(why))) => return Err(QueueError::Refused(why)),
                Ok(Err(TopologyError::Transient(err))) => {
                    debug!(queue, error = %err, "declaring the queue failed; trying again");
                    self.suspect();
                    pause(&mut backoff, deadline, budget).await?;
                    continue;
                }
                Ok(Ok(())) => {}
            }
            let Ok(outcomes) = tokio::time::timeout_at(deadline, send_all(&live, &drafts)).await
            else {
                return Err(QueueError::Timeout(budget));
            };
            let mut confirmed = 0;
            let mut refused = None;
            let mut failed = Vec::new();
            let mut last_failure = String::new();
            for (draft, outcome) in drafts.into_iter().zip(outcomes) {
                match outcome {
                    Sent::Confirmed => confirmed += 1,
                    Sent::Returned(why) => {
                        // Deleted under us: declare it again next time.
                        live.forget(queue);
                        refused.get_or_insert_with(|| {
                            format!(
                                "message {} was returned: no queue {} ({why})",
                                draft.id, draft.routing_key
                            )
                        });
                    }
                    Sent::Nacked => {
                        refused.get_or_insert_with(|| {
                            format!(
                                "the broker did not accept message {} for queue {} (negative confirm)",
                                draft.id, draft.routing_key
                            )
                        });
                    }
                    Sent::Failed(why) => {
                        last_failure = why;
                        failed.push(draft);
                    }
                }
            }
            if let Some(counters) = counters {
                counters.published(confirmed);
            }
            if let Some(why) = refused {
                return Err(QueueError::Refused(why));
            }
            if failed.is_empty() {
                return Ok(());
            }
            debug!(
                queue,
                unconfirmed = failed.len(),
                generation = live.generation,
                error = %last_failure,
                "publishes were not confirmed; sending them again"
            );
            if !live.is_connected() {
                self.suspect();
            }
            if wanted.is_some_and(|wanted| !wanted()) {
                return Err(QueueError::Unavailable(format!(
                    "publishing to {queue} failed ({last_failure}) and the delivery it settles \
                     is gone"
                )));
            }
            drafts = failed;
            pause(&mut backoff, deadline, budget).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abcdef", 4), "abcd");
    }

    #[test]
    fn first_attempts_carry_the_attempt_header() {
        let draft = Draft::first_attempt("jobs", Outgoing::with_id("m-1", &b"x"[..]));
        let properties = draft.properties();
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(|id| id.as_str()),
            Some("m-1")
        );
        let attempt = properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get(ATTEMPT_HEADER).cloned());
        assert_eq!(attempt, Some(AMQPValue::LongLongInt(1)));
    }
}
