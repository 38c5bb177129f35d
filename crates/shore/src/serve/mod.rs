//! `vessel-sync shore serve`: the HTTPS API (hyper over tokio-rustls).
//!
//! - `POST /v1/sync` (`Authorization: Bearer TOKEN`, `X-Vessel-Id`): the body is a progress
//!   envelope, or empty for a poll. The batch is stored durably before the reply; the reply
//!   carries the acknowledged sequence and the bundles waiting for the vessel after its
//!   `X-Bundle-Cursor`, so one exchange does the whole sync cycle. When bundles are offered the
//!   reply's `poll_in` asks the vessel to come back within [`POLL_IN_BUSY`] seconds.
//! - `GET /v1/bundles/ID`: a queued bundle, with `Range: bytes=N-[M]` (206) for resumption; one
//!   response carries at most [`MAX_CHUNK`] bytes, and `Content-Range` says which.
//! - `GET /v1/health`: `ok`.
//! - `/dashboard...`: the fleet dashboard behind an operator login ([`crate::dashboard`]).
//!
//! Errors are JSON `{"error": CODE, "message": ..., "acked_seq": N}` with 401 (unknown vessel or
//! token), 403 (revoked), 409 (replayed batch), 413 (too large), 422 (refused batch), 429 (an
//! upload from this vessel is under way), 503 (busy: retry after `Retry-After`), 500.
//!
//! What one client may hold is bounded ([`conn`]: connections in all and per address, TLS,
//! header and idle deadlines, accept back-off; [`upload`]: bodies streamed to disk, one upload
//! per vessel, a byte budget); at most [`INTAKE_SLOTS`] batches are verified and decoded at
//! once, and the store's lock is held only for its calls.

pub mod conn;
mod download;
pub mod upload;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::store::{ShoreStore, Stored, Vessel};
use super::{ShoreConfig, intake, token_hash};
use base::clock::Clock;

pub use download::MAX_CHUNK;

/// Seconds within which a vessel that was just offered bundles is asked to come back (the
/// reply's `poll_in`), so their outcomes reach shore without waiting for its idle cadence.
pub const POLL_IN_BUSY: i64 = 300;

/// Batches verified and decoded at once (each may hold up to its decode budget in memory).
pub const INTAKE_SLOTS: usize = 2;

struct Shared {
    cfg: ShoreConfig,
    db: Mutex<ShoreStore>,
    clock: Arc<dyn Clock>,
    uploads: Arc<upload::Uploads>,
    intake_slots: Arc<tokio::sync::Semaphore>,
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, v: serde_json::Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: &str, acked: Option<u64>) -> Resp {
    let mut v = serde_json::json!({"error": code, "message": message});
    if let Some(a) = acked {
        v["acked_seq"] = a.into();
    }
    json(status, v)
}

/// The response of a blocking task, or a 500 if it panicked.
fn joined(out: Result<Resp, tokio::task::JoinError>) -> Resp {
    out.unwrap_or_else(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "local",
            &e.to_string(),
            None,
        )
    })
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Looks the vessel up (a blocking store call: PostgreSQL's client must not run on the async
/// threads).
async fn authenticate(shared: &Arc<Shared>, req: &Request<Incoming>) -> Result<Vessel, Box<Resp>> {
    let id = header(req, "x-vessel-id").unwrap_or("").to_string();
    let token = header(req, "authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || authenticate_blocking(&shared, &id, &token))
        .await
        .unwrap_or_else(|e| Err(Box::new(joined(Err(e)))))
}

fn authenticate_blocking(shared: &Shared, id: &str, token: &str) -> Result<Vessel, Box<Resp>> {
    let unauthorized = || {
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown vessel or wrong token: check [uplink] token_file against 'vessel-sync shore vessel add'",
            None,
        ))
    };
    let db = shared.db.lock().map_err(|_| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "local",
            "database lock poisoned",
            None,
        )
    })?;
    let v = db
        .vessel(id)
        .map_err(|e| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "local",
                &e.to_string(),
                None,
            )
        })?
        .ok_or_else(unauthorized)?;
    if token.is_empty() || token_hash(token) != v.token_sha256 {
        return Err(unauthorized());
    }
    if v.revoked_at.is_some() {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "revoked",
            "this vessel was revoked ashore",
            None,
        )));
    }
    Ok(v)
}

