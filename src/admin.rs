//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (it can work: PostgreSQL and RabbitMQ answer; 503 with the reason if not), and
//! the operator console under `/console` when `OPERATOR_TOKEN` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::shutdown::Shutdown;

/// Installs the metrics recorder; call once per process.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    Ok(PrometheusBuilder::new().install_recorder()?)
}

/// Whether the process can work now: `Err` says what it is waiting for.
pub type Readiness =
    Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static>;

/// Serves the admin routes, and `more` (the console), on `listen` until shutdown.
pub async fn serve(
    listen: SocketAddr,
    metrics: PrometheusHandle,
    ready: Readiness,
    more: Router,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let app = more
        .route(
            "/metrics",
            get(move || std::future::ready(metrics.render())),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let check = ready();
                async move {
                    match check.await {
                        Ok(()) => (StatusCode::OK, "ready".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen {listen}: {e}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    Ok(())
}
