//! The delays: `set_latency` before the response headers (every answer),
//! `set_first_byte_delay` between a stream's headers and its first event, `set_chunk_delay`
//! between events. Only lower bounds are checked, so a loaded machine cannot fail them.

mod raw_http;

use std::io;
use std::time::{Duration, Instant};

use groundwork_testkit::openai::{MockOpenAi, MockOptions};
use raw_http::{Connection, chat, sse_data};

const LATENCY: Duration = Duration::from_millis(150);

#[tokio::test]
async fn latency_delays_every_answer() -> io::Result<()> {
    let mock = MockOpenAi::start()?;
    let mut connection = Connection::open(mock.addr()).await?;
    mock.set_latency(LATENCY);
    for (body, failing) in [
        (chat("plain", false), false),
        (chat("stream", true), false),
        (chat("failure", false), true),
    ] {
        if failing {
            mock.fail_next(1, 500, None);
        }
        let started = Instant::now();
        connection.send(&body, &[]).await?;
        let head = connection.head().await?;
        let took = started.elapsed();
        assert!(took >= LATENCY, "the headers came after {took:?}");
        connection.body(&head).await?;
    }

    mock.set_latency(Duration::ZERO);
    let started = Instant::now();
    connection.post(&chat("fast", false)).await?;
    assert!(started.elapsed() < LATENCY * 10);
    Ok(())
}

#[tokio::test]
async fn latency_from_the_options_is_restored_by_reset() -> io::Result<()> {
    let mock = MockOpenAi::start_with(MockOptions::new().latency(LATENCY))?;
    mock.set_latency(Duration::ZERO);
    mock.reset();
    let mut connection = Connection::open(mock.addr()).await?;
    let started = Instant::now();
    connection.post(&chat("slow", false)).await?;
    let took = started.elapsed();
    assert!(took >= LATENCY, "the answer came after {took:?}");
    Ok(())
}

#[tokio::test]
async fn first_byte_delay_comes_after_the_headers() -> io::Result<()> {
    const DELAY: Duration = Duration::from_millis(400);
    let mock = MockOpenAi::start()?;
    mock.set_first_byte_delay(DELAY);
    let mut connection = Connection::open(mock.addr()).await?;
    let started = Instant::now();
    connection.send(&chat("slow start", true), &[]).await?;
    let head = connection.head().await?;
    assert_eq!(head.status, 200);
    // The headers are here, the first event is not (and not buffered either).
    assert!(connection.silent_for(DELAY / 4).await);
    let body = connection.body(&head).await?;
    let took = started.elapsed();
    assert!(took >= DELAY, "the stream ended after {took:?}");
    assert_eq!(sse_data(&body)?.last().map(String::as_str), Some("[DONE]"));

    // Plain completions are not delayed by it.
    let started = Instant::now();
    connection.post(&chat("plain", false)).await?;
    assert!(started.elapsed() < DELAY, "a plain answer waited");
    Ok(())
}

#[tokio::test]
async fn chunk_delay_paces_the_events() -> io::Result<()> {
    const DELAY: Duration = Duration::from_millis(40);
    let mock = MockOpenAi::start_with(MockOptions::new().chunks(3).chunk_delay(DELAY))?;
    let mut connection = Connection::open(mock.addr()).await?;
    connection.send(&chat("paced", true), &[]).await?;
    let head = connection.head().await?;
    let mut arrivals = Vec::new();
    while let Some(chunk) = connection.chunk().await? {
        arrivals.push((Instant::now(), chunk));
    }
    // Role, 3 content chunks, finish, [DONE], each in its own HTTP chunk.
    assert_eq!(head.status, 200);
    assert_eq!(arrivals.len(), 6);
    let (first, _) = arrivals[0];
    let (last, _) = arrivals[5];
    let took = last - first;
    assert!(took >= 5 * DELAY, "five gaps took {took:?}");
    Ok(())
}