async fn handle(
    shared: Arc<Shared>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/v1/health" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    if path == "/dashboard" || path.starts_with("/dashboard/") {
        return Ok(dashboard(shared, peer, req, path).await);
    }
    let vessel = match authenticate(&shared, &req).await {
        Ok(v) => v,
        Err(r) => return Ok(*r),
    };
    if req.method() == Method::POST && path == "/v1/sync" {
        return Ok(sync(shared, vessel, req).await);
    }
    if req.method() == Method::GET {
        if let Some(id) = path.strip_prefix("/v1/bundles/") {
            let range = header(&req, "range").map(str::to_string);
            let id = id.parse::<i64>().unwrap_or(-1);
            let out = tokio::task::spawn_blocking(move || {
                download::bundle(&shared, &vessel, id, range.as_deref())
            })
            .await;
            return Ok(joined(out));
        }
    }
    Ok(error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
        None,
    ))
}

/// The fleet dashboard's requests (see [`crate::dashboard`]); 404 without `[dashboard]`.
async fn dashboard(
    shared: Arc<Shared>,
    peer: std::net::IpAddr,
    req: Request<Incoming>,
    path: String,
) -> Resp {
    if shared.cfg.dashboard.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no dashboard here: set [dashboard] password_file in shore.toml",
            None,
        );
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "dashboard requests are small",
                None,
            );
        }
    };
    let out = tokio::task::spawn_blocking(move || {
        let now = shared.clock.now();
        match shared.cfg.dashboard.as_ref() {
            Some(settings) => crate::dashboard::handle(
                &shared.cfg,
                settings,
                &shared.db,
                peer,
                &parts.method,
                &path,
                &parts.headers,
                &body,
                now,
            ),
            None => error(StatusCode::NOT_FOUND, "not_found", "no dashboard", None),
        }
    })
    .await;
    joined(out)
}

fn busy(code: &str, message: &str, retry_after: u64) -> Resp {
    let status = if code == "busy_vessel" {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = error(status, code, message, None);
    r.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from(retry_after),
    );
    r
}

async fn sync(shared: Arc<Shared>, vessel: Vessel, req: Request<Incoming>) -> Resp {
    let cursor: i64 = header(&req, "x-bundle-cursor")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let oldest: Option<i64> = header(&req, "x-oldest-unsent").and_then(|v| v.parse().ok());
    // An agent leaves both out when its outbox is empty (every byte is billed on its link).
    let depth: Option<i64> = header(&req, "x-outbox-depth").map_or(Some(0), |v| v.parse().ok());
    let max = shared.cfg.shore.max_batch_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("batches are limited to {max} bytes"),
            None,
        )
    };
    let announced: Option<u64> = header(&req, "content-length").and_then(|v| v.parse().ok());
    if announced.is_some_and(|n| n > max) {
        return too_large();
    }
    let chunked = header(&req, "transfer-encoding").is_some();
    let mut body_file = None;
    let mut _upload = None;
    if announced.unwrap_or(0) > 0 || chunked {
        let expected = announced.unwrap_or(max);
        _upload = match shared.uploads.begin(&vessel.id, expected) {
            Ok(u) => Some(u),
            Err(upload::Busy::Vessel) => {
                return busy(
                    "busy_vessel",
                    "an upload from this vessel is already under way; one at a time",
                    30,
                );
            }
            Err(upload::Busy::Budget) => {
                return busy(
                    "busy",
                    "the receiver is taking in as much as it allows at once; retry shortly",
                    30,
                );
            }
        };
        let internal = |m: String| error(StatusCode::INTERNAL_SERVER_ERROR, "local", &m, None);
        let tmp = match tempfile::NamedTempFile::new_in(shared.cfg.shore.state_dir.join("tmp")) {
            Ok(t) => t,
            Err(e) => return internal(e.to_string()),
        };
        let mut f = match tmp.reopen() {
            Ok(f) => f,
            Err(e) => return internal(e.to_string()),
        };
        match upload::receive(req.into_body(), max, expected, &mut f).await {
            Ok(0) => {}
            Ok(_) => body_file = Some(tmp),
            Err(upload::BodyError::TooLarge) => return too_large(),
            Err(upload::BodyError::TooSlow) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "too_slow",
                    "the batch did not arrive in time",
                    None,
                );
            }
            Err(upload::BodyError::Read(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "body",
                    &format!("reading the request body failed: {e}"),
                    None,
                );
            }
            Err(upload::BodyError::Local(e)) => return internal(e),
        }
    }
    // Verification and decoding take memory and CPU: a few at a time.
    let _slot = match shared.intake_slots.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => return busy("busy", "the receiver is stopping", 30),
    };
    let out = tokio::task::spawn_blocking(move || {
        let body = body_file.as_ref().map(|t| t.path());
        sync_steps(&shared, &vessel, body, cursor, oldest, depth)
            .unwrap_or_else(|m| error(StatusCode::INTERNAL_SERVER_ERROR, "local", &m, None))
    })
    .await;
    joined(out)
}

