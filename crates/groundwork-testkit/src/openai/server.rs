//! The HTTP side of the fake: one accept task owns the listener and, in a [`JoinSet`], one
//! task per connection, served by hyper's HTTP/1.1 server with an axum router.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::completion::{Chat, error_body};
use super::{Plan, Shared};

/// The pause after a failed `accept` (out of file descriptors, for instance).
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// Accepts connections and serves each in its own task, until aborted.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let router = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/mock/connections", get(connection_counts))
        .route("/mock/connections/reset-peak", post(reset_peak_open))
        .with_state(Arc::clone(&shared));
    let http = hyper::server::conn::http1::Builder::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.accepted();
                    let carried = CarriedCall::default();
                    // Events must leave at once, not wait for the previous one's ACK.
                    let _ = stream.set_nodelay(true);
                    let connection = http.serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(router.clone().layer(Extension(carried.clone()))),
                    );
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        // Errors (a client gone, a cut stream) just end the connection.
                        let _ = connection.await;
                        if carried.0.load(Ordering::Acquire) {
                            shared.closed();
                        }
                    });
                }
                Err(_) => tokio::time::sleep(ACCEPT_PAUSE).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Whether a connection carried a chat call (one per connection, in each request's
/// extensions): only those count as open, so a benchmark reading the counters over HTTP does
/// not count its own connection.
#[derive(Clone, Default)]
struct CarriedCall(Arc<AtomicBool>);

/// `GET /mock/connections`.
async fn connection_counts(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.connection_counts()).into_response()
}

/// `POST /mock/connections/reset-peak`.
async fn reset_peak_open(State(shared): State<Arc<Shared>>) -> Response {
    shared.reset_peak_open();
    axum::Json(shared.connection_counts()).into_response()
}

/// `POST /v1/chat/completions`.
async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    Extension(carried): Extension<CarriedCall>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !carried.0.swap(true, Ordering::AcqRel) {
        shared.opened();
    }
    let plan = shared.plan();
    let request = serde_json::from_slice::<Value>(&body).ok();
    let chat = Chat::parse(request.as_ref());
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    shared.record(request, authorization);

    if !plan.latency.is_zero() {
        shared.sleep(plan.latency).await;
    }
    if let Some((status, retry_after)) = plan.failure {
        let message = format!("Mock failure: {status}.");
        let mut response = json_response(status, error_body(status.as_u16(), &message));
        if let Some(retry_after) = retry_after {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
    match chat {
        Err(message) => json_response(StatusCode::BAD_REQUEST, error_body(400, message)),
        Ok(chat) if chat.stream => stream_response(&chat, &plan, shared),
        Ok(chat) => json_response(StatusCode::OK, chat.completion(plan.call)),
    }
}

/// A JSON answer.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A stream's progress.
struct Streaming {
    events: std::vec::IntoIter<Bytes>,
    sent: usize,
    plan: Plan,
    shared: Arc<Shared>,
}

/// A `text/event-stream` answer, paced and cut as `plan` says.
fn stream_response(chat: &Chat, plan: &Plan, shared: Arc<Shared>) -> Response {
    let streaming = Streaming {
        events: chat.events(plan.call, plan.chunks).into_iter(),
        sent: 0,
        plan: *plan,
        shared,
    };
    let events = futures_util::stream::unfold(Some(streaming), |streaming| async move {
        let mut streaming = streaming?;
        if streaming.events.len() == 0 {
            return None;
        }
        if streaming.plan.cut_after == Some(streaming.sent) {
            // Let hyper flush what it buffered (the headers, the events so far) before the
            // error makes it close the connection without ending the chunked body.
            tokio::task::yield_now().await;
            return Some((Err(io::Error::other("stream cut by the mock")), None));
        }
        let event = streaming.events.next()?;
        let delay = if streaming.sent == 0 {
            streaming.plan.first_byte_delay
        } else {
            streaming.plan.chunk_delay
        };
        if !delay.is_zero() {
            streaming.shared.sleep(delay).await;
        }
        streaming.sent += 1;
        Some((Ok(event), Some(streaming)))
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(events),
    )
        .into_response()
}
