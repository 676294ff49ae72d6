//! The enrollment URI shown as a QR code:
//! `assent://enroll?server=<url>&token=<token>&kid=<server kid>&user=<display name>`.
//!
//! The QR is shown in an already-authenticated web session, so it is the out-of-band channel
//! through which the phone learns (and pins) the server key's thumbprint `kid`.

use std::fmt;
use std::str::FromStr;

use crate::b64;
use crate::error::{Error, Result};

/// Scheme and host every enrollment URI starts with.
pub const ENROLL_URI_PREFIX: &str = "assent://enroll";

/// A parsed enrollment URI.
///
/// [`fmt::Display`] (hence `to_string()`) writes the canonical form: parameters in the order
/// `server`, `token`, `kid`, `user`, every byte outside RFC 3986's unreserved set
/// percent-encoded (UTF-8, upper-case hex; space as `%20`).
///
/// [`EnrollUri::parse`] accepts the scheme and host in any case, parameters in any order,
/// unknown parameters (ignored), raw reserved characters other than `&` and `#` inside values,
/// and `+` as a space (form encoding). It refuses a missing, empty or repeated parameter, a
/// `server` that is not an `http(s)://` URL, and a `kid` that is not a base64url SHA-256
/// thumbprint.
///
/// `Debug` redacts the enrollment token, which is a bearer secret until used.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollUri {
    /// Base URL of the Assent server (`https://assent.example.com`).
    pub server: String,
    /// The single-use enrollment token.
    pub token: String,
    /// RFC 7638 thumbprint of the server signing key the phone must pin.
    pub kid: String,
    /// Display name of the user being enrolled.
    pub user: String,
}

impl fmt::Debug for EnrollUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollUri")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("kid", &self.kid)
            .field("user", &self.user)
            .finish()
    }
}

impl fmt::Display for EnrollUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENROLL_URI_PREFIX}?server={}&token={}&kid={}&user={}",
            Encoded(&self.server),
            Encoded(&self.token),
            Encoded(&self.kid),
            Encoded(&self.user),
        )
    }
}

impl FromStr for EnrollUri {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl EnrollUri {
    /// Parses an `assent://enroll?...` URI (see the type's documentation for the rules).
    pub fn parse(uri: &str) -> Result<Self> {
        let prefix = uri
            .get(..ENROLL_URI_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ENROLL_URI_PREFIX))
            .ok_or_else(|| invalid("not an assent://enroll URI"))?;
        let query = uri
            .get(prefix.len()..)
            .and_then(|rest| rest.strip_prefix('?'))
            .ok_or_else(|| invalid("expected `?` right after assent://enroll"))?;
        if query.contains('#') {
            return Err(invalid("fragment not allowed"));
        }
        let (mut server, mut token, mut kid, mut user) = (None, None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| invalid("parameter without `=`"))?;
            let slot = match percent_decode(name)?.as_str() {
                "server" => &mut server,
                "token" => &mut token,
                "kid" => &mut kid,
                "user" => &mut user,
                _ => continue,
            };
            if slot.is_some() {
                return Err(Error::InvalidUri(format!("repeated parameter `{name}`")));
            }
            let value = percent_decode(value)?;
            if value.is_empty() {
                return Err(Error::InvalidUri(format!("empty parameter `{name}`")));
            }
            *slot = Some(value);
        }
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| Error::InvalidUri(format!("missing parameter `{name}`")))
        };
        let parsed = EnrollUri {
            server: required(server, "server")?,
            token: required(token, "token")?,
            kid: required(kid, "kid")?,
            user: required(user, "user")?,
        };
        let lower = parsed.server.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(invalid("`server` must be an http(s) URL"));
        }
        if b64::decode(&parsed.kid).map(|k| k.len()) != Ok(32) {
            return Err(invalid("`kid` must be a base64url SHA-256 thumbprint"));
        }
        Ok(parsed)
    }
}

fn invalid(reason: &str) -> Error {
    Error::InvalidUri(reason.to_owned())
}

/// Writes a value percent-encoded: everything but RFC 3986 unreserved characters.
struct Encoded<'a>(&'a str);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0.as_bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "%{byte:02X}")?;
            }
        }
        Ok(())
    }
}

