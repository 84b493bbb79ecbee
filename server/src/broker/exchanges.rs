//! The broker's exchanges by name: those the config file declares, fixed
//! for the run, and those the management API declares and binds while it
//! runs. The API's declarations are saved to a file in the data directory
//! (written whole, then renamed over the old one, so a crash leaves one or
//! the other) and declared again at start, as RabbitMQ keeps its durable
//! exchanges and bindings.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::exchange::{
    self, AMQ_TOPIC, BindTarget, BindingConfig, Exchange, ExchangeConfig, ExchangeError,
    ExchangeKind,
};

/// The file in the data directory that keeps the API's declarations.
pub const DECLARED_FILE: &str = "exchanges.json";

/// An exchange declared through the API (its bindings are kept apart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDeclaration {
    /// Its name, as in `/exchange/NAME/KEY`.
    pub name: String,
    /// `direct`, `topic`, `fanout` or `headers`.
    #[serde(rename = "type")]
    pub kind: ExchangeKind,
    /// Where messages no binding takes go instead (another exchange).
    #[serde(default)]
    pub alternate_exchange: Option<String>,
}

/// A binding declared through the API, on any exchange.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BindingDeclaration {
    /// The exchange it belongs to.
    pub exchange: String,
    /// Where it leads and by which key or arguments.
    pub binding: BindingConfig,
}

/// Everything the API declared: what the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    exchanges: Vec<ExchangeDeclaration>,
    bindings: Vec<BindingDeclaration>,
}

/// The exchanges, by name.
#[derive(Debug, Default)]
pub struct Exchanges {
    map: RwLock<HashMap<String, Arc<Exchange>>>,
    /// Names the config file declares: not the API's to delete.
    configured: HashSet<String>,
    /// The API's declarations; its lock also puts changes in one order.
    declared: Mutex<Declared>,
    /// Where the declarations are saved; `None` runs in memory only.
    file: Option<PathBuf>,
}

impl Exchanges {
    /// The exchanges the config declares (see [`exchange::build`]), with
    /// the API's declarations saved in `data_dir` (when there is one)
    /// declared again on top.
    pub fn new(configs: &[ExchangeConfig], data_dir: Option<&Path>) -> Result<Self, ExchangeError> {
        let built = exchange::build(configs)?;
        let exchanges = Exchanges {
            configured: built.keys().cloned().collect(),
            map: RwLock::new(built.into_iter().map(|(n, x)| (n, Arc::new(x))).collect()),
            declared: Mutex::new(Declared::default()),
            file: data_dir.map(|d| d.join(DECLARED_FILE)),
        };
        if let Some(file) = &exchanges.file {
            exchanges.load(file)?;
        }
        Ok(exchanges)
    }

