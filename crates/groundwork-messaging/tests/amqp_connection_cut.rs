//! RabbitMQ connection cut mid-publish (the testkit proxy closes the connection and refuses
//! new ones for a second): no confirmed message is lost, the publishes under way finish
//! once the supervisor has reconnected, publishing goes on, and the consumer subscribes
//! again by itself.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_common::{amqp_url, delete_topology, eventually, options, unique};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};

/// Publishing tasks.
const PUBLISHERS: usize = 4;
/// The most messages one task publishes.
const MAX_PER_PUBLISHER: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirmed_message_is_lost_when_the_connection_is_cut() -> anyhow::Result<()> {
    let Some(url) = amqp_url("no_confirmed_message_is_lost_when_the_connection_is_cut") else {
        return Ok(());
    };
    let name = unique("cut");
    let proxy = TcpProxy::start(upstream_of(&url).await?).await?;
    let queue = AmqpQueue::new(&with_port(&url, proxy.port()), options())?;
    queue.declare(&name).await?;
    assert_eq!(proxy.accepted(), 1);

    // The consumer records every id it sees and acknowledges (an ack lost in the cut only
    // means the message comes again).
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut consumer = queue
        .consume(&name, ConsumeOptions { prefetch: 200 })
        .await?;
    let slowest_ack = Arc::new(Mutex::new(Duration::ZERO));
    let consuming = {
        let (seen, slowest_ack) = (Arc::clone(&seen), Arc::clone(&slowest_ack));
        tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(delivery.message.id.clone());
                let started = Instant::now();
                let _ = delivery.ack().await;
                let mut slowest = slowest_ack
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *slowest = (*slowest).max(started.elapsed());
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let confirmed = Arc::new(AtomicU64::new(0));
    let mut publishers = Vec::new();
    for publisher in 0..PUBLISHERS {
        let (queue, name, stop, confirmed) = (
            queue.clone(),
            name.clone(),
            Arc::clone(&stop),
            Arc::clone(&confirmed),
        );
        publishers.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for i in 0..MAX_PER_PUBLISHER {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("p{publisher}-{i}");
                match queue
                    .publish(&name, Outgoing::with_id(&id, vec![b'x'; 256]))
                    .await
                {
                    Ok(()) => {
                        confirmed.fetch_add(1, Ordering::Relaxed);
                        ok.push(id);
                    }
                    Err(err) => failed.push(format!("{id}: {err}")),
                }
            }
            (ok, failed)
        }));
    }

    eventually("publishing is under way", || async {
        Ok(confirmed.load(Ordering::Relaxed) >= 300)
    })
    .await?;
    proxy.cut_existing().await;
    proxy.set_mode(Mode::Refuse).await?;
    let at_cut = confirmed.load(Ordering::Relaxed);
    // The outage itself (nothing to wait for: the broker is unreachable for this long).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!queue.is_connected());
    proxy.set_mode(Mode::Pass).await?;
    let at_heal = confirmed.load(Ordering::Relaxed);

    eventually("the handle reconnects", || async {
        Ok(queue.is_connected())
    })
    .await?;
    eventually("publishing resumes", || async {
        Ok(confirmed.load(Ordering::Relaxed) >= at_heal + 500)
    })
    .await?;
    stop.store(true, Ordering::Relaxed);

    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for publisher in publishers {
        let (published, errors) = publisher.await?;
        ok.extend(published);
        failed.extend(errors);
    }
    // Every publish under way during the outage succeeded once the connection was back.
    assert!(
        failed.is_empty(),
        "{} publishes failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(proxy.accepted() >= 2, "never reconnected");
    eprintln!(
        "confirmed: {at_cut} before the cut, {} during the outage, {} in all",
        at_heal - at_cut,
        ok.len()
    );

    let unseen = || {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ok.iter().filter(|id| !seen.contains(*id)).count()
    };
    eventually("every confirmed message is consumed", || async {
        Ok(unseen() == 0)
    })
    .await
    .map_err(|err| anyhow::anyhow!("{err}: {} of {} never consumed", unseen(), ok.len()))?;

    // An ack sent just before the cut fails soon after it (the broker delivers the message
    // again), instead of hanging the handler until some timeout.
    let slowest_ack = *slowest_ack
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(
        slowest_ack < Duration::from_secs(1),
        "an ack took {slowest_ack:?}"
    );

    consuming.abort();
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}
