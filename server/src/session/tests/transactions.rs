//! Transactions by feeding frames: SENDs and ACKs take effect at COMMIT,
//! ABORT discards them.

use super::*;

#[test]
fn transactional_sends_happen_at_commit_only() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/tx", "auto"));
    let mut p = Client::connected(&b);
    p.send(frame("BEGIN", &[("transaction", "t1")]));
    p.send(send("/queue/tx", "a").header("transaction", "t1"));
    p.send(send("/queue/tx", "b").header("transaction", "t1"));
    assert!(c.bodies().is_empty());
    p.send(frame("COMMIT", &[("transaction", "t1")]));
    assert_eq!(c.bodies(), ["a", "b"]);

    p.send(frame("BEGIN", &[("transaction", "t2")]));
    p.send(send("/queue/tx", "never").header("transaction", "t2"));
    p.send(frame("ABORT", &[("transaction", "t2")]));
    assert!(c.bodies().is_empty());
    p.error(frame("COMMIT", &[("transaction", "t2")]));
}

#[test]
fn transactional_acks_happen_at_commit_and_abort_discards_them() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/txa", "client-individual"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/txa", "m1"));
    let frames = c.frames();
    let ack = frames[0].headers.get("ack").unwrap().to_string();
    c.send(frame("BEGIN", &[("transaction", "t")]));
    c.send(frame("ACK", &[("id", &ack), ("transaction", "t")]));
    c.send(frame("ABORT", &[("transaction", "t")]));
    // Still unacked: closing puts it back.
    c.session.close();
    let mut d = Client::connected(&b);
    d.send(subscribe("s", "/queue/txa", "client-individual"));
    let frames = d.frames();
    assert_eq!(&frames[0].body[..], b"m1");
    let ack = frames[0].headers.get("ack").unwrap().to_string();
    d.send(frame("BEGIN", &[("transaction", "t")]));
    d.send(frame("ACK", &[("id", &ack), ("transaction", "t")]));
    d.send(frame("COMMIT", &[("transaction", "t")]));
    d.session.close();
    let mut e = Client::connected(&b);
    e.send(subscribe("s", "/queue/txa", "auto"));
    assert!(e.bodies().is_empty());
}

#[test]
fn duplicate_begin_is_refused() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(frame("BEGIN", &[("transaction", "t")]));
    c.error(frame("BEGIN", &[("transaction", "t")]));
}
