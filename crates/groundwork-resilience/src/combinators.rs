//! Batches with bounded concurrency, parallel calls with a deadline, explicit fallbacks.

use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream;

use crate::timeout::Elapsed;

/// The default concurrency of [`batch`] (the seeds' batch operations).
pub const DEFAULT_BATCH_CONCURRENCY: usize = 5;

/// The default deadline of [`parallel`] (the seeds' parallel AI calls).
pub const DEFAULT_PARALLEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `f` on every item with at most `max_concurrent` (at least 1) running at a time;
/// the results come back in the items' order, one per item, errors included.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use groundwork_resilience::batch;
///
/// let doubled = batch(1..=4, 2, |n| async move { n * 2 }).await;
/// assert_eq!(doubled, [2, 4, 6, 8]);
/// # });
/// ```
pub async fn batch<I, F, Fut>(items: I, max_concurrent: usize, f: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future,
{
    stream::iter(items)
        .map(f)
        .buffered(max_concurrent.max(1))
        .collect()
        .await
}

/// Runs every future at once and waits at most `limit` for all of them: each result is the
/// future's output, or [`Elapsed`] for the ones still running at the deadline (which are
/// cancelled). One slow call never hides the others' answers.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use futures_util::FutureExt;
/// use groundwork_resilience::parallel;
///
/// let calls = vec![
///     async { 1 }.boxed(),
///     async { tokio::time::sleep(Duration::from_secs(60)).await; 2 }.boxed(),
/// ];
/// let results = parallel(calls, Duration::from_millis(20)).await;
/// assert_eq!(results[0], Ok(1));
/// assert!(results[1].is_err());
/// # });
/// ```
pub async fn parallel<I>(
    futures: I,
    limit: Duration,
) -> Vec<Result<<I::Item as Future>::Output, Elapsed>>
where
    I: IntoIterator,
    I::Item: Future,
{
    let deadline = tokio::time::Instant::now() + limit;
    futures_util::future::join_all(futures.into_iter().map(|future| async move {
        tokio::time::timeout_at(deadline, future)
            .await
            .map_err(|_| Elapsed { after: limit })
    }))
    .await
}

/// Awaits `primary`; on an error, logs it (at `warn`, with `what` naming the operation) and
/// returns what `on_error` makes of it. The fallback is always explicit and visible at the
/// call site: there is no silent default.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use groundwork_resilience::fallback;
///
/// let tools = fallback("load tools", async { Err::<Vec<u32>, _>("database down") }, |_| async {
///     vec![0] // the built-in tool set
/// })
/// .await;
/// assert_eq!(tools, [0]);
/// # });
/// ```
pub async fn fallback<T, E, P, F, FFut>(what: &str, primary: P, on_error: F) -> T
where
    P: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
    F: FnOnce(E) -> FFut,
    FFut: Future<Output = T>,
{
    match primary.await {
        Ok(value) => value,
        Err(err) => {
            tracing::warn!(operation = what, error = %err, "using the fallback");
            metrics::counter!("groundwork_fallbacks_total", "operation" => what.to_owned())
                .increment(1);
            on_error(err).await
        }
    }
}
