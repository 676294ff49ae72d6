//! One-time codes: six digits from the OS CSPRNG, kept only as HMAC-SHA256(pepper,
//! challenge id || code) and compared in constant time; plus the masks and message texts
//! that go with them (DESIGN section 5).

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use crate::config::{Config, Secret};
use crate::error::{Error, Result};
use crate::store::{Store, settings};

/// How long a code lives.
pub const CODE_TTL_SECS: i64 = 300;
/// Wrong codes before the challenge fails.
pub const MAX_FAILED_ATTEMPTS: i64 = 5;
/// Resends allowed per challenge.
pub const MAX_RESENDS: i64 = 3;
/// Time between two sends of one challenge.
pub const RESEND_COOLDOWN_SECS: i64 = 30;
/// File name of the generated pepper in the data directory.
pub const PEPPER_FILE: &str = "otp-pepper";

/// A fresh six-digit code, uniform over 000000-999999.
pub fn new_code() -> String {
    // The largest multiple of 10^6 that fits in a u32; rejecting above it keeps every code
    // equally likely.
    const LIMIT: u32 = u32::MAX - u32::MAX % 1_000_000;
    loop {
        let v = OsRng.next_u32();
        if v < LIMIT {
            return format!("{:06}", v % 1_000_000);
        }
    }
}

/// What a user typed, reduced to the code: spaces and dashes dropped. `None` when it cannot
/// be a code at all (it still counts as a wrong attempt).
pub fn normalize_code(input: &str) -> Option<String> {
    let code: String = input.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The server-wide HMAC key for codes.
#[derive(Clone)]
pub struct Pepper(Secret);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(***)")
    }
}

impl Pepper {
    /// Wraps a pepper.
    pub fn new(secret: Secret) -> Result<Self> {
        if secret.expose().len() < 32 {
            return Err(Error::internal("fallback.pepper must be at least 32 characters"));
        }
        Ok(Pepper(secret))
    }

    /// The configured pepper, or the data directory's, created on first start.
    pub fn load_or_create(config: &Config) -> Result<Self> {
        if let Some(pepper) = &config.fallback.pepper {
            return Self::new(pepper.clone());
        }
        let path = config.data_dir.join(PEPPER_FILE);
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
            return Self::new(Secret::new(text.trim()));
        }
        let value = hex::encode(crate::ids::random_bytes::<32>());
        crate::app::write_secret_file(&path, &value)
            .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "created the OTP pepper");
        Self::new(Secret::new(value))
    }

    fn mac(&self) -> Result<Hmac<Sha256>> {
        Hmac::<Sha256>::new_from_slice(self.0.expose().as_bytes()).map_err(Error::internal)
    }

    /// hex HMAC-SHA256(pepper, challenge id || code).
    pub fn hash(&self, challenge_id: &str, code: &str) -> Result<String> {
        let mut mac = self.mac()?;
        mac.update(challenge_id.as_bytes());
        mac.update(code.as_bytes());
        Ok(hex::encode(mac.finalize().into_bytes()))
    }

    /// Whether `code` is the one hashed into `stored`, compared in constant time.
    pub fn verify(&self, challenge_id: &str, code: &str, stored: &str) -> Result<bool> {
        let Ok(expected) = hex::decode(stored) else {
            return Ok(false);
        };
        let mut mac = self.mac()?;
        mac.update(challenge_id.as_bytes());
        mac.update(code.as_bytes());
        Ok(mac.verify_slice(&expected).is_ok())
    }

    /// Codes written by one replica must verify on every other: the first start records a
    /// fingerprint of the pepper (an HMAC of a fixed label, which reveals nothing of it), and
    /// a replica with another pepper refuses to start.
    pub async fn check_shared(&self, store: &Store) -> Result<()> {
        let mut mac = self.mac()?;
        mac.update(b"assent otp pepper fingerprint");
        let fingerprint = hex::encode(mac.finalize().into_bytes());
        let mut tx = store.begin().await?;
        settings::insert_once(&mut tx, "otp_pepper_fingerprint", &fingerprint).await?;
        let recorded = settings::get(&mut tx, "otp_pepper_fingerprint").await?;
        tx.commit().await?;
        match recorded {
            Some(f) if f != fingerprint => Err(Error::internal(
                "this server's OTP pepper is not the one this database's codes were issued with; \
                 replicas sharing a database must share fallback.pepper",
            )),
            _ => Ok(()),
        }
    }
}

