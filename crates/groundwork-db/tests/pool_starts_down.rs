//! The pool is created lazily: a handle opens while PostgreSQL is unreachable, is not ready,
//! refuses operations at once, and becomes ready (migrated) within a second of the database
//! accepting connections, by itself.

mod supervised;

use std::time::{Duration, Instant};

use groundwork_db::{Database, DbError};
use groundwork_testkit::Mode;
use supervised::{Setup, postgres_url, within};

#[tokio::test]
async fn a_pool_opened_while_the_database_is_down_heals_by_itself() -> anyhow::Result<()> {
    let Some(url) = postgres_url() else {
        return Ok(());
    };
    let setup = Setup::new(&url, "down").await?;
    setup.proxy.set_mode(Mode::Refuse).await?;

    let db = Database::connect(setup.options()).await?;
    assert!(!db.is_ready());
    // The first health check fails at once (refused) and opens the breaker.
    let opened = within(Duration::from_secs(2), async || {
        matches!(db.agents().get(1).await, Err(DbError::CircuitOpen { .. }))
    })
    .await;
    assert!(opened.is_some(), "the breaker never opened");
    // While open, operations fail in well under a millisecond.
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let result = db.agents().get(1).await;
        slowest = slowest.max(started.elapsed());
        assert!(
            matches!(result, Err(DbError::CircuitOpen { .. })),
            "{result:?}"
        );
    }
    assert!(
        slowest < Duration::from_millis(1),
        "slowest rejection {slowest:?}"
    );
    assert!(db.wait_ready(Duration::from_millis(50)).await.is_err());

    // The database comes back. A readiness probe (every 100 ms, as a load balancer would
    // poll `/ready`) sees it ready — checked and migrated — within a second.
    setup.proxy.set_mode(Mode::Pass).await?;
    let took = within(Duration::from_secs(2), async || {
        let ready = db.check_now().await;
        if !ready {
            tokio::time::sleep(Duration::from_millis(95)).await;
        }
        ready
    })
    .await;
    eprintln!("ready {took:?} after the database came back");
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(1)),
        "ready after {took:?}"
    );
    let listing = db
        .agents()
        .list(&Default::default(), groundwork_db::Page::default())
        .await?;
    assert_eq!(listing.total, 0);
    let stats = db.stats();
    assert!(
        stats.ready && stats.breaker.opened >= 1 && stats.connect_errors >= 1,
        "{stats:?}"
    );

    setup.cleanup(db).await;
    Ok(())
}

#[tokio::test]
async fn without_probes_the_background_check_heals_it() -> anyhow::Result<()> {
    let Some(url) = postgres_url() else {
        return Ok(());
    };
    let setup = Setup::new(&url, "bg").await?;
    setup.proxy.set_mode(Mode::Refuse).await?;
    let db = Database::connect(setup.options()).await?;
    let down = within(Duration::from_secs(2), async || {
        db.stats().last_health_check.is_some_and(|c| !c.ok)
    })
    .await;
    assert!(down.is_some(), "no failed health check");
    setup.proxy.set_mode(Mode::Pass).await?;
    let back = Instant::now();
    // Checks run every second while the database is down (the default).
    db.wait_ready(Duration::from_secs(3)).await?;
    let took = back.elapsed();
    eprintln!("ready {took:?} after the database came back, with no probe");
    assert!(took <= Duration::from_millis(1500), "ready after {took:?}");
    setup.cleanup(db).await;
    Ok(())
}