    fn load(&self, file: &Path) -> Result<(), ExchangeError> {
        let load_error = |why: String| ExchangeError::Load {
            file: file.display().to_string(),
            why,
        };
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(load_error(e.to_string())),
        };
        let saved: Declared = serde_json::from_str(&text).map_err(|e| load_error(e.to_string()))?;
        let mut declared = self.lock();
        for x in &saved.exchanges {
            self.apply_declare(x)
                .map_err(|e| load_error(e.to_string()))?;
        }
        for b in &saved.bindings {
            self.apply_bind(b).map_err(|e| load_error(e.to_string()))?;
        }
        *declared = saved;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Declared> {
        self.declared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exchange of this name.
    pub fn get(&self, name: &str) -> Option<Arc<Exchange>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Every exchange, in no order.
    pub fn all(&self) -> Vec<Arc<Exchange>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Whether the config file declares this exchange.
    pub fn is_configured(&self, name: &str) -> bool {
        self.configured.contains(name)
    }

    /// Declares an exchange. Declaring one that exists with the same type
    /// and alternate does nothing and returns `false`.
    pub fn declare(&self, x: ExchangeDeclaration) -> Result<bool, ExchangeError> {
        let mut declared = self.lock();
        if let Some(existing) = self.get(&x.name) {
            return if existing.kind() == x.kind
                && existing.alternate() == x.alternate_exchange.as_deref()
            {
                Ok(false)
            } else {
                Err(ExchangeError::Exists {
                    name: x.name,
                    kind: existing.kind().as_str(),
                    alternate: existing.alternate().map(str::to_string),
                })
            };
        }
        check_name(&x.name)?;
        if let Some(alt) = &x.alternate_exchange
            && self.get(alt).is_none()
        {
            return Err(ExchangeError::Unknown(alt.clone()));
        }
        let mut next = declared.clone();
        next.exchanges.push(x.clone());
        self.save(&next)?;
        self.apply_declare(&x)?;
        *declared = next;
        Ok(true)
    }

    /// Deletes an exchange the API declared, with its bindings and the
    /// bindings of other exchanges that lead to it. Returns how many
    /// bindings went with it.
    pub fn delete(&self, name: &str) -> Result<usize, ExchangeError> {
        let mut declared = self.lock();
        if self.is_configured(name) {
            return Err(ExchangeError::Configured(format!("exchange {name:?}")));
        }
        let Some(gone) = self.get(name) else {
            return Err(ExchangeError::Unknown(name.chars().take(100).collect()));
        };
        let others = self.all();
        if let Some(by) = others.iter().find(|x| x.alternate() == Some(name)) {
            return Err(ExchangeError::InUse {
                name: name.to_string(),
                by: by.name().to_string(),
            });
        }
        let leads_here = |b: &BindingConfig| b.exchange.as_deref() == Some(name);
        let mut next = declared.clone();
        next.exchanges.retain(|x| x.name != name);
        next.bindings
            .retain(|d| d.exchange != name && !leads_here(&d.binding));
        self.save(&next)?;
        let target = BindTarget::Exchange(name.to_string());
        let mut removed = gone.bindings().len();
        for x in &others {
            removed += x.unbind_where(|b| b.target == target);
        }
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        *declared = next;
        Ok(removed)
    }

    /// Binds on `exchange`. Adding a binding that exists does nothing
    /// and returns `false`.
    pub fn bind(&self, b: BindingDeclaration) -> Result<bool, ExchangeError> {
        let mut declared = self.lock();
        let x = self
            .get(&b.exchange)
            .ok_or_else(|| ExchangeError::Unknown(b.exchange.chars().take(100).collect()))?;
        let binding = exchange::binding(&x, &b.binding, |n| self.get(n).is_some())?;
        if x.bindings().iter().any(|existing| same(existing, &binding)) {
            return Ok(false);
        }
        if let BindTarget::Exchange(to) = &binding.target
            && let Some(path) = self.path(to, &b.exchange)
        {
            return Err(ExchangeError::Loop(format!("{} → {path}", b.exchange)));
        }
        let mut next = declared.clone();
        next.bindings.push(b);
        self.save(&next)?;
        x.bind(binding)?;
        *declared = next;
        Ok(true)
    }

    /// Removes a binding the API made.
    pub fn unbind(&self, b: &BindingDeclaration) -> Result<(), ExchangeError> {
        let mut declared = self.lock();
        let x = self
            .get(&b.exchange)
            .ok_or_else(|| ExchangeError::Unknown(b.exchange.chars().take(100).collect()))?;
        let binding = exchange::binding(&x, &b.binding, |_| true)?;
        let Some(at) = declared.bindings.iter().position(|d| d == b) else {
            if x.bindings().iter().any(|e| same(e, &binding)) {
                return Err(ExchangeError::Configured(format!(
                    "this binding of exchange {:?}",
                    b.exchange
                )));
            }
            return Err(ExchangeError::NoSuchBinding(b.exchange.clone()));
        };
        let mut next = declared.clone();
        next.bindings.remove(at);
        self.save(&next)?;
        // One copy only: the config may declare the same binding too.
        let mut taken = false;
        x.unbind_where(|e| {
            let pick = !taken && same(e, &binding);
            taken |= pick;
            pick
        });
        *declared = next;
        Ok(())
    }

    fn apply_declare(&self, x: &ExchangeDeclaration) -> Result<(), ExchangeError> {
        check_name(&x.name)?;
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&x.name) {
            return Err(ExchangeError::Duplicate(x.name.clone()));
        }
        if let Some(alt) = &x.alternate_exchange
            && !map.contains_key(alt)
        {
            return Err(ExchangeError::Unknown(alt.clone()));
        }
        map.insert(
            x.name.clone(),
            Arc::new(Exchange::new(
                x.name.clone(),
                x.kind,
                x.alternate_exchange.clone(),
            )),
        );
        Ok(())
    }

