//! `stompbox admin`: the management API from the command line, as
//! `rabbitmqadmin` is for RabbitMQ. Prints the API's JSON; a refusal is
//! one line naming the HTTP status and the API's reason, and exit code 1.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::within;
use crate::bench::BenchError;

/// `stompbox admin`: the management API from the command line.
#[derive(Args, Debug, Clone)]
pub struct AdminArgs {
    /// The management API's address.
    #[arg(long, default_value = "http://127.0.0.1:15670", env = "STOMPBOX_API")]
    pub api: String,
    /// A file holding the bearer token (as the broker's management_token_file).
    #[arg(long, env = "STOMPBOX_MANAGEMENT_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The bearer token itself; from the environment it stays out of the process list.
    #[arg(long, env = "STOMPBOX_MANAGEMENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The management calls `stompbox admin` makes.
#[derive(Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Version, uptime, connections, memory, messages.
    Overview,
    /// The open connections.
    Connections,
    /// Close a connection by id (it gets an ERROR saying why).
    Close {
        /// The connection's id (from `connections`).
        id: u64,
    },
    /// Every queue, topic and exchange, with counts.
    List,
    /// Drop every waiting message of a queue.
    Purge {
        /// The queue, without /queue/.
        queue: String,
    },
    /// Show waiting messages of a queue without taking them.
    Peek {
        /// The queue, without /queue/.
        queue: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
    },
    /// Send dead letters back to the destination they were first sent to.
    MoveBack {
        /// The dead-letter queue, without /queue/.
        queue: String,
        /// How many at most.
        #[arg(short = 'n', long, default_value_t = 100)]
        count: usize,
    },
    /// Delete a queue nobody uses, with the messages waiting in it.
    DeleteQueue {
        /// The queue, without /queue/.
        queue: String,
    },
    /// Drop a topic's kept history (a chat room's), on disk too.
    PurgeTopic {
        /// The topic, without /topic/.
        topic: String,
    },
    /// Delete a topic nobody subscribes to, with its kept history.
    DeleteTopic {
        /// The topic, without /topic/.
        topic: String,
    },
    /// Publish a message (for debugging; x-sender says it came from the API).
    Publish {
        /// The destination, e.g. /queue/jobs.
        destination: String,
        /// The body.
        #[arg(default_value = "")]
        body: String,
        /// A header, name:value (repeat).
        #[arg(short = 'H', long = "header", value_name = "NAME:VALUE")]
        headers: Vec<String>,
    },
    /// The exchanges, with their bindings.
    Exchanges,
    /// Declare an exchange (kept across restarts when the broker has a data directory).
    DeclareExchange {
        /// Its name, as in /exchange/NAME/KEY.
        name: String,
        /// direct, topic, fanout or headers.
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Where messages no binding takes go instead.
        #[arg(long)]
        alternate: Option<String>,
    },
    /// Delete an exchange the API declared, with its bindings.
    DeleteExchange {
        /// Its name.
        name: String,
    },
    /// Bind a queue (or another exchange) to an exchange.
    Bind(BindArgs),
    /// Remove a binding the API made.
    Unbind(BindArgs),
}

/// A binding, as `bind` and `unbind` take it.
#[derive(Args, Debug, Clone)]
pub struct BindArgs {
    /// The exchange bound from.
    exchange: String,
    /// The queue bound to, e.g. /queue/eu.
    #[arg(
        long,
        conflicts_with = "to_exchange",
        required_unless_present = "to_exchange"
    )]
    queue: Option<String>,
    /// Or the exchange bound to.
    #[arg(long)]
    to_exchange: Option<String>,
    /// The binding key (direct: the routing key; topic: a pattern).
    #[arg(long, default_value = "")]
    key: String,
    /// A headers exchange's argument, name=value, x-match=all|any (repeat).
    #[arg(long = "arg", value_name = "NAME=VALUE")]
    arguments: Vec<String>,
}

impl BindArgs {
    fn json(&self) -> Result<String, BenchError> {
        let mut arguments = serde_json::Map::new();
        for a in &self.arguments {
            let (n, v) = a
                .split_once('=')
                .ok_or_else(|| BenchError::Usage(format!("--arg {a:?}: expected NAME=VALUE")))?;
            arguments.insert(n.to_string(), json!(v));
        }
        let mut body = json!({ "key": self.key, "arguments": arguments });
        match (&self.queue, &self.to_exchange) {
            (Some(q), _) => body["queue"] = json!(q),
            (None, Some(x)) => body["exchange"] = json!(x),
            (None, None) => {
                return Err(BenchError::Usage(
                    "a binding needs --queue /queue/NAME or --to-exchange NAME".into(),
                ));
            }
        }
        Ok(body.to_string())
    }
}

