//! Exchanges: `/exchange/NAME/ROUTING_KEY` routes a SEND to the queues
//! (and other exchanges) bound to NAME, by the exchange's type: `direct`
//! (the key equals the binding's), `topic` (the binding's key is a
//! pattern: `*`, `#`, `>`), `fanout` (every binding), `headers` (the
//! message's headers against the binding's arguments, `x-match` all or
//! any). RabbitMQ's destination syntax and behaviour, so clients port over.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use stomp_codec::{ByteString, Headers};

use super::sublist::{Sublist, check_pattern};
use crate::ids::{SessionId, SubscriptionId};

/// How an exchange picks bindings for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeKind {
    /// The routing key equals the binding key.
    Direct,
    /// The binding key is a pattern over the routing key's segments.
    Topic,
    /// Every binding, whatever the key.
    Fanout,
    /// The message's headers against the binding's arguments.
    Headers,
}

/// An exchange as the config file declares it (`[[exchanges]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Its name, as in `/exchange/NAME/KEY`.
    pub name: String,
    /// `direct`, `topic`, `fanout` or `headers`.
    #[serde(rename = "type")]
    pub kind: ExchangeKind,
    /// Where messages no binding takes go instead (another exchange).
    #[serde(default)]
    pub alternate_exchange: Option<String>,
    /// Its bindings.
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
}

/// A binding as the config file (or the management API) declares it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// A queue to deliver to, `/queue/NAME`...
    #[serde(default)]
    pub queue: Option<String>,
    /// ...or another exchange to route on through.
    #[serde(default)]
    pub exchange: Option<String>,
    /// The binding key (direct: the routing key; topic: a pattern).
    #[serde(default)]
    pub key: String,
    /// A headers binding's arguments: `x-match` (`all`, the default, or
    /// `any`) and the header values to compare.
    #[serde(default)]
    pub arguments: BTreeMap<String, String>,
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    /// A queue, by destination name.
    Queue(ByteString),
    /// Another exchange, by name.
    Exchange(String),
}

/// A headers binding's test.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderMatch {
    /// `x-match: any`: one equal header is enough; else all must be.
    pub any: bool,
    /// Header name → required value.
    pub values: Vec<(String, String)>,
}

impl HeaderMatch {
    /// From binding arguments; `x-` names other than `x-match` are not compared.
    pub fn from_arguments<'a>(
        arguments: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HeaderMatch, ExchangeError> {
        let mut m = HeaderMatch::default();
        for (name, value) in arguments {
            if name == "x-match" {
                m.any = match value {
                    "all" => false,
                    "any" => true,
                    other => return Err(ExchangeError::BadMatch(other.to_string())),
                };
            } else if !name.starts_with("x-") {
                m.values.push((name.to_string(), value.to_string()));
            }
        }
        Ok(m)
    }

    fn matches(&self, headers: &Headers) -> bool {
        let equal = |(n, v): &(String, String)| headers.get(n) == Some(v.as_str());
        if self.any {
            self.values.iter().any(equal)
        } else {
            self.values.iter().all(equal)
        }
    }
}

/// One binding: where, by which key or arguments, and who made it (a
/// SUBSCRIBE's binding goes with the subscription).
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Where it leads.
    pub target: BindTarget,
    /// The binding key.
    pub key: String,
    /// A headers binding's test.
    pub headers: HeaderMatch,
    /// The subscription that made it, if one did.
    pub owner: Option<(SessionId, SubscriptionId)>,
}