fn percent_decode(text: &str) -> Result<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(invalid("bad percent-escape")),
                }
            }
            b'+' => out.push(b' '),
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| invalid("percent-escapes are not UTF-8"))
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID: &str = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

    fn sample(user: &str) -> EnrollUri {
        EnrollUri {
            server: "https://assent.example.com:8443/base".into(),
            token: "Zm9vYmFyLWJhei1xdXV4LTEyMzQ1Njc4OTAxMjM0NTY".into(),
            kid: KID.into(),
            user: user.into(),
        }
    }

    #[test]
    fn round_trips_awkward_display_names() {
        for user in [
            "Alice",
            "Alice Smith",
            "Zoë Ångström-Łukasiewicz 山田太郎 🙂",
            "Tom & Jerry",
            "a=b&c=d#e?f%20g+h/i",
            "  leading and trailing  ",
            "100%",
        ] {
            let uri = sample(user);
            let text = uri.to_string();
            assert!(text.starts_with("assent://enroll?server=https%3A%2F%2Fassent.example.com"));
            assert!(!text[ENROLL_URI_PREFIX.len() + 1..].contains([' ', '#', '+']), "{text}");
            assert_eq!(text.matches('&').count(), 3, "{text}");
            assert_eq!(EnrollUri::parse(&text).unwrap(), uri, "{text}");
            assert_eq!(text.parse::<EnrollUri>().unwrap(), uri);
        }
    }

    #[test]
    fn canonical_form() {
        assert_eq!(
            sample("Tom & Jerry").to_string(),
            format!(
                "assent://enroll?server=https%3A%2F%2Fassent.example.com%3A8443%2Fbase\
                 &token=Zm9vYmFyLWJhei1xdXV4LTEyMzQ1Njc4OTAxMjM0NTY&kid={KID}&user=Tom%20%26%20Jerry"
            )
        );
    }

    #[test]
    fn lenient_where_harmless() {
        let text =
            format!("ASSENT://Enroll?user=Tom+%26+Jerry&extra=1&kid={KID}&&server=https://a.example/x?y&token=t");
        let uri = EnrollUri::parse(&text).unwrap();
        assert_eq!(uri.user, "Tom & Jerry");
        assert_eq!(uri.server, "https://a.example/x?y");
        assert_eq!(uri.token, "t");
    }

    #[test]
    fn debug_redacts_token() {
        let debug = format!("{:?}", sample("Alice"));
        assert!(!debug.contains("Zm9vYmFy"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn rejects() {
        let good = sample("Alice").to_string();
        let query = &good[ENROLL_URI_PREFIX.len()..];
        let cases: Vec<(String, &str)> = vec![
            (format!("https://enroll{query}"), "not an assent://enroll URI"),
            (format!("assent://enrol{query}"), "not an assent://enroll URI"),
            (format!("assent://enrollx{query}"), "expected `?` right after assent://enroll"),
            (format!("assent://enroll/{query}"), "expected `?` right after assent://enroll"),
            ("assent://enroll".into(), "expected `?` right after assent://enroll"),
            ("assent".into(), "not an assent://enroll URI"),
            (format!("{good}#frag"), "fragment not allowed"),
            (good.replace("&user=Alice", ""), "missing parameter `user`"),
            (good.replace("token=", "tok="), "missing parameter `token`"),
            (good.replace("&kid=", "&kid"), "parameter without `=`"),
            (good.replace("user=Alice", "user="), "empty parameter `user`"),
            (format!("{good}&user=Mallory"), "repeated parameter `user`"),
            (good.replace("Alice", "Al%2"), "bad percent-escape"),
            (good.replace("Alice", "Al%zzce"), "bad percent-escape"),
            (good.replace("Alice", "%FF%FE"), "percent-escapes are not UTF-8"),
            (good.replace("https%3A%2F%2F", "ftp%3A%2F%2F"), "`server` must be an http(s) URL"),
            (good.replace(KID, "not-a-thumbprint"), "`kid` must be a base64url SHA-256 thumbprint"),
        ];
        for (text, reason) in cases {
            assert_eq!(EnrollUri::parse(&text), Err(Error::InvalidUri(reason.into())), "{text}");
        }
        // Multi-byte input shorter than, or split across, the prefix must not panic.
        assert!(matches!(EnrollUri::parse("é"), Err(Error::InvalidUri(_))));
        assert!(matches!(EnrollUri::parse("assent://enroléx"), Err(Error::InvalidUri(_))));
    }
}