    fn apply_bind(&self, b: &BindingDeclaration) -> Result<(), ExchangeError> {
        let x = self
            .get(&b.exchange)
            .ok_or_else(|| ExchangeError::Unknown(b.exchange.clone()))?;
        let binding = exchange::binding(&x, &b.binding, |n| self.get(n).is_some())?;
        if let BindTarget::Exchange(to) = &binding.target
            && let Some(path) = self.path(to, &b.exchange)
        {
            return Err(ExchangeError::Loop(format!("{} → {path}", b.exchange)));
        }
        x.bind(binding)
    }

    /// A way from exchange `from` to exchange `to` through exchange
    /// bindings and alternates, as "a → b → c", if there is one.
    fn path(&self, from: &str, to: &str) -> Option<String> {
        let mut stack = vec![vec![from.to_string()]];
        let mut seen = HashSet::new();
        while let Some(path) = stack.pop() {
            let at = path.last()?.clone();
            if at == to {
                return Some(path.join(" → "));
            }
            if !seen.insert(at.clone()) {
                continue;
            }
            let Some(x) = self.get(&at) else { continue };
            let next = x
                .bindings()
                .into_iter()
                .filter_map(|b| match b.target {
                    BindTarget::Exchange(n) => Some(n),
                    BindTarget::Queue(_) => None,
                })
                .chain(x.alternate().map(str::to_string));
            for n in next {
                let mut longer = path.clone();
                longer.push(n);
                stack.push(longer);
            }
        }
        None
    }

    /// Writes the declarations whole to a new file, syncs it, and renames
    /// it over the old one, so a crash leaves the old or the new.
    fn save(&self, declared: &Declared) -> Result<(), ExchangeError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let save_error =
            |e: std::io::Error| ExchangeError::Save(format!("{}: {e}", file.display()));
        let text =
            serde_json::to_vec_pretty(declared).map_err(|e| ExchangeError::Save(e.to_string()))?;
        let fresh = file.with_extension("json.new");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&fresh).map_err(save_error)?;
            f.write_all(&text).map_err(save_error)?;
            f.sync_all().map_err(save_error)?;
        }
        std::fs::rename(&fresh, file).map_err(save_error)?;
        if let Some(dir) = file.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(save_error)?;
        }
        Ok(())
    }
}

/// Two bindings that route the same way (whoever made them).
fn same(a: &exchange::Binding, b: &exchange::Binding) -> bool {
    a.target == b.target && a.key == b.key && a.headers == b.headers && a.owner.is_none()
}

