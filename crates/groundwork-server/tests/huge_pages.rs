//! The `groundwork` binary's memory holds no transparent huge pages, even where the kernel
//! grants them on request (THP mode `madvise`, with `defrag` at `madvise`: a fault in such
//! memory compacts and zeroes a 2 MiB page on the spot). mimalloc asks for them unless built
//! with its `no_thp` feature, and then a growing LLM cache stalled the proxy's worker threads
//! for milliseconds: +3 ms at the 500 req/s miss window's p99 (BENCHMARKS.md, "LLM layer").
//!
//! The test runs the binary on embedded defaults with the mock upstream, stores a few
//! megabytes of distinct answers in its LLM cache, and reads the process's `AnonHugePages`.
//! Linux only. Where the kernel never grants huge pages (mode `never`), the test cannot tell
//! and says so.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::ServerProcess;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::json;

/// Distinct answers stored, and the size of each (the mock echoes the prompt).
const ANSWERS: usize = 1_500;
const ANSWER_BYTES: usize = 8 * 1024;
/// Requests in flight at once.
const CONCURRENCY: usize = 16;

/// The kernel's THP mode: the bracketed word of `/sys/kernel/mm/transparent_hugepage/enabled`
/// (`always`, `madvise` or `never`), if the file is there.
fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// `AnonHugePages` of process `pid`, in kB.
fn anon_huge_pages_kb(pid: u32) -> anyhow::Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no AnonHugePages in /proc/{pid}/smaps_rollup"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_llm_cache_gets_no_transparent_huge_pages() -> anyhow::Result<()> {
    let Some(mode) = thp_mode() else {
        eprintln!(
            "huge_pages: no /sys/kernel/mm/transparent_hugepage (not Linux?); nothing to check"
        );
        return Ok(());
    };
    if mode == "never" {
        eprintln!("huge_pages: THP mode is never on this kernel; the test cannot tell");
        return Ok(());
    }
    let mock = MockOpenAi::start()?;
    let base_url = mock.base_url();
    let mut server = ServerProcess::spawn("server", &[("GROUNDWORK_LLM_BASE_URL", &base_url)])?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let before = anon_huge_pages_kb(server.pid())?;

    let filler = "x".repeat(ANSWER_BYTES);
    let server = &server;
    for batch in (0..ANSWERS).collect::<Vec<_>>().chunks(CONCURRENCY) {
        let calls = batch.iter().map(|n| {
            let body = json!({
                "model": "mock-1",
                "temperature": 0,
                "messages": [{"role": "user", "content": format!("{n} {filler}")}],
            });
            async move {
                let (status, headers, answer) = server
                    .request(Method::POST, "/v1/chat/completions", Some(&body))
                    .await?;
                anyhow::ensure!(status == StatusCode::OK, "{status} {answer}");
                anyhow::ensure!(
                    headers
                        .get("x-groundwork-cache")
                        .and_then(|v| v.to_str().ok())
                        == Some("MISS"),
                    "request {n} was not a miss: {headers:?}"
                );
                anyhow::Ok(())
            }
        });
        for outcome in futures_util::future::join_all(calls).await {
            outcome?;
        }
    }
    let stats = server
        .expect(Method::GET, "/api/v1/llm-cache", None, StatusCode::OK)
        .await?;
    let after = anon_huge_pages_kb(server.pid())?;
    eprintln!(
        "huge_pages: THP mode {mode}; AnonHugePages {before} kB after start, {after} kB after \
         {ANSWERS} answers of {ANSWER_BYTES} bytes; cache {}",
        stats["cache"]
    );
    assert_eq!(
        after,
        0,
        "the server holds {after} kB of transparent huge pages ({before} kB after start)\n{}",
        server.logs()
    );
    Ok(())
}
