//! Serving the node's own HTTP APIs (admin, metrics) with the limits every
//! listener needs: a cap on open connections (past it, new ones are closed
//! at once), a deadline for each request head (a client that sends it one
//! byte at a time is closed), and a stop on shutdown.

use std::time::Duration;

use axum::Router;
use civkit_framework::Shutdown;
use tokio::net::TcpListener;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Time allowed for a request head, and between kept-alive requests.
    pub header_timeout: Duration,
}

/// Serve `app` on `listener` until shutdown.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, mut shutdown: Shutdown) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.connections));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // over the cap: closed unanswered
        };
        let app = app.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(app),
                );
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended");
                },
                _ = stop.wait() => {}
            }
            drop(permit);
        });
    }
}
