//! Fakes of the services Assent sends codes through, on 127.0.0.1: Twilio and Vonage
//! speak their documented wire formats and keep every request for the test to assert on; the
//! SMTP sink is a real SMTP server (aiosmtpd) writing each message to a directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::{Form, Json, Router};
use serde_json::json;

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// The form fields, in order.
    pub form: Vec<(String, String)>,
}

impl Received {
    /// The value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The form's field names, sorted.
    pub fn field_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.form.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names
    }
}

/// How a fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accepts the message.
    Accept,
    /// Fails the way the provider documents (Twilio: 500 with an error body; Vonage: status "2").
    Fail,
    /// Never answers (the sender must time out).
    Hang,
}

#[derive(Debug)]
struct Shared {
    received: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
}

/// A fake SMS provider server.
#[derive(Debug, Clone)]
pub struct FakeSms {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:<port>`: the provider's base URL.
    pub url: String,
}

impl FakeSms {
    async fn serve(router: Router<Arc<Shared>>) -> FakeSms {
        let shared = Arc::new(Shared { received: Mutex::default(), behaviour: Mutex::new(Behaviour::Accept) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = router.with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeSms { shared, url }
    }

    /// Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.
    pub async fn twilio() -> FakeSms {
        Self::serve(Router::new().route("/2010-04-01/Accounts/{sid}/Messages.json", axum::routing::post(twilio_send)))
            .await
    }

    /// Vonage's SMS API: `POST /sms/json`.
    pub async fn vonage() -> FakeSms {
        Self::serve(Router::new().route("/sms/json", axum::routing::post(vonage_send))).await
    }

    /// Changes how the fake answers from now on.
    pub fn behave(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The text of the latest message.
    pub fn last_text(&self) -> String {
        let last = self.received().pop().expect("no message was sent");
        last.field("Body").or(last.field("text")).unwrap().to_owned()
    }

    /// The code in the latest message.
    pub fn last_code(&self) -> String {
        code_in(&self.last_text())
    }
}

fn record(shared: &Shared, path: String, headers: HeaderMap, form: Vec<(String, String)>) -> Behaviour {
    shared.received.lock().unwrap().push(Received { path, headers, form });
    *shared.behaviour.lock().unwrap()
}

async fn twilio_send(
    State(shared): State<Arc<Shared>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> axum::response::Response {
    let to = form.iter().find(|(k, _)| k == "To").map(|(_, v)| v.clone()).unwrap_or_default();
    let from = form.iter().find(|(k, _)| k == "From").map(|(_, v)| v.clone());
    let body = form.iter().find(|(k, _)| k == "Body").map(|(_, v)| v.clone()).unwrap_or_default();
    let n = shared.received.lock().unwrap().len();
    match record(&shared, format!("/2010-04-01/Accounts/{sid}/Messages.json"), headers, form) {
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Behaviour::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "code": 20500, "message": "Internal Server Error",
                "more_info": "https://www.twilio.com/docs/errors/20500", "status": 500
            })),
        )
            .into_response(),
        Behaviour::Accept => {
            let message_sid = format!("SM{:032x}", n + 1);
            // Twilio's documented Message resource, as created (201).
            (
                StatusCode::CREATED,
                Json(json!({
                    "account_sid": sid, "api_version": "2010-04-01", "body": body,
                    "date_created": "Thu, 24 Aug 2023 05:01:45 +0000", "date_sent": null,
                    "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000", "direction": "outbound-api",
                    "error_code": null, "error_message": null, "from": from, "messaging_service_sid": null,
                    "num_media": "0", "num_segments": "1", "price": null, "price_unit": "USD",
                    "sid": message_sid, "status": "queued",
                    "subresource_uris": {"media": format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}/Media.json")},
                    "to": to, "uri": format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json"),
                })),
            )
                .into_response()
        }
    }
}

async fn vonage_send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> axum::response::Response {
    let to = form.iter().find(|(k, _)| k == "to").map(|(_, v)| v.clone()).unwrap_or_default();
    let n = shared.received.lock().unwrap().len();
    match record(&shared, "/sms/json".to_owned(), headers, form) {
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        // Vonage answers 200 and reports the failure per message.
        Behaviour::Fail => Json(json!({
            "message-count": "1",
            "messages": [{"to": to, "status": "2", "error-text": "Missing to param"}]
        }))
        .into_response(),
        Behaviour::Accept => Json(json!({
            "message-count": "1",
            "messages": [{
                "to": to, "message-id": format!("0A00000{:09X}", n + 1), "status": "0",
                "remaining-balance": "3.14159265", "message-price": "0.03330000", "network": "12345"
            }]
        }))
        .into_response(),
    }
}

/// The first run of exactly six digits in `text`.
pub fn code_in(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return text[start..i].to_owned();
            }
        } else {
            i += 1;
        }
    }
    panic!("no six-digit code in {text:?}")
}

/// A real SMTP server (aiosmtpd, see `tests/python/mail_sink.py`) on 127.0.0.1 that writes
/// every message it receives to a directory.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl SmtpSink {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> SmtpSink {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "mail_sink.MailDir"])
            .arg(dir.path())
            .env("PYTHONPATH", &python)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with aiosmtpd (pip install -r tests/requirements.txt)");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("aiosmtpd exited with {status}: is it installed? pip install -r tests/requirements.txt");
            }
            assert!(Instant::now() < deadline, "aiosmtpd did not start listening on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        SmtpSink { child, dir, port }
    }

    /// Every message received so far, oldest first, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort();
        names.iter().map(|n| std::fs::read_to_string(self.dir.path().join(n)).unwrap()).collect()
    }

    /// Waits (up to 10 s) until `count` messages have arrived and returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(Instant::now() < deadline, "expected {count} messages, got {}", messages.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
