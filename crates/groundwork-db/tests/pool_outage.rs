//! Cutting the database under load: operations fail fast once the breaker is open (in well
//! under a millisecond), none outlives its deadline, and once the database is back the
//! first operation succeeds within a second.

mod supervised;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use groundwork_db::{Database, DbError, Page};
use groundwork_testkit::Mode;
use supervised::{Setup, postgres_url, within};

/// The operation deadline given to the pool.
const DEADLINE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Observed {
    ok: u64,
    rejected: Vec<Duration>,
    other_errors: u64,
    slowest: Duration,
}

/// Lists agents in a loop until `stop`, recording each outcome and its latency.
async fn load(db: Database, stop: Arc<AtomicBool>) -> Observed {
    let mut seen = Observed::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = db.agents().list(&Default::default(), Page::default()).await;
        let took = started.elapsed();
        seen.slowest = seen.slowest.max(took);
        match result {
            Ok(_) => seen.ok += 1,
            Err(DbError::CircuitOpen { .. }) => seen.rejected.push(took),
            Err(_) => seen.other_errors += 1,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

async fn cut_under_load(mode: Mode, tag: &str) -> anyhow::Result<()> {
    let Some(url) = postgres_url() else {
        return Ok(());
    };
    let setup = Setup::new(&url, tag).await?;
    let db = Database::connect(setup.options().query_timeout(DEADLINE)).await?;
    db.wait_ready(Duration::from_secs(5)).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load(db.clone(), Arc::clone(&stop))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    setup.proxy.set_mode(mode).await?;
    let cut = Instant::now();
    let opened = within(Duration::from_secs(5), async || {
        db.breaker_state() != groundwork_resilience::BreakerState::Closed
    })
    .await;
    eprintln!("{mode:?}: breaker opened {opened:?} after the cut");
    if std::env::var("GW_DEBUG").is_ok() {
        eprintln!("{:#?}", db.stats());
    }
    assert!(opened.is_some(), "the breaker did not open");
    tokio::time::sleep(Duration::from_secs(2)).await;

    setup.proxy.set_mode(Mode::Pass).await?;
    let back = Instant::now();
    let recovered = within(Duration::from_secs(3), async || {
        db.agents()
            .list(&Default::default(), Page::default())
            .await
            .is_ok()
    })
    .await;
    eprintln!(
        "{mode:?}: first success {recovered:?} after the database came back (down {:?})",
        back - cut
    );
    assert!(
        recovered.is_some_and(|t| t <= Duration::from_secs(1)),
        "recovered after {recovered:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    let mut all = Observed::default();
    for worker in workers {
        let seen = worker.await?;
        all.ok += seen.ok;
        all.other_errors += seen.other_errors;
        all.rejected.extend(seen.rejected);
        all.slowest = all.slowest.max(seen.slowest);
    }
    all.rejected.sort();
    let p99 = all.rejected.get(all.rejected.len() * 99 / 100).copied();
    eprintln!(
        "{mode:?}: {} ok, {} rejected (p99 {p99:?}, max {:?}), {} other errors, slowest call {:?}",
        all.ok,
        all.rejected.len(),
        all.rejected.last(),
        all.other_errors,
        all.slowest
    );
    assert!(all.rejected.len() > 100, "too few rejections to judge");
    assert!(
        p99.is_some_and(|p| p < Duration::from_millis(1)),
        "rejections p99 {p99:?}"
    );
    // Nothing waits past its deadline (plus scheduling slack).
    assert!(
        all.slowest <= DEADLINE + Duration::from_millis(250),
        "a call took {:?}",
        all.slowest
    );
    setup.cleanup(db).await;
    Ok(())
}

#[tokio::test]
async fn refused_connections() -> anyhow::Result<()> {
    cut_under_load(Mode::Refuse, "refused").await
}

#[tokio::test]
async fn black_holed_connections() -> anyhow::Result<()> {
    cut_under_load(Mode::BlackHole, "blackhole").await
}
