//! Who a connection is: logins and anonymous access, the sender stamped on
//! every message, permissions, user destinations and the room directory.

use super::*;

#[test]
fn credentials_and_anonymous_access() {
    let b = broker();
    let users = SessionSettings {
        users: [(
            "alice".to_string(),
            crate::security::passwords::hash_for_tests("secret"),
        )]
        .into(),
        ..SessionSettings::default()
    };
    let mut c = Client::with(&b, users.clone(), false, 10);
    let ok = c.send(frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", "alice"),
            ("passcode", "secret"),
        ],
    ));
    assert!(matches!(ok, Flow::Connected { .. }));
    let mut c = Client::with(&b, users.clone(), false, 10);
    c.error(frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", "alice"),
            ("passcode", "nope"),
        ],
    ));
    let mut c = Client::with(&b, users, false, 10);
    let e = c.error(frame("CONNECT", &[("accept-version", "1.2")]));
    assert!(e.headers.get("message").unwrap().contains("loopback"));
    let mut c = Client::with(&b, SessionSettings::default(), true, 10);
    assert!(matches!(
        c.send(frame("CONNECT", &[])),
        Flow::Connected { .. }
    ));
}

#[test]
fn every_message_says_who_sent_it_and_that_cannot_be_forged() {
    let b = broker();
    let mut anon = Client::connected(&b);
    anon.send(subscribe("s", "/topic/news", "auto"));
    anon.send(
        frame(
            "SEND",
            &[("destination", "/topic/news"), ("x-sender", "admin")],
        )
        .body("hi"),
    );
    let got = anon.frames();
    assert_eq!(got[0].headers.get("x-sender"), Some("(anonymous)"));
    assert_eq!(
        got[0]
            .headers
            .iter()
            .filter(|(n, _)| *n == "x-sender")
            .count(),
        1,
        "the forged one is gone"
    );

    let settings = SessionSettings {
        users: users_with_password_pw(&["ana"]),
        ..SessionSettings::default()
    };
    let mut ana = logged_in(&b, &settings, "ana");
    ana.send(send("/topic/news", "from ana"));
    assert_eq!(anon.frames()[0].headers.get("x-sender"), Some("ana"));
}

#[test]
fn permissions_decide_reads_writes_and_durable_subscriptions() {
    use crate::security::permissions::Grants;
    let b = broker();
    let mut permissions = crate::security::permissions::PermissionTable::new();
    permissions.insert(
        "*".into(),
        Grants {
            read: vec!["/topic/chat.*".into(), "/queue/user.{login}.*".into()],
            write: vec!["/topic/chat.*".into()],
            configure: vec![],
        },
    );
    let settings = SessionSettings {
        users: users_with_password_pw(&["ana", "bob"]),
        permissions,
        ..SessionSettings::default()
    };
    let login = |who: &str| logged_in(&b, &settings, who);
    let mut ana = login("ana");
    // Allowed: own queue, the chat rooms.
    ana.send(subscribe("own", "/queue/user.ana.inbox", "auto").header("receipt", "1"));
    ana.send(send("/topic/chat.general", "hi").header("receipt", "2"));
    let ok: Vec<_> = ana.frames();
    assert!(
        ok.iter().all(|f| f.headers.get("x-error").is_none()),
        "{ok:?}"
    );
    // Refused on the receipt, the connection kept: bob's queue, a write
    // elsewhere, a durable subscription (configure).
    ana.send(subscribe("bob", "/queue/user.bob.inbox", "auto").header("receipt", "3"));
    ana.send(send("/queue/jobs", "x").header("receipt", "4"));
    ana.send(frame(
        "SUBSCRIBE",
        &[
            ("id", "d"),
            ("destination", "/topic/chat.general"),
            ("durable", "true"),
            ("receipt", "5"),
        ],
    ));
    let refused = ana.frames();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (f, (permission, what)) in refused.iter().zip([
        ("read", "/queue/user.bob.inbox"),
        ("write", "/queue/jobs"),
        ("configure", "/topic/chat.general"),
    ]) {
        assert_eq!(f.headers.get("x-error"), Some("access-refused"));
        let message = f.headers.get("message").unwrap();
        assert!(
            message.contains(permission) && message.contains(what),
            "{message}"
        );
    }
    // Without a receipt: an ERROR.
    let e = ana.error(send("/queue/jobs", "x"));
    assert!(e.headers.get("message").unwrap().contains("access refused"));
    // A transactional SEND is checked when it is sent, not at COMMIT.
    let mut bob = login("bob");
    bob.send(frame("BEGIN", &[("transaction", "t")]));
    let e = bob.error(frame(
        "SEND",
        &[("destination", "/queue/jobs"), ("transaction", "t")],
    ));
    assert!(e.headers.get("message").unwrap().contains("write"));
}

