//! Email delivery: SMTP through `lettre` (STARTTLS or implicit TLS, with credentials), and
//! `log` for development.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncTransport, Tokio1Executor};

use crate::config::{Config, EmailProviderConfig, Mode, SmtpConfig, SmtpTls};
use crate::error::{Error, Result};
use crate::sms::{BoxFuture, Delivered};
use crate::state::AppState;

/// One way to send email. Errors are for the log and never contain the message.
pub trait EmailProvider: Send + Sync + std::fmt::Debug {
    /// The provider's name (`smtp`, `log`).
    fn name(&self) -> &str;
    /// Sends a plain-text message and returns its Message-ID.
    fn send<'a>(
        &'a self,
        to: &'a str,
        subject: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>>;
}

/// Builds the configured email provider: `None` when email is off (production without one).
pub fn from_config(config: &Config) -> Result<Option<Box<dyn EmailProvider>>> {
    Ok(match &config.email.provider {
        Some(EmailProviderConfig::Smtp(c)) => Some(Box::new(Smtp::new(c, config.mode)?)),
        Some(EmailProviderConfig::Log(c)) => {
            crate::sms::refuse_log_in_production(config.mode, "email")?;
            Some(Box::new(Log { name: c.name.clone().unwrap_or_else(|| "log".into()) }))
        }
        None if config.mode == Mode::Dev => Some(Box::new(Log { name: "log".into() })),
        None => None,
    })
}

/// Sends an email through the configured provider.
pub async fn send(state: &AppState, to: &str, subject: &str, body: &str) -> Result<Delivered> {
    let Some(provider) = &state.fallback.email else {
        return Err(Error::invalid("factor_not_configured", "no email provider is configured"));
    };
    match provider.send(to, subject, body).await {
        Ok(message_id) => {
            state.metrics.message("email", provider.name(), "accepted");
            tracing::info!(provider = provider.name(), message_id = %message_id, "email accepted");
            Ok(Delivered { provider: provider.name().to_owned(), message_id })
        }
        Err(error) => {
            state.metrics.message("email", provider.name(), "failed");
            tracing::warn!(provider = provider.name(), %error, "email delivery failed");
            Err(Error::DeliveryFailed {
                detail: "the mail server did not accept the message; its answer is in the server log".into(),
                challenge_id: None,
            })
        }
    }
}

/// An SMTP submission server.
struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Smtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smtp").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl Smtp {
    fn new(c: &SmtpConfig, mode: Mode) -> Result<Self> {
        let bad = |e: lettre::transport::smtp::Error| Error::internal(format!("email provider {}: {e}", c.host));
        let builder = match c.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&c.host).map_err(bad)?,
            SmtpTls::Implicit => AsyncSmtpTransport::<Tokio1Executor>::relay(&c.host).map_err(bad)?,
            SmtpTls::None => {
                let local = matches!(c.host.as_str(), "localhost" | "127.0.0.1" | "::1");
                if mode == Mode::Production && !local {
                    return Err(Error::internal(
                        "email provider: tls = \"none\" sends codes in clear text; in production it is only \
                         allowed to a relay on localhost",
                    ));
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host).port(25)
            }
        };
        let mut builder = builder.timeout(Some(Duration::from_secs(c.timeout_seconds.unwrap_or(10).clamp(1, 120))));
        if let Some(port) = c.port {
            builder = builder.port(port);
        }
        match (&c.username, &c.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            (None, None) => {}
            _ => return Err(Error::internal("email provider: set both username and password, or neither")),
        }
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| Error::internal(format!("email provider: from {:?} is not an address: {e}", c.from)))?;
        Ok(Smtp { transport: builder.build(), from })
    }
}

impl EmailProvider for Smtp {
    fn name(&self) -> &str {
        "smtp"
    }

    fn send<'a>(
        &'a self,
        to: &'a str,
        subject: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
            let message_id =
                format!("<{}@{}>", hex::encode(crate::ids::random_bytes::<16>()), self.from.email.domain());
            let message = Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(subject)
                .message_id(Some(message_id.clone()))
                .header(ContentType::TEXT_PLAIN)
                .body(body.to_owned())
                .map_err(|e| format!("building the message: {e}"))?;
            self.transport.send(message).await.map_err(|e| format!("SMTP: {e}"))?;
            Ok(message_id)
        })
    }
}

/// Development only: the message, code included, goes to the server log.
#[derive(Debug)]
struct Log {
    name: String,
}

impl EmailProvider for Log {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(
        &'a self,
        to: &'a str,
        subject: &'a str,
        body: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            let id = format!("log-{}", hex::encode(crate::ids::random_bytes::<8>()));
            tracing::info!(provider = %self.name, %to, message_id = %id, %subject, %body, "email (log provider, development only: not sent)");
            Ok(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogProviderConfig;

    fn smtp(tls: SmtpTls, host: &str) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port: None,
            tls,
            username: None,
            password: None,
            from: "Acme <no-reply@example.com>".into(),
            timeout_seconds: None,
        }
    }

    #[test]
    fn production_refuses_log_and_clear_text() {
        let mut config = Config::default();
        assert_eq!(from_config(&config).unwrap().unwrap().name(), "log");
        config.mode = Mode::Production;
        assert!(from_config(&config).unwrap().is_none());
        config.email.provider = Some(EmailProviderConfig::Log(LogProviderConfig::default()));
        assert!(from_config(&config).is_err());
        config.email.provider = Some(EmailProviderConfig::Smtp(smtp(SmtpTls::None, "mail.example.com")));
        assert!(from_config(&config).is_err());
        config.email.provider = Some(EmailProviderConfig::Smtp(smtp(SmtpTls::None, "127.0.0.1")));
        assert!(from_config(&config).is_ok());
        config.email.provider = Some(EmailProviderConfig::Smtp(smtp(SmtpTls::Starttls, "mail.example.com")));
        assert_eq!(from_config(&config).unwrap().unwrap().name(), "smtp");
        let mut bad_from = smtp(SmtpTls::Implicit, "mail.example.com");
        bad_from.from = "not an address".into();
        config.email.provider = Some(EmailProviderConfig::Smtp(bad_from));
        assert!(from_config(&config).is_err());
    }
}
