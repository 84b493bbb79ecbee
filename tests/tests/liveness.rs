//! Connections that stop talking are found out, and no client or address
//! can hold the broker's connections or memory for itself.

use std::time::Duration;

use integration_tests::{TestServer, Via};
use stomp_codec::Decoded;

#[tokio::test]
async fn a_client_asking_for_one_second_heart_beats_gets_them_early() {
    let server = TestServer::default().await;
    for via in [Via::Tcp, Via::Ws] {
        let mut c = server.raw_client(via).await;
        let connected = c.connect(&[("heart-beat", "0,1000")]).await;
        assert_eq!(connected.headers.get("heart-beat"), Some("1000,10000"));
        // Two heart-beats, each within the second a strict client allows.
        for _ in 0..2 {
            match c.next_within(Duration::from_millis(1000)).await {
                Ok(Some(Decoded::Heartbeat)) => {}
                other => panic!("expected a heart-beat within 1 s over {via:?}, got {other:?}"),
            }
        }
    }
    server.shutdown().await;
}
