//! Start-up and shutdown: open the database, apply migrations, issue the bootstrap key,
//! serve until SIGTERM or SIGINT.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::api_keys;
use crate::audit::Actor;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fallback::Fallback;
use crate::http::{self, AppState};
use crate::keys::ServerKey;
use crate::store::{Store, settings};

/// Name of the file, in the data directory, that receives the first API key.
pub const BOOTSTRAP_KEY_FILE: &str = "admin-api-key";

/// Opens the database named by the configuration and brings its schema up to date.
pub async fn open_store(config: &Config) -> Result<Store> {
    create_private_dir(&config.data_dir)?;
    let store = Store::connect(&config.database_url(), config.max_db_connections).await?;
    store.migrate().await?;
    Ok(store)
}

/// Creates the data directory readable by its owner only (it holds the database and keys).
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::internal(format!("creating data directory {}: {e}", dir.display())))
}

/// Builds the application state: database ready, signing key loaded, bootstrap key issued.
pub async fn prepare(config: Config, clock: Arc<dyn Clock>) -> Result<AppState> {
    crate::webhooks::validate_endpoints(&config.webhooks, config.mode)?;
    create_private_dir(&config.data_dir)?;
    let fallback = Fallback::from_config(&config)?;
    let store = open_store(&config).await?;
    let server_key = ServerKey::load_or_create(&config)?;
    check_server_key(&store, &server_key).await?;
    fallback.pepper.check_shared(&store).await?;
    if let Some(path) = issue_bootstrap_key(&store, &config.data_dir, clock.now()).await? {
        eprintln!("assent: created the first API key and wrote it to {}", path.display());
    }
    let push = crate::push::PushClients::from_config(&config.push, config.mode, clock.clone())?;
    let passkeys = crate::passkeys::Passkeys::from_config(&config)?;
    let demo = if config.demo_enabled() { Some(crate::demo::DemoKey::load_or_create(&store).await?) } else { None };
    Ok(AppState::new(config, store, clock, server_key, push, fallback, passkeys, demo))
}

/// Every replica on one database must sign with the same key, or phones that pinned it
/// would refuse challenges signed by another replica. The first start records the key id.
async fn check_server_key(store: &Store, key: &ServerKey) -> Result<()> {
    let mut tx = store.begin().await?;
    settings::insert_once(&mut tx, "server_key_kid", key.kid()).await?;
    let recorded = settings::get(&mut tx, "server_key_kid").await?;
    tx.commit().await?;
    match recorded {
        Some(kid) if kid != key.kid() => Err(Error::internal(format!(
            "this server's signing key (kid {}) is not the one this database's phones pinned (kid {kid}); \
             replicas sharing a database must share server_key_file",
            key.kid()
        ))),
        _ => Ok(()),
    }
}

/// On the very first start, creates an API key and writes it to `<data dir>/admin-api-key`
/// (mode 0600). The key is committed only once the file is written, and only once per
/// database, even when several replicas start together.
pub async fn issue_bootstrap_key(store: &Store, data_dir: &Path, now: time::OffsetDateTime) -> Result<Option<PathBuf>> {
    let mut tx = store.begin().await?;
    if !settings::insert_once(&mut tx, "bootstrap_key_issued", &now.unix_timestamp().to_string()).await? {
        return Ok(None);
    }
    let key = api_keys::create_in(&mut tx, "admin", now, &Actor::System).await?;
    let path = data_dir.join(BOOTSTRAP_KEY_FILE);
    write_secret_file(&path, &key.token).map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))?;
    tx.commit().await?;
    Ok(Some(path))
}

/// Writes a secret to a file only its owner can read (mode 0600).
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // A file that existed before keeps its old mode through open(); tighten it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}

/// Serves HTTP on `listener` until `shutdown` completes, then drains in-flight requests.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = state.store.clone();
    let workers = crate::workers::Workers::spawn(&state);
    serve_http(listener, http::router(state), shutdown).await;
    workers.shutdown().await;
    store.close().await;
    Ok(())
}

/// A connection is closed when no complete request head arrives for this long: an idle
/// keep-alive connection, or a client sending its headers too slowly. Longer than the 90 s
/// idle pool timeout of reqwest and hyper clients, so those close their idle connections first.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP/1 accept loop: one task per connection; once `shutdown` completes, stops
/// accepting, lets every connection finish the request it is serving, and returns when all
/// have closed (what `axum::serve` with graceful shutdown does).
///
/// Hyper is driven directly rather than through `axum::serve`, whose connections go through
/// hyper-util's HTTP/1-or-2 detection: it reads the first 24 bytes ahead and hands them back
/// on hyper's first read, which makes hyper grow every connection's read buffer from 8 to
/// 16 KiB, kept for the connection's life. The response future is boxed for the same reason:
/// hyper keeps a slot of its size for every open connection, also between requests.
async fn serve_http(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(IDLE_TIMEOUT);
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    // Every connection task holds a receiver; `closed()` completes once all have ended.
    let (all_closed, open) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let router = router.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            Box::pin(router.clone().oneshot(request.map(Body::new)))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let (stop, open) = (stop.clone(), open.clone());
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    all_closed.closed().await;
}

/// After a failed `accept`: a connection that failed before we took it is simply skipped;
/// anything else (above all, out of file descriptors) is logged and retried after a second.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Runs `assent serve`: prepares, binds, announces the address, serves until a signal.
pub async fn run(mut config: Config) -> Result<()> {
    let listen = config.listen;
    let listener = TcpListener::bind(listen).await.map_err(|e| Error::internal(format!("binding {listen}: {e}")))?;
    let local = listener.local_addr().map_err(Error::internal)?;
    // Without a configured public URL, phones are sent to the address actually bound
    // (which matters with `--listen 127.0.0.1:0`).
    config.public_url.get_or_insert_with(|| format!("http://{local}"));
    let state = prepare(config, Arc::new(SystemClock)).await?;
    tracing::info!(address = %local, backend = ?state.store.backend(), "assent listening");
    eprintln!("assent: listening on http://{local}");
    serve(state, listener, shutdown_signal()).await
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
