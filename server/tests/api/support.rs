//! A fresh database and application per test, on both backends, driven through the router.
#![allow(dead_code)] // Each test module uses a different part of the kit.

use std::sync::Arc;

use assent_server::app;
use assent_server::clock::OffsetClock;
use assent_server::config::Config;
use assent_server::http::{AppState, router};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub use assent_tests::PgDatabase;

/// A database for one test, with its config.
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
    pub config: Config,
}

impl TestDb {
    pub async fn new(db: Db) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgDatabase::create().await),
        };
        let config = Config {
            data_dir: dir.path().to_owned(),
            database_url: pg.as_ref().map(|p| p.url.clone()),
            ..Config::default()
        };
        TestDb { dir, pg, config }
    }
}

/// An application on a fresh database, with a settable clock and the bootstrap key.
pub struct TestApp {
    pub db: TestDb,
    pub state: AppState,
    pub router: Router,
    pub clock: OffsetClock,
    pub admin_key: String,
    /// The same router served over TCP on 127.0.0.1, with the background workers running.
    pub url: String,
}

impl TestApp {
    pub async fn new(db: Db) -> Self {
        Self::with_config(db, |_| {}).await
    }

    pub async fn with_config(db: Db, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut db = TestDb::new(db).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        db.config.public_url = Some(url.clone());
        tweak(&mut db.config);
        let clock = OffsetClock::new();
        let state = app::prepare(db.config.clone(), Arc::new(clock.clone())).await.unwrap();
        let admin_key =
            std::fs::read_to_string(db.config.data_dir.join(app::BOOTSTRAP_KEY_FILE)).unwrap().trim().to_owned();
        let router = router(state.clone());
        let served = router.clone();
        tokio::spawn(async move { axum::serve(listener, served).await });
        std::mem::forget(assent_server::workers::Workers::spawn(&state)); // they end with the test's runtime
        TestApp { db, state, router, clock, admin_key, url }
    }

    /// An RP client over TCP with the admin key.
    pub fn rp(&self) -> assent_tests::phone::Rp {
        assent_tests::phone::Rp::new(&self.url, &self.admin_key)
    }

    /// Moves the server's clock.
    pub fn advance(&self, secs: i64) {
        self.clock.advance(time::Duration::seconds(secs));
    }

    /// A request with the admin key.
    pub fn req(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            app: self,
            method,
            path: path.to_owned(),
            auth: Some(format!("Bearer {}", self.admin_key)),
            body: None,
            headers: vec![],
        }
    }

    /// A request with no credentials.
    pub fn anon(&self, method: Method, path: &str) -> Call<'_> {
        Call { app: self, method, path: path.to_owned(), auth: None, body: None, headers: vec![] }
    }
}

pub struct Call<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    auth: Option<String>,
    body: Option<(String, Vec<u8>)>,
    headers: Vec<(String, String)>,
}

impl Call<'_> {
    pub fn json(mut self, v: Value) -> Self {
        self.body = Some(("application/json".into(), serde_json::to_vec(&v).unwrap()));
        self
    }
    pub fn raw(mut self, content_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some((content_type.into(), bytes.into()));
        self
    }
    pub fn auth(mut self, value: &str) -> Self {
        self.auth = Some(value.to_owned());
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub async fn send(self) -> Resp {
        let mut builder = Request::builder().method(self.method).uri(&self.path);
        if let Some(auth) = &self.auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = match self.body {
            Some((ct, bytes)) => builder.header(header::CONTENT_TYPE, ct).body(Body::from(bytes)).unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        let response = self.app.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Resp { status, headers, body }
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status.as_u16());
        assert!(self.body["title"].is_string() && self.body["detail"].is_string() && self.body["type"].is_string());
    }

    #[track_caller]
    pub fn assert_status(&self, status: StatusCode) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        &self.body
    }
}

/// Runs an async test body against both SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Db::Postgres).await
            }
        }
    )*};
}
