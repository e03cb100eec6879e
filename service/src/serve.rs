//! The listeners of the process that owns a state dir: the local API (for the CLI of
//! other processes) and the web UI. Both serve the one router of `orchestrator_web`
//! (pages and `/api/...`) over a [`StoreSource`], behind its one auth layer:
//!
//! - the local API listens on 127.0.0.1, on an ephemeral port, and writes
//!   `{state-dir}/api.json` (`{"url", "pid", "daemon", "ui"}`) and `{state-dir}/api.token`
//!   (mode 0600, 32 random hex characters); every request needs `Authorization: Bearer
//!   TOKEN`. Both files are removed when the server stops; a client ignores them when the
//!   pid is gone (a stale file left by a crash).
//! - the web UI listens on `--listen`, with `--auth` (whose tokens and users are accepted,
//!   and the state dir's API token too) or, on loopback, without.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use orchestrator_engine::state::Store;
use orchestrator_engine::CancellationToken;
use orchestrator_web::{Auth, Role};

use crate::source::StoreSource;
use crate::{Context, Error};

use crate::client::{INFO, TOKEN};

/// The name the state dir's API token goes by in logs and refusals.
const TOKEN_NAME: &str = "local API";

/// Removes the discovery files when the server's owner stops.
pub struct Served {
    dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(INFO));
        let _ = std::fs::remove_file(self.dir.join(TOKEN));
    }
}

/// A new API token: 16 random bytes, in hex.
pub fn new_token() -> Result<String, String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom for the API token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serves the local API for `store` (in `ctx`'s state dir) with `token` until `shutdown`
/// is cancelled. `commands`: the daemon's, when a daemon serves (it starts runs for
/// others); `ui`: the web UI's URL, written for others to find.
pub async fn serve_api(
    ctx: &Context,
    store: Arc<Store>,
    token: &str,
    commands: Option<orchestrator_daemon::Commands>,
    ui: Option<String>,
    shutdown: CancellationToken,
) -> Result<Served, String> {
    let dir = ctx.dir();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1 for the local API: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("local API address: {e}"))?;
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = dir.join(TOKEN);
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let info = serde_json::json!({
            "url": format!("http://{addr}"),
            "pid": std::process::id(),
            "daemon": commands.is_some(),
            "ui": ui,
        });
        std::fs::write(dir.join(INFO), info.to_string())
            .map_err(|e| format!("cannot write {}: {e}", dir.join(INFO).display()))?;
    }
    let daemon = commands.is_some();
    let source = StoreSource::new(ctx.clone(), store, commands);
    let app = orchestrator_web::router(
        Arc::new(source),
        orchestrator_web::Options {
            auth: Some(Auth::token_only(TOKEN_NAME, token)),
            dashboards_dir: None,
            shutdown: shutdown.clone(),
            listen: addr,
        },
    );
    tokio::spawn(async move {
        let stop = async move { shutdown.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!("local API stopped: {e}");
        }
    });
    if daemon {
        tracing::info!(
            "local API on http://{addr} (token in {})",
            dir.join(TOKEN).display()
        );
    }
    Ok(Served {
        dir: dir.to_path_buf(),
    })
}

/// `daemon --listen/--no-ui/--auth/--dashboards`.
pub struct UiArgs {
    /// `None` with `--no-ui`.
    pub listen: Option<SocketAddr>,
    pub auth: Option<PathBuf>,
    pub dashboards: Option<PathBuf>,
}

/// Checked before anything starts: the address and the `--auth` file.
pub fn prepare(args: &UiArgs) -> Result<Option<Auth>, Error> {
    let auth = args
        .auth
        .as_deref()
        .map(Auth::load)
        .transpose()
        .map_err(|e| Error::invalid(format!("error: {e}")))?;
    if let Some(addr) = args.listen {
        orchestrator_web::check_listen(addr, auth.as_ref())
            .map_err(|e| Error::invalid(format!("error: {e}")))?;
    }
    Ok(auth)
}

/// Serves the UI until `stop`; returns the URL it serves on. With `--auth`, the state
/// dir's API `token` is accepted too (as an operator), so one client reaches both.
pub async fn serve_ui(
    source: StoreSource,
    addr: SocketAddr,
    auth: Option<Auth>,
    token: &str,
    dashboards: Option<PathBuf>,
    stop: CancellationToken,
) -> Result<String, Error> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::invalid(format!(
            "error: cannot serve the web UI on {addr}: {e}; pick another address with --listen, or --no-ui"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::failed(format!("error: web UI address: {e}")))?;
    let app = orchestrator_web::router(
        Arc::new(source),
        orchestrator_web::Options {
            auth: auth.map(|a| a.with_token(TOKEN_NAME, token, Role::Operator)),
            dashboards_dir: dashboards,
            shutdown: stop.clone(),
            listen: bound,
        },
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        {
            tracing::warn!("web UI stopped: {e}");
        }
    });
    Ok(format!("http://{bound}"))
}