/// A path segment with what would end or split it percent-encoded.
fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The method, path and JSON body of a command.
fn request(command: &AdminCommand) -> Result<(&'static str, String, String), BenchError> {
    let none = String::new;
    Ok(match command {
        AdminCommand::Overview => ("GET", "/api/overview".into(), none()),
        AdminCommand::Connections => ("GET", "/api/connections".into(), none()),
        AdminCommand::Close { id } => ("DELETE", format!("/api/connections/{id}"), none()),
        AdminCommand::List => ("GET", "/api/destinations".into(), none()),
        AdminCommand::Purge { queue } => (
            "POST",
            format!("/api/queues/{}/purge", segment(queue)),
            none(),
        ),
        AdminCommand::Peek { queue, count } => (
            "GET",
            format!("/api/queues/{}/messages?count={count}", segment(queue)),
            none(),
        ),
        AdminCommand::MoveBack { queue, count } => (
            "POST",
            format!("/api/queues/{}/move-back", segment(queue)),
            json!({ "count": count }).to_string(),
        ),
        AdminCommand::DeleteQueue { queue } => {
            ("DELETE", format!("/api/queues/{}", segment(queue)), none())
        }
        AdminCommand::PurgeTopic { topic } => (
            "POST",
            format!("/api/topics/{}/purge", segment(topic)),
            none(),
        ),
        AdminCommand::DeleteTopic { topic } => {
            ("DELETE", format!("/api/topics/{}", segment(topic)), none())
        }
        AdminCommand::Publish {
            destination,
            body,
            headers,
        } => {
            let mut map = serde_json::Map::new();
            for h in headers {
                let (n, v) = h
                    .split_once(':')
                    .ok_or_else(|| BenchError::Usage(format!("-H {h:?}: expected name:value")))?;
                map.insert(n.to_string(), json!(v));
            }
            let body = json!({ "destination": destination, "body": body, "headers": map });
            ("POST", "/api/publish".into(), body.to_string())
        }
        AdminCommand::Exchanges => ("GET", "/api/exchanges".into(), none()),
        AdminCommand::DeclareExchange {
            name,
            kind,
            alternate,
        } => (
            "PUT",
            format!("/api/exchanges/{}", segment(name)),
            json!({ "type": kind, "alternate_exchange": alternate }).to_string(),
        ),
        AdminCommand::DeleteExchange { name } => (
            "DELETE",
            format!("/api/exchanges/{}", segment(name)),
            none(),
        ),
        AdminCommand::Bind(b) => (
            "POST",
            format!("/api/exchanges/{}/bindings", segment(&b.exchange)),
            b.json()?,
        ),
        AdminCommand::Unbind(b) => (
            "DELETE",
            format!("/api/exchanges/{}/bindings", segment(&b.exchange)),
            b.json()?,
        ),
    })
}

/// One call of the management API, its JSON printed on standard output.
pub async fn admin(args: AdminArgs) -> Result<(), BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| BenchError::Usage(format!("--token-file {}: {e}", path.display())))?
            .trim()
            .to_string(),
        (None, None) => {
            return Err(BenchError::Usage(
                "the management API needs a token: --token-file FILE or STOMPBOX_MANAGEMENT_TOKEN"
                    .into(),
            ));
        }
    };
    let authority = args
        .api
        .strip_prefix("http://")
        .ok_or_else(|| {
            BenchError::Usage(format!("--api {:?}: expected http://host:port", args.api))
        })?
        .trim_end_matches('/');
    let (method, path, body) = request(&args.command)?;
    let call = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| BenchError::Connect(format!("{authority}: {e}")))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?;
        Ok::<_, BenchError>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = within(
        Duration::from_secs(30),
        "waiting for the management API",
        call,
    )
    .await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| BenchError::Protocol("not an HTTP response".into()))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| BenchError::Protocol("no HTTP status".into()))?;
    let json: Value =
        serde_json::from_str(body).map_err(|e| BenchError::Protocol(format!("not JSON ({e})")))?;
    if !(200..300).contains(&status) {
        let message = json["error"].as_str().unwrap_or("no error message");
        return Err(BenchError::Api(format!("HTTP {status}: {message}")));
    }
    let pretty = serde_json::to_string_pretty(&json).unwrap_or_default();
    writeln!(std::io::stdout(), "{pretty}")
        .map_err(|e| BenchError::Io(format!("writing standard output: {e}")))?;
    Ok(())
}
