//! Sequential requests to one host reuse one pooled connection.

mod common;

#[tokio::test]
async fn sequential_requests_share_one_connection() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let client = common::client(common::options())?;

    for _ in 0..10 {
        let response = client.send(client.get(server.url("/"))).await?;
        assert_eq!(response.text().await?, "ok"); // reading the body frees the connection
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(client.stats().responses, 10);
    Ok(())
}

#[tokio::test]
async fn clones_share_the_pool() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let client = common::client(common::options())?;

    for clone in [client.clone(), client.clone(), client] {
        clone.send(clone.get(server.url("/"))).await?.text().await?;
        clone
            .reqwest()
            .get(server.url("/"))
            .send()
            .await?
            .text()
            .await?;
    }
    assert_eq!(server.accepted(), 1);
    Ok(())
}

#[tokio::test]
async fn without_idle_connections_each_request_connects() -> anyhow::Result<()> {
    let server = common::TestServer::start().await?;
    let client = common::client(common::options().pool_max_idle_per_host(0))?;

    for _ in 0..3 {
        client
            .send(client.get(server.url("/")))
            .await?
            .text()
            .await?;
    }
    assert_eq!(server.accepted(), 3);
    Ok(())
}
