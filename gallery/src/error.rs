//! Errors as JSON responses: `{"error": "<message>", "code": "<machine-readable code>"}`, plus `"file"` when an
//! uploaded file is at fault. SQL errors of the extension map to HTTP statuses by their SQLSTATE.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_postgres::error::SqlState;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
    /// The 1-based array element at fault, from the error's DETAIL (`element N`, as clip_embed_images gives it).
    pub element: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), file: None, element: None }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// An error that only has a status, as the HTTP layer gives it: the code names the status.
    pub fn of_status(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::URI_TOO_LONG => "uri_too_long",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
            s if s.is_client_error() => "bad_request",
            _ => "internal_error",
        };
        Self::new(status, code, message)
    }

    /// Names the uploaded file at fault, when the error is about an image.
    pub fn with_file(mut self, file: Option<String>) -> Self {
        if matches!(self.code, "not_an_image" | "unsupported_image_format" | "image_too_large") {
            self.file = file;
        }
        self
    }

    /// An error of a statement. Bad images are the client's fault (4xx); a missing or broken model is the
    /// service's (503); anything else is a 500.
    pub fn from_db(e: &tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", format!("database: {e}"));
        };
        let code = db.code();
        let (status, name) = if *code == SqlState::INVALID_BINARY_REPRESENTATION {
            (StatusCode::UNPROCESSABLE_ENTITY, "not_an_image")
        } else if *code == SqlState::FEATURE_NOT_SUPPORTED {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image_format")
        } else if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large")
        } else if *code == SqlState::INVALID_PARAMETER_VALUE
            || *code == SqlState::DATA_EXCEPTION
            || *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
        {
            (StatusCode::BAD_REQUEST, "invalid_parameter")
        } else if *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
            || *code == SqlState::UNDEFINED_FILE
            || *code == SqlState::DATA_CORRUPTED
        {
            (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable")
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "database_error")
        };
        let mut message = db.message().to_string();
        if let Some(hint) = db.hint() {
            message = format!("{message} ({hint})");
        }
        ApiError { element: db.detail().and_then(element_of_detail), ..Self::new(status, name, message) }
    }

    /// The JSON body of the error's response.
    pub fn body(&self) -> String {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some(file) = &self.file {
            body["file"] = json!(file);
        }
        body.to_string()
    }
}

/// The element index in a DETAIL of the form `element N`.
fn element_of_detail(detail: &str) -> Option<usize> {
    detail.strip_prefix("element ")?.parse().ok()
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::from_db(&e)
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Self::from_db(&e),
            e => Self::new(StatusCode::SERVICE_UNAVAILABLE, "database_unavailable", format!("database pool: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::element_of_detail;

    #[test]
    fn element_index_comes_from_the_detail() {
        assert_eq!(element_of_detail("element 3"), Some(3));
        assert_eq!(element_of_detail("element 12"), Some(12));
        assert_eq!(element_of_detail("element"), None);
        assert_eq!(element_of_detail("elements 3"), None);
        assert_eq!(element_of_detail("element 3: not an image"), None);
    }
}
