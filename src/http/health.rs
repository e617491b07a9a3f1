//! `GET /healthz`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;

/// 200 `{"status":"ok"}` when the database answers a query, else 503.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    if state.auth.healthy().await {
        HttpResponse::Ok().json(json!({ "status": "ok" }))
    } else {
        HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(super::error::error_body(
            "service_unavailable",
            "the database does not answer",
        ))
    }
}
