//! The HTTP listener: one hyper HTTP/1.1 connection task per accepted socket,
//! with a header-read timeout. `axum::serve` sets none (hyper's default
//! applies only with a timer), so a client that opens connections and sends
//! headers slowly would hold each one forever; here it gets `timeout` to send
//! the request line and headers, then the connection is closed.

use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// How long a client has to send a request's headers (`--header-read-timeout`).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, app: axum::Router, header_read_timeout: Duration) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            if let Err(e) = b
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await
            {
                debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
}