/// `+1 *** *** 4567`: the country calling code and the last four digits, in a fixed shape
/// that says nothing of the number's length.
pub fn mask_phone(e164: &str) -> String {
    match phonenumber::parse(None, e164) {
        Ok(number) => {
            let national = number.national().value().to_string();
            let tail = &national[national.len().saturating_sub(4)..];
            format!("+{} *** *** {tail}", number.code().value())
        }
        Err(_) => "***".to_owned(),
    }
}

/// `j***@example.com`: the first character of the local part and the domain.
pub fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Fills `{code}`, `{app_name}` and `{minutes}` into a message template.
pub fn render(template: &str, app_name: &str, code: &str) -> String {
    template
        .replace("{app_name}", app_name)
        .replace("{minutes}", &(CODE_TTL_SECS / 60).to_string())
        .replace("{code}", code)
}

/// The SMS text: the template, then, with a WebOTP domain, the domain-bound line
/// `@example.com #123456` that browsers (WebOTP) and iOS read, last as they require.
pub fn sms_text(config: &Config, code: &str) -> String {
    let text = render(&config.sms.template, &config.app_name, code);
    match &config.sms.webotp_domain {
        Some(domain) => format!("{}\n\n@{domain} #{code}", text.trim_end()),
        None => text,
    }
}

/// Checks the message templates at start, so a typo fails then, not at the first sign-in.
pub fn validate_templates(config: &Config) -> Result<()> {
    for (key, template) in [("sms.template", &config.sms.template), ("email.template", &config.email.template)] {
        if !template.contains("{code}") {
            return Err(Error::internal(format!("{key} must contain {{code}}")));
        }
    }
    if config.email.subject.contains('\n') || config.email.subject.contains('\r') {
        return Err(Error::internal("email.subject must be one line"));
    }
    if let Some(domain) = &config.sms.webotp_domain {
        let ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(Error::internal(format!(
                "sms.webotp_domain {domain:?} must be a host name like example.com (no scheme, no port)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let code = new_code();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
            seen.insert(code);
        }
        assert!(seen.len() > 1990, "codes repeat too often: {}", seen.len());
    }

    #[test]
    fn typed_codes_are_normalized() {
        assert_eq!(normalize_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalize_code("123-456").as_deref(), Some("123456"));
        for bad in ["", "12345", "1234567", "12a456", "١٢٣٤٥٦"] {
            assert_eq!(normalize_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_bind_the_challenge_and_verify() {
        let pepper = Pepper::new(Secret::new("p".repeat(32))).unwrap();
        let h = pepper.hash("chl_1", "123456").unwrap();
        assert_eq!(h.len(), 64);
        assert!(pepper.verify("chl_1", "123456", &h).unwrap());
        assert!(!pepper.verify("chl_2", "123456", &h).unwrap());
        assert!(!pepper.verify("chl_1", "123457", &h).unwrap());
        assert!(!pepper.verify("chl_1", "123456", "zz").unwrap());
        let other = Pepper::new(Secret::new("q".repeat(32))).unwrap();
        assert!(!other.verify("chl_1", "123456", &h).unwrap());
        assert!(Pepper::new(Secret::new("short")).is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(mask_phone("+14155554567"), "+1 *** *** 4567");
        assert_eq!(mask_phone("+442079460958"), "+44 *** *** 0958");
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        assert_eq!(mask_email("ünï@example.com"), "ü***@example.com");
    }

    #[test]
    fn sms_text_ends_with_the_domain_bound_line() {
        let mut config = Config { app_name: "Acme".into(), ..Config::default() };
        assert_eq!(sms_text(&config, "123456"), "Your Acme code is 123456. Don't share it with anyone.");
        config.sms.webotp_domain = Some("example.com".into());
        let text = sms_text(&config, "123456");
        assert!(text.starts_with("Your Acme code is 123456."));
        assert_eq!(text.lines().last(), Some("@example.com #123456"));
        validate_templates(&config).unwrap();
        config.sms.webotp_domain = Some("https://example.com".into());
        assert!(validate_templates(&config).is_err());
        config.sms.webotp_domain = None;
        config.email.template = "no code here".into();
        assert!(validate_templates(&config).is_err());
    }
}
