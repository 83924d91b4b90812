//! A black-holed connection (accepted, never answered) cannot hang a caller: the operation
//! fails with `DbError::Timeout` at its deadline.

mod supervised;

use std::time::{Duration, Instant};

use groundwork_db::{Database, DbError};
use groundwork_testkit::Mode;
use supervised::{Setup, postgres_url};

#[tokio::test]
async fn a_query_on_a_black_holed_connection_fails_at_its_deadline() -> anyhow::Result<()> {
    let Some(url) = postgres_url() else {
        return Ok(());
    };
    let setup = Setup::new(&url, "deadline").await?;
    let deadline = Duration::from_millis(400);
    // Health checks far apart, so that only the deadline can end the query.
    let db = Database::connect(
        setup
            .options()
            .query_timeout(deadline)
            .health_intervals(Duration::from_secs(60), Duration::from_secs(60)),
    )
    .await?;
    db.wait_ready(Duration::from_secs(5)).await?;
    db.agents().get(1).await.err(); // warm a pooled connection

    setup.proxy.set_mode(Mode::BlackHole).await?;
    let started = Instant::now();
    let result = db.agents().get(1).await;
    let took = started.elapsed();
    eprintln!("black-holed query ended after {took:?}: {result:?}");
    assert!(
        matches!(result, Err(DbError::Timeout { after }) if after == deadline),
        "{result:?}"
    );
    assert!(
        took >= deadline && took < deadline + Duration::from_millis(200),
        "{took:?}"
    );
    assert_eq!(db.stats().timeouts, 1);

    setup.proxy.set_mode(Mode::Pass).await?;
    setup.cleanup(db).await;
    Ok(())
}
