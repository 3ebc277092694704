//! The REST layer: HTTP/1.1 + JSON on a unix stream socket. Turns requests into controller
//! calls (run off the async runtime, since they block on the filesystem and the dataplane) and
//! errors into `{"error","message"}` bodies.
//!
//! The socket it listens on: `socket`; reading request bodies and path parameters: `extract`;
//! the routes and their handlers: `routes`; the threads controller calls run on: `lane`.

mod extract;
mod lane;
mod routes;
mod socket;

use std::fs;
use std::future::Future;
use std::sync::Arc;

use crate::controller::Controller;
use crate::error::Error;
use crate::socket_path;

pub use extract::parse_json;
pub use routes::ROUTES;
pub use socket::{ControlSocket, CONTROL_SOCKET_MODE};

use lane::Lanes;
use routes::router;
use socket::sock_err;

/// Largest request body accepted by default (policies with many rules fit easily).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Options of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    pub body_limit: usize,
    /// How long in-flight requests may run on after shutdown was asked for.
    pub shutdown_grace: std::time::Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown_grace: std::time::Duration::from_secs(5),
        }
    }
}

/// Serve the API on `socket` until `shutdown` resolves; then finish in-flight requests and
/// remove the socket file (if it is still ours).
pub async fn serve(
    socket: ControlSocket,
    ctrl: Arc<Controller>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let ControlSocket {
        listener,
        path,
        identity,
    } = socket;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|e| sock_err("register", &path, e))?;
    tracing::info!(socket = %path.display(), "control API listening");
    let (lanes, lanes_ended) = Lanes::start(&ctrl)?;
    let lanes = Arc::new(lanes);
    let app = router(Arc::clone(&lanes), Arc::clone(&ctrl), options.body_limit);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    // In-flight requests get a grace period; a client that never finishes cannot hold
    // vrouterd's shutdown hostage.
    let grace = options.shutdown_grace;
    let result = tokio::select! {
        r = server => r.map_err(|e| sock_err("serve", &path, e)),
        _ = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(socket = %path.display(), "control connections still open after the grace period; closing them");
            Ok(())
        }
    };
    // Calls already queued finish (a change never stops half-applied); connections still
    // open after the grace period may hold the lanes, so stop them here rather than on drop.
    lanes.stop();
    drop(lanes);
    lanes_ended.wait().await;
    if identity.is_some() && socket_path::identity(&path) == identity {
        let _ = fs::remove_file(&path);
    }
    tracing::info!(socket = %path.display(), "control API stopped");
    result
}