/// Why an exchange, binding or routing was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// No exchange of that name.
    #[error(
        "no exchange {0:?} (exchanges are declared in the config file's [[exchanges]] or with the management API)"
    )]
    Unknown(String),
    /// `/exchange/` without a name.
    #[error("destination {0:?} names no exchange: use /exchange/NAME/ROUTING_KEY")]
    NoName(String),
    /// Two exchanges of one name.
    #[error("exchange {0:?} is declared twice")]
    Duplicate(String),
    /// A binding names neither a queue nor an exchange, or both.
    #[error("a binding of exchange {0:?} must name exactly one of queue or exchange")]
    BadTarget(String),
    /// A binding to a destination that is not a queue.
    #[error("exchange {exchange:?} binds {target:?}, which is not a /queue/NAME")]
    NotAQueue {
        /// The exchange.
        exchange: String,
        /// The target.
        target: String,
    },
    /// A topic binding key that is not a well-formed pattern.
    #[error("exchange {exchange:?}: {why}")]
    BadPattern {
        /// The exchange.
        exchange: String,
        /// Why.
        why: String,
    },
    /// `x-match` other than `all` or `any`.
    #[error("x-match {0:?}: expected all or any")]
    BadMatch(String),
    /// Exchanges that route into each other in a circle.
    #[error("exchange bindings form a loop: {0}")]
    Loop(String),
    /// A declaration for a name that exists with other settings.
    #[error(
        "exchange {name:?} exists with type {kind} and alternate {alternate:?}: delete it first to declare it otherwise"
    )]
    Exists {
        /// The exchange.
        name: String,
        /// Its type now.
        kind: &'static str,
        /// Its alternate exchange now.
        alternate: Option<String>,
    },
    /// An exchange or binding the config file declares: changed there only.
    #[error("{0} is declared in the config file: change it there and restart")]
    Configured(String),
    /// An exchange other exchanges need.
    #[error("exchange {name:?} is the alternate exchange of {by:?}: delete that one first")]
    InUse {
        /// The exchange.
        name: String,
        /// The exchange whose alternate it is.
        by: String,
    },
    /// A name that cannot be an exchange's.
    #[error(
        "{0:?} cannot name an exchange: use 1 to 255 characters without '/' (amq.topic is built in)"
    )]
    BadName(String),
    /// Unbinding what is not bound.
    #[error("exchange {0:?} has no such binding")]
    NoSuchBinding(String),
    /// The declarations could not be written to disk (nothing changed).
    #[error("cannot save the declared exchanges: {0}")]
    Save(String),
    /// The saved declarations could not be read at start.
    #[error("the declared exchanges in {file} cannot be used: {why}")]
    Load {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
}

