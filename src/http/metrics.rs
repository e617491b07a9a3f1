//! `GET /metrics`, on the `metrics.listen` listener only.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};

use crate::auth::Auth;
use crate::ops::metrics::{Metrics, CONTENT_TYPE};

/// What the metrics listener's handler needs.
pub struct MetricsState {
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
}

/// The metrics listener's route table: `GET /metrics` and nothing else.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// Every series, in the Prometheus text format.
async fn metrics(state: web::Data<MetricsState>) -> HttpResponse {
    let snapshot = state.auth.metrics_snapshot().await;
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .body(state.metrics.render(snapshot))
}

/// Anything else on the metrics listener.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found: this listener serves GET /metrics only\n")
}
