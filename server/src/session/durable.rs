//! Naming durable topic subscriptions. A key says whose subscription it
//! is (the login), which client (`client-id`, ActiveMQ's and Artemis'
//! way) and its name, or, RabbitMQ's way, the subscription id. The login
//! is part of every key, so one user can never take over another's.

use stomp_codec::ByteString;

use crate::error::SessionError;
use crate::ids::SubscriptionId;
use crate::protocol::DurableName;

/// The key of the durable subscription `name` asks for.
pub(super) fn key(
    login: &str,
    client_id: Option<&str>,
    name: &DurableName,
    id: Option<&SubscriptionId>,
) -> Result<ByteString, SessionError> {
    match name {
        DurableName::ById => {
            let id = id.ok_or(SessionError::MissingHeader {
                command: "SUBSCRIBE",
                header: "id",
            })?;
            // No client part: RabbitMQ names durable subscriptions by id alone.
            Ok(ByteString::from(format!("{login}\n\n{}", id.as_str())))
        }
        DurableName::Named(name) => {
            let client = client_id.ok_or(SessionError::Durable(
                "a durable subscription by name needs a client-id header on CONNECT".into(),
            ))?;
            Ok(ByteString::from(format!("{login}\n{client}\n{name}")))
        }
    }
}

/// A key as a person would name it in an error: its last part.
pub(super) fn shown(key: &str) -> &str {
    key.rsplit('\n').next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_owner_and_never_collide_across_dialects() {
        let id = SubscriptionId::from("ticker");
        let rabbit = key("ana", None, &DurableName::ById, Some(&id)).expect("by id");
        let active = key(
            "ana",
            Some("app"),
            &DurableName::Named("ticker".into()),
            None,
        )
        .expect("named");
        let other_user = key("bob", None, &DurableName::ById, Some(&id)).expect("by id");
        assert_ne!(rabbit, active);
        assert_ne!(rabbit, other_user);
        assert_eq!(shown(&active), "ticker");
        assert!(matches!(
            key("ana", None, &DurableName::Named("x".into()), None),
            Err(SessionError::Durable(_))
        ));
    }
}
