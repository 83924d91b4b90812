//! `/api/v1/queues`: the figures of every queue the server uses.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

/// The queues' figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Queues {
    /// `amqp` (RabbitMQ) or `database` (the embedded queue).
    pub backend: &'static str,
    /// Messages staged by the API and not yet published (the transactional outbox), when
    /// it could be read.
    pub outbox_pending: Option<i64>,
    /// Per queue: depth (waiting), in flight (delivered, not settled), delayed (waiting for
    /// a retry), dead-lettered, and this instance's published / acked / retried counts.
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<groundwork_messaging::QueueStats>,
    /// Queues whose figures could not be read, with why.
    pub errors: Vec<QueueError>,
}

/// A queue whose figures could not be read.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueError {
    /// The queue.
    pub queue: String,
    /// Why.
    pub error: String,
}

/// Reads the figures of every queue.
pub async fn report(state: &AppState) -> Queues {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for result in state.messaging.stats().await {
        match result {
            Ok(stats) => items.push(stats),
            Err((queue, error)) => errors.push(QueueError { queue, error }),
        }
    }
    Queues {
        backend: state.messaging.backend(),
        outbox_pending: state.db.outbox().pending().await.ok(),
        items,
        errors,
    }
}

/// Queue figures: depth, in flight, delayed, dead-lettered, published, acked, retried.
#[utoipa::path(get, path = "/queues", tag = "system",
    responses((status = 200, description = "Queue figures", body = Queues)))]
pub async fn queues(State(state): State<AppState>) -> Json<Queues> {
    Json(report(&state).await)
}
