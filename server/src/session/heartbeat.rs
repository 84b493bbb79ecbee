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

    /// What the server puts in CONNECTED's `heart-beat` for a client that
    /// sent `cx,cy`: in each direction the client asks for, what it asks,
    /// but not below `floor` ms (so a client wanting 1 s failure detection
    /// gets it, and none gets a busy loop); in a direction it leaves at 0,
    /// the configured `sx,sy`. A configured 0 keeps that direction off.
    ///
    /// ```
    /// use stompbox::session::Heartbeat;
    /// assert_eq!(Heartbeat::offer((1000, 1000), (10_000, 10_000), 1000), (1000, 1000));
    /// assert_eq!(Heartbeat::offer((50, 0), (10_000, 10_000), 1000), (10_000, 1000));
    /// assert_eq!(Heartbeat::offer((0, 0), (10_000, 10_000), 1000), (10_000, 10_000));
    /// assert_eq!(Heartbeat::offer((5000, 5000), (0, 10_000), 1000), (0, 5000));
    /// ```
    pub fn offer(client: (u64, u64), server: (u64, u64), floor: u64) -> (u64, u64) {
        let (cx, cy) = client;
        let (sx, sy) = server;
        let pick = |configured: u64, asked: u64| match (configured, asked) {
            (0, _) => 0,
            (c, 0) => c,
            (_, a) => a.max(floor),
        };
        (pick(sx, cy), pick(sy, cx))
    }

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

    /// How often the server writes when it has nothing else to send: a
    /// tenth early, because strict clients count a heart-beat that arrives
    /// exactly at the interval (plus network time) as missed.
    pub fn write_every(&self) -> Option<Duration> {
        self.send_every.map(|d| d - d / 10)
    }

    /// How long the client may stay silent before the connection is
    /// considered dead: twice the agreed interval, so one late heart-beat on
    /// a busy network or a throttled browser tab is forgiven.
    pub fn read_timeout(&self) -> Option<Duration> {
        self.expect_every.map(|d| d * 2)
    }
}