#[test]
fn user_destinations_reach_every_connection_of_that_login_only() {
    let b = broker();
    let settings = SessionSettings {
        users: users_with_password_pw(&["ana", "bob"]),
        ..SessionSettings::default()
    };
    let login = |who: &str| logged_in(&b, &settings, who);
    let (mut tab1, mut tab2, mut bob) = (login("ana"), login("ana"), login("bob"));
    for c in [&mut tab1, &mut tab2, &mut bob] {
        c.send(subscribe("inbox", "/user/inbox", "auto"));
    }
    bob.send(send("/user/ana/inbox", "hello ana"));
    for tab in [&mut tab1, &mut tab2] {
        let got = tab.frames();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].body.as_ref(), b"hello ana");
        assert_eq!(got[0].headers.get("x-sender"), Some("bob"));
    }
    assert!(bob.frames().is_empty());
    // The topic behind it is not reachable directly.
    let e = bob.error(subscribe("peek", "/topic/stompbox.user/ana/inbox", "auto"));
    assert!(e.headers.get("message").unwrap().contains("private"));
    // Anonymous clients have none.
    let mut anon = Client::connected(&b);
    let e = anon.error(subscribe("inbox", "/user/inbox", "auto"));
    assert!(e.headers.get("message").unwrap().contains("log in"));
}

#[test]
fn the_room_directory_lists_rooms_with_subscribers_that_the_login_may_read() {
    use crate::security::permissions::Grants;
    let b = broker();
    let mut permissions = crate::security::permissions::PermissionTable::new();
    permissions.insert(
        "*".into(),
        Grants {
            read: vec!["/topic/chat.*".into(), "/sys/rooms".into()],
            write: vec!["/topic/chat.*".into()],
            configure: vec![],
        },
    );
    permissions.insert(
        "ana".into(),
        Grants {
            read: vec!["/topic/chat.general".into(), "/sys/rooms".into()],
            write: vec![],
            configure: vec![],
        },
    );
    let settings = SessionSettings {
        users: users_with_password_pw(&["ana", "bob", "cy"]),
        permissions,
        ..SessionSettings::default()
    };
    let mut bob = logged_in(&b, &settings, "bob");
    let mut cy = logged_in(&b, &settings, "cy");
    bob.send(subscribe("g", "/topic/chat.general", "auto"));
    cy.send(subscribe("g", "/topic/chat.general", "auto"));
    bob.send(subscribe("r", "/topic/chat.random", "auto"));
    bob.send(subscribe("n", "/topic/news", "auto"));
    let rooms = |c: &mut Client| -> serde_json::Value {
        c.send(subscribe("dir", "/sys/rooms", "auto").header("receipt", "listed"));
        let frames = c.frames();
        let m = frames
            .iter()
            .find(|f| f.command == Command::Message)
            .unwrap_or_else(|| panic!("no directory in {frames:?}"));
        assert_eq!(m.headers.get("subscription"), Some("dir"));
        assert_eq!(m.headers.get("content-type"), Some("application/json"));
        c.send(frame("UNSUBSCRIBE", &[("id", "dir")]));
        serde_json::from_slice(&m.body).expect("JSON")
    };
    assert_eq!(
        rooms(&mut bob),
        serde_json::json!([
            { "name": "general", "destination": "/topic/chat.general", "subscribers": 2 },
            { "name": "random", "destination": "/topic/chat.random", "subscribers": 1 },
        ])
    );
    // Ana may read only the general room: that is all she is shown.
    let mut ana = logged_in(&b, &settings, "ana");
    assert_eq!(
        rooms(&mut ana),
        serde_json::json!([
            { "name": "general", "destination": "/topic/chat.general", "subscribers": 2 },
        ])
    );
}
