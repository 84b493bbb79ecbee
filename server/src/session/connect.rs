//! CONNECT: the version agreed, the login checked, the will kept, the
//! heart-beats negotiated, CONNECTED sent.

use super::*;

impl Session {
    pub(super) fn connect(&mut self, connect: Connect) -> Result<Flow, SessionError> {
        let version = match &connect.accept_version {
            None => Version::V1_0,
            Some(offered) => offered
                .split(',')
                .filter_map(Version::parse)
                .max()
                .ok_or_else(|| SessionError::UnsupportedVersion {
                    offered: offered.chars().take(80).collect(),
                })?,
        };
        let identity = match auth::authenticate(
            &self.settings,
            self.peer_is_loopback,
            self.certificate_login.as_deref(),
            &connect,
        ) {
            Ok(identity) => identity,
            Err(e) => {
                let login = connect.login.as_deref().unwrap_or(auth::ANONYMOUS);
                tracing::warn!(login, error = %e, "login refused");
                return Err(e);
            }
        };
        let login = identity.login.as_str();
        tracing::Span::current().record("login", login);
        tracing::info!(
            login,
            %version,
            token = identity.token.is_some(),
            certificate = self.certificate_login.as_deref() == Some(login),
            "connected"
        );
        self.sender = ByteString::from(login);
        self.login = identity.login;
        self.token = identity.token;
        if let Some(client) = &connect.client_id
            && client.chars().any(char::is_control)
        {
            return Err(SessionError::InvalidHeader {
                header: "client-id",
                value: client.chars().take(40).collect(),
                expected: "printable text without control characters",
            });
        }
        self.client_id = connect.client_id.clone();
        if let Some(will) = &connect.will {
            self.permit(Permission::Write, &will.destination)?;
        }
        self.will = connect.will.clone();
        if let (Some(cluster), Some(will)) = (self.broker.cluster(), &self.will) {
            // Should this node die first, a survivor publishes it.
            let mut headers = will.headers.clone();
            headers.push("x-sender", self.sender.clone());
            cluster.keep_will(self.id.0, &will.destination, &headers, &will.body);
            self.will_kept = true;
        }
        let (sx, sy) = Heartbeat::offer(
            connect.heart_beat,
            self.settings.heart_beat,
            self.settings.min_heart_beat.as_millis() as u64,
        );
        let heartbeat = Heartbeat::negotiate(connect.heart_beat, (sx, sy));
        self.version = Some(version);
        self.outbox.push_frame(
            Frame::new(Command::Connected)
                .header("version", version.as_str())
                .header("session", self.id.to_string())
                .header("server", concat!("stompbox/", env!("CARGO_PKG_VERSION")))
                .header("heart-beat", format!("{sx},{sy}")),
        );
        Ok(Flow::Connected { version, heartbeat })
    }
}
