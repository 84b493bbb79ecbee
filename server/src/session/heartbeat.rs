//! Heart-beat negotiation (STOMP 1.1+ "Heart-beating").

use std::time::Duration;

/// The agreed intervals of one connection. `None` means "not in this direction".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The server sends something at least this often.
    pub send_every: Option<Duration>,
    /// The client promised to send something at least this often.
    pub expect_every: Option<Duration>,
}

impl Heartbeat {
    /// No heart-beats either way.
    pub const OFF: Heartbeat = Heartbeat {
        send_every: None,
        expect_every: None,
    };

    /// Combines the client's `cx,cy` with the server's `sx,sy`: each
    /// direction runs at the slower of what one side offers and the other
    /// wants, and is off when either side says 0.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stompbox::session::Heartbeat;
    /// let hb = Heartbeat::negotiate((1000, 5000), (10_000, 2000));
    /// assert_eq!(hb.send_every, Some(Duration::from_millis(10_000)));
    /// assert_eq!(hb.expect_every, Some(Duration::from_millis(2000)));
    /// assert_eq!(Heartbeat::negotiate((0, 0), (10_000, 10_000)), Heartbeat::OFF);
    /// ```
    pub fn negotiate(client: (u64, u64), server: (u64, u64)) -> Heartbeat {
        let (cx, cy) = client;
        let (sx, sy) = server;
        let every = |a: u64, b: u64| (a != 0 && b != 0).then(|| Duration::from_millis(a.max(b)));
        Heartbeat {
            send_every: every(sx, cy),
            expect_every: every(cx, sy),
        }
    }

    /// How long the client may stay silent before the connection is
    /// considered dead: twice the agreed interval, so one late heart-beat on
    /// a busy network or a throttled browser tab is forgiven.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.expect_every.map(|d| d * 2)
    }
}
