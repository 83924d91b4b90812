//! Helpers shared by the `groundwork-db` benchmarks: the PostgreSQL URL of the run, the mode
//! (`cargo bench` or a `cargo test --benches` smoke run), quantiles and the summary file.

use std::path::PathBuf;

/// The PostgreSQL URL of the run (`GROUNDWORK_TEST_POSTGRES_URL`), or `None` after a notice
/// when it is unset (the benchmark then does nothing and exits 0); panics when
/// `GROUNDWORK_REQUIRE_POSTGRES=1` and it is unset, as the supervised tests do.
pub(crate) fn postgres_url(bench: &str) -> Option<String> {
    groundwork_testkit::services::postgres_url(&format!("the {bench} benchmark"))
}

/// Whether this is a real benchmark run (`cargo bench` passes `--bench`); otherwise it is a
/// `cargo test --benches` smoke run at a tiny size.
pub(crate) fn bench_mode() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// The nearest-rank `q` quantile of `sorted` (ascending): the smallest value with at least
/// `q` of the values at or below it. With 10 values, p50 is the 5th and p99 the largest.
pub(crate) fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Writes `summary` to `target/criterion/<file>` (the bench executable lives in
/// `target/<profile>/deps/`), next to criterion's own reports.
pub(crate) fn write_summary_file(file: &str, summary: &str) {
    let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(std::path::Path::to_path_buf))
    else {
        return;
    };
    let dir: PathBuf = target.join("criterion");
    let path = dir.join(file);
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, summary)) {
        Ok(()) => println!("(summary written to {})", path.display()),
        Err(err) => eprintln!("could not write {}: {err}", path.display()),
    }
}