/// The sync exchange; the store's lock is taken for each store call only.
fn sync_steps(
    shared: &Shared,
    vessel: &Vessel,
    body: Option<&Path>,
    cursor: i64,
    oldest: Option<i64>,
    depth: Option<i64>,
) -> Result<Resp, String> {
    let now = shared.clock.now();
    let lock = || {
        shared
            .db
            .lock()
            .map_err(|_| "database lock poisoned".to_string())
    };
    lock()?
        .note_contact(&vessel.id, now, oldest, depth)
        .map_err(|e| e.to_string())?;
    let mut reply = serde_json::json!({});
    match body {
        // A poll: no `result` (it could only say `no_batch`).
        None => reply["acked_seq"] = vessel.acked_seq.into(),
        Some(path) => match intake(&shared.cfg, &shared.db, vessel, path, "https", now) {
            Ok(i) => {
                reply["acked_seq"] = i.acked_seq.into();
                reply["batch_seq"] = i.seq.into();
                match i.stored {
                    Stored::New { new, duplicate } => {
                        reply["result"] = "stored".into();
                        reply["new"] = new.into();
                        reply["duplicate"] = duplicate.into();
                    }
                    _ => reply["result"] = "duplicate".into(),
                }
            }
            Err(r) => {
                let acked = lock()
                    .ok()
                    .and_then(|db| db.vessel(&vessel.id).ok().flatten())
                    .map(|v| v.acked_seq);
                // The one place a refusal becomes HTTP.
                let status =
                    StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                return Ok(error(status, r.code(), &r.message(), acked));
            }
        },
    }
    let list = {
        let db = lock()?;
        db.note_downloaded(&vessel.id, cursor, now)
            .and_then(|()| db.bundles_for(&vessel.id, cursor))
            .map_err(|e| e.to_string())?
    };
    let list = list
        .iter()
        .map(|q| crate::content::offer(&shared.cfg, &shared.db, &vessel.id, q))
        .collect::<Result<Vec<_>, String>>()?;
    if !list.is_empty() {
        // The vessel applies these and has their outcomes to tell: come back soon, whatever its
        // idle cadence.
        reply["poll_in"] = POLL_IN_BUSY.into();
    }
    // Left out when empty: an idle vessel's poll is answered in as few bytes as it can be.
    if !list.is_empty() {
        reply["bundles"] = list
            .iter()
            .map(|q| serde_json::json!({"queue_id": q.id, "bundle_id": q.bundle_id, "size": q.size, "sha256": q.sha256, "path": format!("/v1/bundles/{}", q.id)}))
            .collect::<Vec<_>>()
            .into();
    }
    // No Content-Type: the agent reads this reply as JSON whatever it says, and a vessel pays
    // for every byte of its check-ins.
    Ok(Response::new(Full::new(Bytes::from(reply.to_string()))))
}

