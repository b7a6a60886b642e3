//! The REST API's errors: one enum, rendered as `{"error": {"code", "message"}}` with the
//! matching status.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bedside_rooms::RoomError;
use bedside_rooms::storage::StorageError;
use bedside_visit::Refusal;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required: HTTP Basic with an API key id and secret")]
    Unauthorized,
    #[error("visit not found")]
    VisitNotFound,
    #[error("participant not found in this visit")]
    ParticipantNotFound,
    #[error("no event with that id")]
    EventNotFound,
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("the visit has ended")]
    VisitEnded,
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{field}: {message}")]
    Validation {
        field: &'static str,
        message: String,
    },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("too many requests; retry later")]
    RateLimited,
    #[error("too many open connections from this address")]
    TooManyConnections,
    #[error("expected a JSON body (content-type: application/json)")]
    UnsupportedMediaType,
    #[error("temporarily unavailable; retry later")]
    Unavailable,
    #[error("internal error")]
    Internal,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `visit_not_found`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::VisitNotFound => (StatusCode::NOT_FOUND, "visit_not_found"),
            ApiError::ParticipantNotFound => (StatusCode::NOT_FOUND, "participant_not_found"),
            ApiError::EventNotFound => (StatusCode::NOT_FOUND, "event_not_found"),
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::VisitEnded => (StatusCode::CONFLICT, "visit_ended"),
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::TooManyConnections => (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        metrics::counter!("bedside_errors_total", "code" => code).increment(1);
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="bedside""#),
            );
        }
        if matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::Validation {
                field: "body",
                message: e.body_text(),
            },
            JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::Validation {
            field: "query",
            message: r.body_text(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage error");
        ApiError::Unavailable
    }
}

impl From<RoomError> for ApiError {
    fn from(e: RoomError) -> Self {
        match e {
            RoomError::Refused(Refusal::VisitNotFound) => ApiError::VisitNotFound,
            RoomError::Refused(Refusal::UnknownParticipant) => ApiError::ParticipantNotFound,
            RoomError::Refused(Refusal::VisitEnded) => ApiError::VisitEnded,
            RoomError::Unavailable | RoomError::Elsewhere => ApiError::Unavailable,
            other => {
                tracing::error!(error = %other, "unexpected room error on the API path");
                ApiError::Internal
            }
        }
    }
}