impl ExchangeKind {
    /// Its name in the config file and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// One exchange and its bindings.
#[derive(Debug)]
pub struct Exchange {
    name: String,
    kind: ExchangeKind,
    alternate: Option<String>,
    bindings: RwLock<Bindings>,
}

#[derive(Debug, Default)]
struct Bindings {
    all: Vec<Binding>,
    /// Topic exchanges: binding keys as patterns → index-free copies.
    trie: Sublist<BindTarget>,
    /// Direct exchanges: key → targets.
    direct: HashMap<String, Vec<BindTarget>>,
}

impl Exchange {
    /// An exchange with no bindings yet.
    pub fn new(name: String, kind: ExchangeKind, alternate: Option<String>) -> Exchange {
        Exchange {
            name,
            kind,
            alternate,
            bindings: RwLock::new(Bindings::default()),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its type.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Where unroutable messages go instead.
    pub fn alternate(&self) -> Option<&str> {
        self.alternate.as_deref()
    }

    /// Adds a binding. A topic exchange's key must be a well-formed pattern.
    pub fn bind(&self, binding: Binding) -> Result<(), ExchangeError> {
        let mut b = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        match self.kind {
            ExchangeKind::Topic => {
                b.trie
                    .insert(&binding.key, binding.target.clone())
                    .map_err(|e| ExchangeError::BadPattern {
                        exchange: self.name.clone(),
                        why: e.to_string(),
                    })?;
            }
            ExchangeKind::Direct => b
                .direct
                .entry(binding.key.clone())
                .or_default()
                .push(binding.target.clone()),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        b.all.push(binding);
        Ok(())
    }

    /// Removes the bindings a subscription made.
    pub fn unbind_owner(&self, session: SessionId, subscription: &SubscriptionId) {
        self.unbind_where(|x| {
            x.owner
                .as_ref()
                .is_some_and(|(s, id)| *s == session && id == subscription)
        });
    }

    /// Removes the bindings `pick` chooses; returns how many.
    pub fn unbind_where(&self, mut pick: impl FnMut(&Binding) -> bool) -> usize {
        let mut b = self.bindings.write().unwrap_or_else(|e| e.into_inner());
        let (gone, kept): (Vec<Binding>, Vec<Binding>) = std::mem::take(&mut b.all)
            .into_iter()
            .partition(|x| pick(x));
        b.all = kept;
        let count = gone.len();
        for binding in gone {
            match self.kind {
                ExchangeKind::Topic => {
                    // A subscription's target is its own private queue.
                    b.trie.remove(&binding.key, |t| *t == binding.target);
                }
                ExchangeKind::Direct => {
                    if let Some(list) = b.direct.get_mut(&binding.key) {
                        if let Some(i) = list.iter().position(|t| *t == binding.target) {
                            list.remove(i);
                        }
                        if list.is_empty() {
                            b.direct.remove(&binding.key);
                        }
                    }
                }
                ExchangeKind::Fanout | ExchangeKind::Headers => {}
            }
        }
        count
    }

    /// Where a message with `key` and `headers` goes from here (one hop).
    pub fn route(&self, key: &str, headers: &Headers) -> Vec<BindTarget> {
        let b = self.bindings.read().unwrap_or_else(|e| e.into_inner());
        match self.kind {
            ExchangeKind::Direct => b.direct.get(key).cloned().unwrap_or_default(),
            ExchangeKind::Topic => b.trie.lookup(key),
            ExchangeKind::Fanout => b.all.iter().map(|x| x.target.clone()).collect(),
            ExchangeKind::Headers => b
                .all
                .iter()
                .filter(|x| x.headers.matches(headers))
                .map(|x| x.target.clone())
                .collect(),
        }
    }

    /// Its bindings, for listing.
    pub fn bindings(&self) -> Vec<Binding> {
        self.bindings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .clone()
    }
}

/// The destination RabbitMQ's other names stand for: `/amq/queue/NAME` is
/// `/queue/NAME`, `/exchange/amq.topic/KEY` is `/topic/KEY`.
pub fn alias(destination: &str) -> Option<String> {
    if let Some(name) = destination.strip_prefix("/amq/queue/") {
        return Some(format!("/queue/{name}"));
    }
    let key = destination.strip_prefix("/exchange/amq.topic/")?;
    Some(format!("/topic/{key}"))
}

/// `/exchange/NAME/KEY` → (NAME, KEY); the key may be empty or contain `/`.
pub fn parse_destination(destination: &str) -> Option<Result<(&str, &str), ExchangeError>> {
    let rest = destination.strip_prefix("/exchange/")?;
    let (name, key) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return Some(Err(ExchangeError::NoName(destination.to_string())));
    }
    Some(Ok((name, key)))
}

/// Builds the configured exchanges, refusing unknown targets, bad
/// patterns and loops, so nothing half-declared starts.
pub fn build(configs: &[ExchangeConfig]) -> Result<HashMap<String, Exchange>, ExchangeError> {
    let mut out: HashMap<String, Exchange> = HashMap::new();
    for c in configs {
        if out.contains_key(&c.name) || c.name == AMQ_TOPIC {
            return Err(ExchangeError::Duplicate(c.name.clone()));
        }
        out.insert(
            c.name.clone(),
            Exchange::new(c.name.clone(), c.kind, c.alternate_exchange.clone()),
        );
    }
    for c in configs {
        let exchange = &out[&c.name];
        if let Some(alt) = &c.alternate_exchange
            && !out.contains_key(alt)
        {
            return Err(ExchangeError::Unknown(alt.clone()));
        }
        for b in &c.bindings {
            exchange.bind(binding(exchange, b, |x| out.contains_key(x))?)?;
        }
    }
    check_loops(configs)?;
    Ok(out)
}

/// The binding `b` declares on `exchange`, checked: exactly one target, a
/// queue that is a `/queue/NAME`, an exchange that `exists`, a topic key
/// that is a well-formed pattern, a known `x-match`.
pub fn binding(
    exchange: &Exchange,
    b: &BindingConfig,
    exists: impl Fn(&str) -> bool,
) -> Result<Binding, ExchangeError> {
    let target = match (&b.queue, &b.exchange) {
        (Some(q), None) => {
            if super::DestinationKind::of(q) != Ok(super::DestinationKind::Queue) {
                return Err(ExchangeError::NotAQueue {
                    exchange: exchange.name.clone(),
                    target: q.clone(),
                });
            }
            BindTarget::Queue(q.as_str().into())
        }
        (None, Some(x)) => {
            if !exists(x) {
                return Err(ExchangeError::Unknown(x.clone()));
            }
            BindTarget::Exchange(x.clone())
        }
        _ => return Err(ExchangeError::BadTarget(exchange.name.clone())),
    };
    if exchange.kind == ExchangeKind::Topic {
        check_pattern(&b.key).map_err(|e| ExchangeError::BadPattern {
            exchange: exchange.name.clone(),
            why: e.to_string(),
        })?;
    }
    Ok(Binding {
        target,
        key: b.key.clone(),
        headers: HeaderMatch::from_arguments(
            b.arguments.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        )?,
        owner: None,
    })
}

/// The name of the built-in topic exchange: `/exchange/amq.topic/KEY` is
/// `/topic/KEY`, as in RabbitMQ.
pub const AMQ_TOPIC: &str = "amq.topic";

/// Refuses exchange-to-exchange bindings (and alternates) that lead back
/// to where they started.
fn check_loops(configs: &[ExchangeConfig]) -> Result<(), ExchangeError> {
    let edges: HashMap<&str, Vec<&str>> = configs
        .iter()
        .map(|c| {
            let mut next: Vec<&str> = c
                .bindings
                .iter()
                .filter_map(|b| b.exchange.as_deref())
                .collect();
            next.extend(c.alternate_exchange.as_deref());
            (c.name.as_str(), next)
        })
        .collect();
    fn visit<'a>(
        at: &'a str,
        edges: &HashMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), ExchangeError> {
        if let Some(i) = path.iter().position(|p| *p == at) {
            let mut cycle: Vec<&str> = path[i..].to_vec();
            cycle.push(at);
            return Err(ExchangeError::Loop(cycle.join(" → ")));
        }
        path.push(at);
        for next in edges.get(at).into_iter().flatten() {
            visit(next, edges, path)?;
        }
        path.pop();
        Ok(())
    }
    for c in configs {
        visit(&c.name, &edges, &mut Vec::new())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn queue(name: &str) -> BindTarget {
        BindTarget::Queue(name.into())
    }

    fn bind(x: &Exchange, target: &str, key: &str, args: &[(&str, &str)]) {
        x.bind(Binding {
            target: queue(target),
            key: key.into(),
            headers: HeaderMatch::from_arguments(args.iter().copied()).unwrap(),
            owner: None,
        })
        .unwrap();
    }

    #[test]
    fn each_type_routes_by_its_rule() {
        let direct = Exchange::new("d".into(), ExchangeKind::Direct, None);
        bind(&direct, "/queue/a", "pay", &[]);
        bind(&direct, "/queue/b", "refund", &[]);
        assert_eq!(direct.route("pay", &headers(&[])), [queue("/queue/a")]);
        assert!(direct.route("pay.x", &headers(&[])).is_empty());

        let topic = Exchange::new("t".into(), ExchangeKind::Topic, None);
        bind(&topic, "/queue/eu", "orders.eu.*", &[]);
        bind(&topic, "/queue/all", "orders.#", &[]);
        let mut hit = topic.route("orders.eu.paid", &headers(&[]));
        hit.sort_by_key(|t| format!("{t:?}"));
        assert_eq!(hit, [queue("/queue/all"), queue("/queue/eu")]);
        assert_eq!(topic.route("orders", &headers(&[])), [queue("/queue/all")]);

        let fanout = Exchange::new("f".into(), ExchangeKind::Fanout, None);
        bind(&fanout, "/queue/x", "", &[]);
        bind(&fanout, "/queue/y", "ignored", &[]);
        assert_eq!(fanout.route("whatever", &headers(&[])).len(), 2);

        let h = Exchange::new("h".into(), ExchangeKind::Headers, None);
        bind(
            &h,
            "/queue/all",
            "",
            &[("format", "pdf"), ("type", "report")],
        );
        bind(
            &h,
            "/queue/any",
            "",
            &[("x-match", "any"), ("format", "pdf"), ("type", "log")],
        );
        let both = headers(&[("format", "pdf"), ("type", "report")]);
        assert_eq!(h.route("", &both).len(), 2);
        let log = headers(&[("type", "log")]);
        assert_eq!(h.route("", &log), [queue("/queue/any")]);
        assert!(h.route("", &headers(&[("format", "zip")])).is_empty());
    }

    #[test]
    fn subscription_bindings_go_with_their_owner() {
        let topic = Exchange::new("t".into(), ExchangeKind::Topic, None);
        let owner = (SessionId(1), SubscriptionId::from("s"));
        topic
            .bind(Binding {
                target: queue("/queue/p"),
                key: "a.*".into(),
                headers: HeaderMatch::default(),
                owner: Some(owner.clone()),
            })
            .unwrap();
        assert_eq!(topic.route("a.b", &headers(&[])).len(), 1);
        topic.unbind_owner(owner.0, &owner.1);
        assert!(topic.route("a.b", &headers(&[])).is_empty());
        assert!(topic.bindings().is_empty());
    }

    fn config(name: &str, kind: ExchangeKind, bindings: Vec<BindingConfig>) -> ExchangeConfig {
        ExchangeConfig {
            name: name.into(),
            kind,
            alternate_exchange: None,
            bindings,
        }
    }

    fn to_exchange(x: &str) -> BindingConfig {
        BindingConfig {
            queue: None,
            exchange: Some(x.into()),
            key: "#".into(),
            arguments: BTreeMap::new(),
        }
    }

    #[test]
    fn bad_declarations_are_refused_whole() {
        let a = config("a", ExchangeKind::Topic, vec![to_exchange("b")]);
        let b = config("b", ExchangeKind::Topic, vec![to_exchange("a")]);
        let e = build(&[a, b]).unwrap_err();
        assert!(matches!(e, ExchangeError::Loop(_)), "{e}");
        assert!(e.to_string().contains("a → b → a"), "{e}");
        let unknown = config("a", ExchangeKind::Fanout, vec![to_exchange("nope")]);
        assert_eq!(
            build(&[unknown]).unwrap_err(),
            ExchangeError::Unknown("nope".into())
        );
        let mut bad = to_exchange("a");
        bad.exchange = None;
        bad.queue = Some("/topic/x".into());
        let e = build(&[config("a", ExchangeKind::Direct, vec![bad])]).unwrap_err();
        assert!(matches!(e, ExchangeError::NotAQueue { .. }));
        let mut empty = to_exchange("a");
        empty.exchange = None;
        empty.queue = Some("/queue/q".into());
        empty.key = "a..b".into();
        let e = build(&[config("a", ExchangeKind::Topic, vec![empty])]).unwrap_err();
        assert!(e.to_string().contains("empty segment"), "{e}");
    }

    #[test]
    fn destinations_parse() {
        assert_eq!(
            parse_destination("/exchange/orders/eu.paid"),
            Some(Ok(("orders", "eu.paid")))
        );
        assert_eq!(parse_destination("/exchange/logs"), Some(Ok(("logs", ""))));
        assert!(matches!(
            parse_destination("/exchange//x"),
            Some(Err(ExchangeError::NoName(_)))
        ));
        assert_eq!(parse_destination("/queue/x"), None);
    }
}
