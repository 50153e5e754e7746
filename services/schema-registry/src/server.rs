//! Serving the router on a local socket, as the local orchestrator and tests run it.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::error::{Error, Result};

/// The line prefix the local orchestrator waits for on stdout.
pub const LISTENING_PREFIX: &str = "LISTENING";

/// Binds `addr` and announces the bound address as `LISTENING http://<addr>` on stdout.
pub async fn bind_and_announce(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot bind {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("bound socket has no address: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{LISTENING_PREFIX} http://{bound}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Config(format!("cannot announce the address: {e}")))?;
    Ok(listener)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Config(format!("server failed: {e}")))
}

/// Completes on SIGTERM, SIGINT or, if `on_stdin_eof`, when stdin closes.
pub async fn shutdown_signal(on_stdin_eof: bool) {
    let stdin_closed = async {
        if on_stdin_eof {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            // A plain thread, not tokio's stdin: a blocking read left pending in tokio's
            // pool would hold up runtime shutdown; a detached thread dies with the process.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                let _ = tx.send(());
            });
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        () = stdin_closed => tracing::info!("stdin closed: shutting down"),
    }
}