/// Runs the server until SIGTERM or SIGINT. `ready` is called with the bound address once the
/// server accepts connections (systemd's READY=1 is sent then too).
pub fn run(
    cfg: ShoreConfig,
    clock: Arc<dyn Clock>,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    let (cert, key) = match (&cfg.shore.tls_cert, &cfg.shore.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => return Err("[shore] tls_cert and tls_key are required to serve (make a pair with 'vessel-sync shore gen-cert')".into()),
    };
    cfg.check_secret_modes()?;
    let files = base::service::raise_open_files_limit();
    if files < cfg.shore.max_connections.saturating_add(64) {
        tracing::warn!(
            open_files = files,
            max_connections = cfg.shore.max_connections,
            "the open-files limit is below [shore] max_connections; raise LimitNOFILE= (the packaged unit sets 16384) or lower max_connections"
        );
    }
    let tls = wire::net::server_tls(&cert, &key).map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let db = cfg.open().map_err(|e| e.to_string())?;
    let (stop_forward, stopped) = std::sync::mpsc::channel::<()>();
    let forwarder = if cfg.cloud.is_some() {
        let (c, k) = (cfg.clone(), clock.clone());
        Some(std::thread::spawn(move || {
            crate::forward::worker(c, k, stopped)
        }))
    } else {
        None
    };
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        db: Mutex::new(db),
        clock,
        uploads: upload::Uploads::new(cfg.shore.uploads_in_flight_bytes),
        intake_slots: Arc::new(tokio::sync::Semaphore::new(INTAKE_SLOTS)),
    });
    let caps = conn::Caps::new(
        usize::try_from(cfg.shore.max_connections).unwrap_or(usize::MAX),
        usize::try_from(cfg.shore.max_connections_per_address).unwrap_or(usize::MAX),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.shore.listen)
            .await
            .map_err(|e| format!("listening on {}: {e}", cfg.shore.listen))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let notifier = base::service::Notifier::from_env();
        notifier.ready(&format!("listening on {addr}"));
        tracing::info!(%addr, "shore receiver ready");
        ready(addr);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut backoff = conn::AcceptBackoff::default();
        let mut refused = conn::AcceptBackoff::default();
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(x) => { backoff.succeeded(); x }
                        Err(e) => {
                            // Out of file descriptors, say: wait (growing) instead of spinning,
                            // and say so at a bounded rate.
                            let (wait, log) = backoff.failed(std::time::Instant::now());
                            if let Some(n) = log {
                                tracing::warn!(error = %e, failures = n, open = caps.open(), "accepting connections fails; backing off");
                            }
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    };
                    let slot = match caps.admit(peer.ip()) {
                        Ok(s) => s,
                        Err(why) => {
                            if let (_, Some(n)) = refused.failed(std::time::Instant::now()) {
                                tracing::warn!(%peer, refused = n, reason = ?why, open = caps.open(), "connections refused: over the connection caps ([shore] max_connections, max_connections_per_address)");
                            }
                            drop(tcp);
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let tls = match tokio::time::timeout(conn::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => { tracing::debug!(%peer, error = %e, "TLS handshake failed"); return; }
                            Err(_) => { tracing::debug!(%peer, "TLS handshake timed out"); return; }
                        };
                        let io = conn::Idle::new(tls, conn::IDLE_TIMEOUT);
                        let svc = hyper::service::service_fn(move |req| handle(shared.clone(), peer.ip(), req));
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(conn::HEADER_TIMEOUT)
                            .keep_alive(true)
                            // A vessel pays for every byte: no Date header it never reads.
                            .auto_date_header(false)
                            .serve_connection(TokioIo::new(io), svc)
                            .await
                        {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                    });
                }
            }
        }
        notifier.stopping();
        let _ = stop_forward.send(());
        if let Some(f) = forwarder {
            let _ = f.join();
        }
        tracing::info!("shore receiver stopped");
        Ok(())
    })
}
