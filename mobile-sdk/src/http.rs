//! HTTP to the Assent server: reqwest over rustls (no OpenSSL), certificate checks always on,
//! `https` required except for loopback hosts, no redirects (a redirect would change the path a
//! proof is bound to), and problem+json error bodies decoded into [`Error::Status`].

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};

use crate::error::{AssentError, Error, Problem, Result};
use crate::model::ClientConfig;

/// Media type of the enrollment body (a compact JWS).
pub(crate) const APPLICATION_JOSE: &str = "application/jose";
/// Media type of JSON bodies.
pub(crate) const APPLICATION_JSON: &str = "application/json";

/// Largest response body read, in bytes; device responses are a few KiB.
const MAX_BODY: usize = 1024 * 1024;

/// Validates a server base URL: `https` with a host, or `http` to `localhost`, `127.0.0.1` or
/// `[::1]` only (development and tests). No credentials, query or fragment. Returned without a
/// trailing slash, so endpoint paths can be appended.
pub fn validate_server_url(text: &str) -> Result<Url> {
    let refuse = |reason| Error::ServerUrl { url: text.to_owned(), reason };
    let url = Url::parse(text.trim()).map_err(|_| refuse("not a URL"))?;
    let host = url.host_str().ok_or_else(|| refuse("no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => return Err(refuse("https is required except for localhost")),
        _ => return Err(refuse("scheme must be https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("credentials in the URL are not allowed"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("query and fragment are not allowed"));
    }
    let mut url = url;
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// The hosts plain `http` is allowed to: the loopback names this machine resolves locally.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>() == Ok(Ipv4Addr::LOCALHOST)
        || host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).and_then(|h| h.parse::<Ipv6Addr>().ok())
            == Some(Ipv6Addr::LOCALHOST)
}

/// `base` with `path` (starting with `/`) appended to its path.
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let full = format!("{}{path}", base.path().trim_end_matches('/'));
    url.set_path(&full);
    url
}

/// The request target a proof's `htu` binds: path, plus `?query` when there is one.
pub(crate) fn path_and_query(url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// The connection side of a [`ClientConfig`]: an HTTP client (its pool of connections, TLS roots
/// and timeouts) and the server URL override. Cloning it is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct Connection {
    pub(crate) http: reqwest::Client,
    pub(crate) server_url_override: Option<Url>,
}

impl Connection {
    /// Builds the connection `config` describes. Fails only on a bad `config`.
    pub fn new(config: &ClientConfig) -> Result<Self, AssentError> {
        let server_url_override = config.server_url_override.as_deref().map(validate_server_url).transpose()?;
        let timeout = Duration::from_secs(u64::from(config.request_timeout_seconds.max(1)));
        let http = build_client(timeout, &config.extra_root_certificates_pem)?;
        Ok(Connection { http, server_url_override })
    }
}

/// Builds the HTTP client: rustls with the Mozilla root set plus `extra_roots_pem`, TLS
/// certificate checks on (there is deliberately no switch to turn them off), no redirects.
fn build_client(timeout: Duration, extra_roots_pem: &[String]) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("assent-sdk/", env!("CARGO_PKG_VERSION")));
    for pem in extra_roots_pem {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| Error::InvalidInput(format!("extra root certificate: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(Error::Http)
}

/// A request body and its media type.
pub(crate) struct Body {
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// Sends one request and returns the status and body of a 2xx answer; any other status becomes
/// [`Error::Status`] with its problem+json body when it has one.
pub(crate) async fn send(
    client: &reqwest::Client,
    method: Method,
    url: Url,
    authorization: Option<String>,
    body: Option<Body>,
) -> Result<(u16, Vec<u8>)> {
    let mut request = client.request(method, url);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(body) = body {
        request = request.header(CONTENT_TYPE, body.content_type).body(body.bytes);
    }
    let mut response = request.send().await.map_err(Error::Http)?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Error::Http)? {
        if bytes.len() + chunk.len() > MAX_BODY {
            return Err(Error::UnexpectedResponse { status, reason: format!("body larger than {MAX_BODY} bytes") });
        }
        bytes.extend_from_slice(&chunk);
    }
    if response.status().is_success() {
        Ok((status, bytes))
    } else {
        // Any JSON body with problem members is read, whatever its declared type.
        let problem = serde_json::from_slice::<Problem>(&bytes).ok();
        Err(Error::Status { status, problem })
    }
}

/// Decodes a JSON success body.
pub(crate) fn json<T: serde::de::DeserializeOwned>(status: u16, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::UnexpectedResponse { status, reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_required_except_loopback() {
        for ok in [
            "https://assent.example.com",
            "https://assent.example.com:8443/base/",
            "http://localhost:8080",
            "http://LOCALHOST",
            "http://127.0.0.1:3000",
            "http://[::1]:3000",
            "https://10.0.0.5",
        ] {
            assert!(validate_server_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://assent.example.com",
            "http://10.0.0.5",
            "http://127.0.0.2",
            "http://192.168.1.1:8080",
            "http://localhost.example.com",
            "http://[::2]",
            "ftp://localhost",
            "https://user:pw@assent.example.com",
            "https://assent.example.com/?x=1",
            "https://assent.example.com/#x",
            "assent.example.com",
            "",
        ] {
            assert!(matches!(validate_server_url(bad), Err(Error::ServerUrl { .. })), "{bad}");
        }
    }

    #[test]
    fn endpoints_keep_a_base_path() {
        let base = validate_server_url("https://a.example/base/").unwrap();
        let url = endpoint(&base, "/v1/device/challenges");
        assert_eq!(url.as_str(), "https://a.example/base/v1/device/challenges");
        assert_eq!(path_and_query(&url), "/base/v1/device/challenges");
        let root = validate_server_url("http://127.0.0.1:9").unwrap();
        let url = endpoint(&root, "/v1/device");
        assert_eq!(url.as_str(), "http://127.0.0.1:9/v1/device");
        assert_eq!(path_and_query(&url), "/v1/device");
    }
}
