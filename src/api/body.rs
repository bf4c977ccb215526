//! Request bodies as typed values: [`Json<T>`] reads a body in the order of docs/api.md §1.1
//! (content type → size → syntax → schema → limits) and answers every failure with that section's
//! status and message.
//!
//! Why not actix's `web::Json`: its errors lose the field path, and docs/api.md §1.1 promises 422
//! messages such as `results[3].timesteps: must be between 0 and 1000000`. So the body is
//! deserialised through `serde_path_to_error`, serde's complaint is turned into the documented
//! problem text once ([`schema_error`]), and what serde cannot say (lengths, ranges, relations
//! between fields) is each body type's [`Validate`].

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::error::ApiError;
use super::AppState;

/// Body limit when the app carries no [`AppState`] (never in the real server).
const DEFAULT_LIMIT: usize = 2 * 1024 * 1024;

/// A request body of type `T`, checked as docs/api.md §1.1 says.
pub struct Json<T>(pub T);

/// The limits a body's schema cannot express; each message is `<field path>: <problem>`.
pub trait Validate {
    /// Checks the limits of docs/api.md §1.1 that serde does not.
    fn validate(&self) -> Result<(), String>;
}

impl<T: DeserializeOwned + Validate + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(DEFAULT_LIMIT, |s| s.max_body_bytes);
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let bytes = read_bytes(&req, payload, limit).await?;
            // Syntax first (400), so a truncated body is never reported as a schema problem.
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::new(400, format!("Invalid JSON body: {e}")))?;
            // serde would also read a struct from an array of its fields; every body is an object.
            if !value.is_object() {
                return Err(ApiError::unprocessable("body: expected an object"));
            }
            let body: T = serde_path_to_error::deserialize(value)
                .map_err(|e| ApiError::unprocessable(schema_error(&e)))?;
            body.validate().map_err(ApiError::unprocessable)?;
            Ok(Json(body))
        })
    }
}

/// The body's bytes after the content-type and size checks.
async fn read_bytes(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let json_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !json_type {
        return Err(ApiError::new(415, "Content-Type must be application/json"));
    }
    let too_large = || ApiError::new(413, format!("Request body too large (limit {limit} bytes)"));
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|h| h.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(400, format!("Invalid request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// serde's complaint as `<field path>: <problem>` in the words of docs/api.md §1.1.
fn schema_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let mut path = String::new();
    for segment in e.path().iter() {
        match segment {
            Segment::Seq { index } => path += &format!("[{index}]"),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path += key;
            }
            Segment::Unknown => {}
        }
    }
    let message = e.inner().to_string();
    if let Some(field) = between(&message, "missing field `", "`") {
        return format!("{}: missing field", join(&path, field));
    }
    let path = if path.is_empty() { "body" } else { &path };
    if message.starts_with("unknown variant") {
        let expected = message.split_once("expected ").map_or("", |(_, e)| e);
        let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        return format!("{path}: must be one of: {}", names.join(", "));
    }
    let expected = message.rsplit_once(", expected ").map_or("", |(_, e)| e);
    let problem = match expected {
        "a boolean" => "expected a boolean",
        "a string" => "expected a string",
        "f64" => "expected a finite number",
        "a sequence" => "expected an array",
        e if e.starts_with('i') || e.starts_with('u') => "expected an integer",
        e if e.starts_with("struct") || e == "a map" => "expected an object",
        _ => return format!("{path}: {message}"),
    };
    format!("{path}: {problem}")
}

/// The text between `start` and the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// `parent.field`, or `field` at the top level.
fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// Checks a string field: `min..=max` characters, no control characters.
pub fn check_length(path: &str, s: &str, min: usize, max: usize) -> Result<(), String> {
    let n = s.chars().count();
    if n < min || n > max || s.chars().any(char::is_control) {
        return Err(format!("{path}: must be {min} to {max} characters"));
    }
    Ok(())
}

/// Checks an integer field against `min..=max`.
pub fn check_range(path: &str, n: i64, min: i64, max: i64) -> Result<(), String> {
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(format!("{path}: must be between {min} and {max}"))
    }
}

/// Parses a path or query integer (0 … 2^63−1) with the 422 message of docs/api.md §1.1.
pub fn non_negative(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        ApiError::unprocessable(format!("{name}: '{raw}' is not a non-negative integer"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        n: i64,
        flag: Option<bool>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
        name: Option<String>,
        kind: Option<crate::wire::FailureKindBody>,
    }

    fn problem(json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        schema_error(&serde_path_to_error::deserialize::<_, Outer>(v).unwrap_err())
    }

    #[test]
    fn serde_complaints_become_the_documented_problems() {
        assert_eq!(problem("3"), "body: expected an object");
        assert_eq!(problem("{}"), "items: missing field");
        assert_eq!(problem(r#"{"items": [{}]}"#), "items[0].n: missing field");
        assert_eq!(
            problem(r#"{"items": [{"n": 1}, {"n": "ten"}]}"#),
            "items[1].n: expected an integer"
        );
        assert_eq!(
            problem(r#"{"items": [{"n": 1.5}]}"#),
            "items[0].n: expected an integer"
        );
        assert_eq!(
            problem(r#"{"items": [{"n": 1, "flag": 3}]}"#),
            "items[0].flag: expected a boolean"
        );
        assert_eq!(problem(r#"{"items": 3}"#), "items: expected an array");
        assert_eq!(
            problem(r#"{"items": [], "name": 3}"#),
            "name: expected a string"
        );
        assert_eq!(
            problem(r#"{"items": [], "kind": "cosmic"}"#),
            "kind: must be one of: miner, infrastructure"
        );
    }
}
