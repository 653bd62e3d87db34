//! Extractors whose rejections are [`AppError`]s, so malformed JSON, a wrong
//! content type or a bad query string answer in the error format (400/413/415)
//! like every other failure.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{AppError, FieldError};

/// JSON body extractor (`application/json` required).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> AppError {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            AppError::UnsupportedMediaType("Send the body as application/json.".into())
        }
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and the expected type, never
            // anything internal; keep it short.
            let text = e.body_text();
            let detail = text
                .split_once(": ")
                .map(|(_, d)| d)
                .unwrap_or(&text)
                .chars()
                .take(200)
                .collect::<String>();
            AppError::Validation(vec![FieldError::new("body", detail)])
        }
        JsonRejection::JsonSyntaxError(_) => {
            AppError::BadRequest("The body is not valid JSON.".into())
        }
        JsonRejection::BytesRejection(b)
            if b.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            AppError::PayloadTooLarge
        }
        _ => AppError::BadRequest("The body could not be read.".into()),
    }
}

/// Query string extractor.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text
                    .split_once(": ")
                    .map(|(_, d)| d)
                    .unwrap_or(&text)
                    .chars()
                    .take(200)
                    .collect::<String>();
                Err(AppError::Validation(vec![FieldError::new("query", detail)]))
            }
            Err(_) => Err(AppError::BadRequest("The query string is invalid.".into())),
        }
    }
}