fn check_name(name: &str) -> Result<(), ExchangeError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
        || name == AMQ_TOPIC
    {
        return Err(ExchangeError::BadName(name.chars().take(100).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    fn declare(name: &str, kind: ExchangeKind) -> ExchangeDeclaration {
        ExchangeDeclaration {
            name: name.into(),
            kind,
            alternate_exchange: None,
        }
    }

    fn to_queue(exchange: &str, queue: &str, key: &str) -> BindingDeclaration {
        BindingDeclaration {
            exchange: exchange.into(),
            binding: BindingConfig {
                queue: Some(queue.into()),
                exchange: None,
                key: key.into(),
                arguments: Default::default(),
            },
        }
    }

    fn to_exchange(exchange: &str, to: &str) -> BindingDeclaration {
        BindingDeclaration {
            exchange: exchange.into(),
            binding: BindingConfig {
                queue: None,
                exchange: Some(to.into()),
                key: "#".into(),
                arguments: Default::default(),
            },
        }
    }

    #[test]
    fn declarations_survive_a_restart_and_config_ones_stay_put() {
        let dir = tempfile::tempdir().unwrap();
        let config = vec![ExchangeConfig {
            name: "fixed".into(),
            kind: ExchangeKind::Fanout,
            alternate_exchange: None,
            bindings: vec![to_queue("fixed", "/queue/f", "").binding],
        }];
        let x = Exchanges::new(&config, Some(dir.path())).unwrap();
        assert!(x.declare(declare("orders", ExchangeKind::Topic)).unwrap());
        assert!(!x.declare(declare("orders", ExchangeKind::Topic)).unwrap());
        let e = x
            .declare(declare("orders", ExchangeKind::Direct))
            .unwrap_err();
        assert!(e.to_string().contains("exists with type topic"), "{e}");
        assert!(x.bind(to_queue("orders", "/queue/eu", "eu.*")).unwrap());
        assert!(!x.bind(to_queue("orders", "/queue/eu", "eu.*")).unwrap());
        assert!(x.bind(to_queue("fixed", "/queue/g", "")).unwrap());
        assert!(matches!(
            x.delete("fixed"),
            Err(ExchangeError::Configured(_))
        ));
        assert!(matches!(
            x.unbind(&to_queue("fixed", "/queue/f", "")),
            Err(ExchangeError::Configured(_))
        ));

        let again = Exchanges::new(&config, Some(dir.path())).unwrap();
        let orders = again.get("orders").unwrap();
        assert_eq!(orders.kind(), ExchangeKind::Topic);
        assert_eq!(orders.route("eu.paid", &headers(&[])).len(), 1);
        assert_eq!(again.get("fixed").unwrap().bindings().len(), 2);

        again.unbind(&to_queue("fixed", "/queue/g", "")).unwrap();
        assert_eq!(again.delete("orders").unwrap(), 1);
        let third = Exchanges::new(&config, Some(dir.path())).unwrap();
        assert!(third.get("orders").is_none());
        assert_eq!(third.get("fixed").unwrap().bindings().len(), 1);
    }

    #[test]
    fn loops_unknown_targets_bad_names_and_needed_exchanges_are_refused() {
        let x = Exchanges::new(&[], None).unwrap();
        for name in ["a", "b", "c"] {
            x.declare(declare(name, ExchangeKind::Fanout)).unwrap();
        }
        x.bind(to_exchange("a", "b")).unwrap();
        x.bind(to_exchange("b", "c")).unwrap();
        let e = x.bind(to_exchange("c", "a")).unwrap_err();
        assert_eq!(e, ExchangeError::Loop("c → a → b → c".into()));
        assert!(matches!(
            x.bind(to_exchange("a", "nope")),
            Err(ExchangeError::Unknown(_))
        ));
        assert!(matches!(
            x.bind(to_queue("a", "/topic/t", "")),
            Err(ExchangeError::NotAQueue { .. })
        ));
        for bad in ["", "a/b", AMQ_TOPIC] {
            assert!(matches!(
                x.declare(declare(bad, ExchangeKind::Direct)),
                Err(ExchangeError::BadName(_))
            ));
        }
        let mut with_alternate = declare("d", ExchangeKind::Direct);
        with_alternate.alternate_exchange = Some("c".into());
        x.declare(with_alternate).unwrap();
        let e = x.delete("c").unwrap_err();
        assert!(matches!(e, ExchangeError::InUse { .. }), "{e}");
        x.delete("d").unwrap();
        // Deleting c takes b's binding to it along.
        assert_eq!(x.delete("c").unwrap(), 1);
        assert!(x.get("b").unwrap().bindings().is_empty());
        assert!(matches!(
            x.unbind(&to_exchange("b", "c")),
            Err(ExchangeError::Unknown(_)) | Err(ExchangeError::NoSuchBinding(_))
        ));
    }

    #[test]
    fn an_unreadable_file_is_named_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DECLARED_FILE), "{ not json").unwrap();
        let e = Exchanges::new(&[], Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains(DECLARED_FILE), "{e}");
    }
}
