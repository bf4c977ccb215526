//! Reading a JSON request body in the order of docs/api.md §1.1: content type → size → syntax, with
//! the messages of docs/api.md §1.1; schema checks follow in the handlers through [`Fields`].

use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Reads and parses the body as a JSON value.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Value, ApiError> {
    let json_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
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
    serde_json::from_slice(&body).map_err(|e| ApiError::new(400, format!("Invalid JSON body: {e}")))
}

/// Typed access to the fields of a JSON object, with 422 messages naming the field path.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn bad(path: &str, problem: &str) -> ApiError {
    ApiError::unprocessable(format!("{path}: {problem}"))
}

impl<'a> Fields<'a> {
    /// The body (or an element) as an object; `path` prefixes its fields ("" for the body).
    pub fn of(value: &'a Value, path: &str) -> Result<Self, ApiError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                path: path.to_string(),
            }),
            _ => Err(bad(
                if path.is_empty() { "body" } else { path },
                "expected an object",
            )),
        }
    }

    /// The path of a field.
    pub fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The raw value, `None` for absent or null.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A required string of `min..=max` characters without control characters.
    pub fn string(&self, name: &str, min: usize, max: usize) -> Result<String, ApiError> {
        let p = self.path(name);
        let s = self.get(name).ok_or_else(|| bad(&p, "missing field"))?;
        check_string(s, &p, min, max)
    }

    /// An optional string (any length).
    pub fn opt_text(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| bad(&self.path(name), "expected a string"))
            })
            .transpose()
    }

    /// A required boolean.
    pub fn bool(&self, name: &str) -> Result<bool, ApiError> {
        let p = self.path(name);
        self.get(name)
            .ok_or_else(|| bad(&p, "missing field"))?
            .as_bool()
            .ok_or_else(|| bad(&p, "expected a boolean"))
    }

    /// An optional boolean.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| bad(&self.path(name), "expected a boolean"))
            })
            .transpose()
    }

    /// An optional integer within `min..=max`.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        let p = self.path(name);
        self.get(name)
            .map(|v| {
                let n = v.as_i64().ok_or_else(|| bad(&p, "expected an integer"))?;
                if (min..=max).contains(&n) {
                    Ok(n)
                } else {
                    Err(bad(&p, &format!("must be between {min} and {max}")))
                }
            })
            .transpose()
    }

    /// An optional finite number, at least `min` when given.
    pub fn opt_number(&self, name: &str, min: Option<f64>) -> Result<Option<f64>, ApiError> {
        let p = self.path(name);
        self.get(name)
            .map(|v| {
                let x = v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| bad(&p, "expected a finite number"))?;
                match min {
                    Some(m) if x < m => Err(bad(&p, &format!("must be at least {m}"))),
                    _ => Ok(x),
                }
            })
            .transpose()
    }

    /// An optional array.
    pub fn opt_array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        self.get(name)
            .map(|v| {
                v.as_array()
                    .ok_or_else(|| bad(&self.path(name), "expected an array"))
            })
            .transpose()
    }
}

/// A string value of `min..=max` characters without control characters.
pub fn check_string(v: &Value, path: &str, min: usize, max: usize) -> Result<String, ApiError> {
    let s = v.as_str().ok_or_else(|| bad(path, "expected a string"))?;
    let n = s.chars().count();
    if n < min || n > max || s.chars().any(char::is_control) {
        return Err(bad(path, &format!("must be {min} to {max} characters")));
    }
    Ok(s.to_string())
}

/// Parses a path or query integer (0 … 2^63−1) with the 422 message of docs/api.md §1.1.
pub fn non_negative(name: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        ApiError::unprocessable(format!("{name}: '{raw}' is not a non-negative integer"))
    })
}
