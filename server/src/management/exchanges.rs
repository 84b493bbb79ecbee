//! Exchanges and bindings, declared and deleted while the broker runs
//! (RabbitMQ's `PUT /api/exchanges/...` and bindings, in this API's shape).
//! The config file's exchanges are listed but changed only there.

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiState, error};
use crate::broker::ExchangeError;
use crate::broker::exchange::{BindTarget, BindingConfig};
use crate::broker::exchanges::{BindingDeclaration, ExchangeDeclaration};

/// The calls on exchanges and their bindings.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/exchanges", get(list))
        .route(
            "/api/exchanges/{name}",
            get(one).put(declare).delete(delete),
        )
        .route("/api/exchanges/{name}/bindings", post(bind).delete(unbind))
}

/// The status each refusal gets.
fn refused(e: ExchangeError) -> Response {
    let status = match e {
        ExchangeError::Unknown(_) | ExchangeError::NoSuchBinding(_) => StatusCode::NOT_FOUND,
        ExchangeError::Exists { .. }
        | ExchangeError::Configured(_)
        | ExchangeError::InUse { .. }
        | ExchangeError::Loop(_)
        | ExchangeError::Duplicate(_) => StatusCode::CONFLICT,
        ExchangeError::Save(_) | ExchangeError::Load { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

fn exchange_json(s: &ApiState, x: &crate::broker::Exchange) -> Value {
    let bindings: Vec<Value> = x
        .bindings()
        .iter()
        .map(|b| {
            let mut v = match &b.target {
                BindTarget::Queue(q) => json!({ "queue": q.to_string() }),
                BindTarget::Exchange(e) => json!({ "exchange": e }),
            };
            v["key"] = json!(b.key);
            if !b.headers.values.is_empty() {
                let mut args: serde_json::Map<String, Value> = b
                    .headers
                    .values
                    .iter()
                    .map(|(n, v)| (n.clone(), json!(v)))
                    .collect();
                args.insert(
                    "x-match".into(),
                    json!(if b.headers.any { "any" } else { "all" }),
                );
                v["arguments"] = Value::Object(args);
            }
            // A subscription's binding goes with it.
            v["subscription"] = json!(b.owner.is_some());
            v
        })
        .collect();
    json!({
        "name": x.name(),
        "type": x.kind().as_str(),
        "alternate_exchange": x.alternate(),
        "configured": s.broker.exchanges().is_configured(x.name()),
        "bindings": bindings,
    })
}

async fn list(State(s): State<ApiState>) -> Json<Value> {
    let mut all = s.broker.exchanges().all();
    all.sort_by(|a, b| a.name().cmp(b.name()));
    let list: Vec<Value> = all.iter().map(|x| exchange_json(&s, x)).collect();
    Json(json!({ "exchanges": list }))
}

async fn one(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match s.broker.exchange(&name) {
        Ok(x) => Json(exchange_json(&s, &x)).into_response(),
        Err(e) => refused(e),
    }
}

/// A declaration's body: the name is in the path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declare {
    #[serde(rename = "type")]
    kind: crate::broker::ExchangeKind,
    #[serde(default)]
    alternate_exchange: Option<String>,
}

/// The body, or why it is not one (for a 400 that says what shape was expected).
fn body<T>(given: Result<Json<T>, JsonRejection>, expected: &str) -> Result<T, String> {
    given
        .map(|Json(t)| t)
        .map_err(|e| format!("expected {expected}: {e}"))
}

const DECLARE_SHAPE: &str =
    r#"{"type": "direct"|"topic"|"fanout"|"headers", "alternate_exchange": NAME (optional)}"#;
const BINDING_SHAPE: &str = r#"{"queue": "/queue/NAME" or "exchange": NAME, "key": ..., "arguments": {...} (headers exchanges)}"#;

async fn declare(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    given: Result<Json<Declare>, JsonRejection>,
) -> Response {
    let d = match body(given, DECLARE_SHAPE) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let declaration = ExchangeDeclaration {
        name,
        kind: d.kind,
        alternate_exchange: d.alternate_exchange,
    };
    let exchanges = s.broker.exchanges();
    match exchanges.declare(declaration.clone()) {
        Ok(created) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(json!({ "declared": declaration.name, "created": created })),
            )
                .into_response()
        }
        Err(e) => refused(e),
    }
}

async fn delete(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match s.broker.exchanges().delete(&name) {
        Ok(n) => Json(json!({ "deleted": name, "bindings_removed": n })).into_response(),
        Err(e) => refused(e),
    }
}

/// The binding a bind or unbind call names: the exchange from the path,
/// the rest from the body (or why the body is not one).
fn binding_of(
    name: String,
    given: Result<Json<BindingConfig>, JsonRejection>,
) -> Result<BindingDeclaration, String> {
    Ok(BindingDeclaration {
        exchange: name,
        binding: body(given, BINDING_SHAPE)?,
    })
}

async fn bind(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    given: Result<Json<BindingConfig>, JsonRejection>,
) -> Response {
    let declaration = match binding_of(name, given) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match s.broker.exchanges().bind(declaration) {
        Ok(created) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!({ "bound": true, "created": created }))).into_response()
        }
        Err(e) => refused(e),
    }
}

async fn unbind(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    given: Result<Json<BindingConfig>, JsonRejection>,
) -> Response {
    let declaration = match binding_of(name, given) {
        Ok(d) => d,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match s.broker.exchanges().unbind(&declaration) {
        Ok(()) => Json(json!({ "unbound": true })).into_response(),
        Err(e) => refused(e),
    }
}
