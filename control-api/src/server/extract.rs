//! Reading a request: its JSON body (size-limited, errors naming the field) and its path
//! parameters.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::routes::AppState;
use crate::error::Error;
use crate::model::{parse_param, VRF_MAX};

/// A JSON body of type `T`, size-limited, whose errors name the offending field.
pub(super) struct Body<T>(pub(super) T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let bytes = read_body(req, state.body_limit).await?;
        parse_json(&bytes).map(Body)
    }
}

pub(super) async fn read_body(req: Request, limit: usize) -> Result<bytes::Bytes, Error> {
    // No Content-Type check: `curl -d` labels JSON as a form, and the parser's message is
    // clearer than a 415 would be.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(Error::PayloadTooLarge { limit })
        }
        Err(e) => Err(Error::InvalidJson(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// Parse JSON, naming the field a type or value error is about.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidJson(
            "the request body is empty; this request takes a JSON object".to_string(),
        ));
    }
    // An explicit null would read as "absent" for some optional fields and as a type error for
    // others: it is refused everywhere, naming where it is. (A body without the word `null`
    // anywhere, strings included, has none: read whole only when it may.)
    let may_hold_null = bytes.windows(4).any(|w| w == b"null");
    if let Some(whole) = may_hold_null
        .then(|| serde_json::from_slice::<serde_json::Value>(bytes).ok())
        .flatten()
    {
        if let Some(field) = nested_null(&whole, "") {
            return Err(Error::InvalidField {
                field,
                reason: "null is not a value; leave the field out to take its default".to_string(),
            });
        }
    }
    // Read plainly first: it takes what the reader below takes (that one only tracks where it
    // is, to name the field of an error), at a fraction of the cost for a route batch's
    // thousands of items. A refused body is read again below for the message.
    if let Ok(value) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => Error::InvalidField {
                field: path,
                reason: inner.to_string(),
            },
            serde_json::error::Category::Data => {
                Error::InvalidJson(format!("invalid request body: {inner}"))
            }
            _ => Error::InvalidJson(format!("the request body is not valid JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| Error::InvalidJson(format!("trailing data after the JSON object: {e}")))?;
    Ok(value)
}

/// Where the first null inside `v` is (`ingress[0].proto`), not counting `v` itself.
fn nested_null(v: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    let null_at = |here: String, f: &Value| {
        if f.is_null() {
            Some(here)
        } else {
            nested_null(f, &here)
        }
    };
    match v {
        Value::Object(fields) => fields.iter().find_map(|(k, f)| {
            let here = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            null_at(here, f)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, f)| null_at(format!("{at}[{i}]"), f)),
        _ => None,
    }
}

/// Path parameters by name, percent-decoded.
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    pub(super) fn get(&self, name: &'static str) -> Result<&str, Error> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(Error::InvalidPathParam {
                param: name,
                reason: "missing".to_string(),
            })
    }

    pub(super) fn number(&self, name: &'static str, min: u32, max: u32) -> Result<u32, Error> {
        parse_param(name, self.get(name)?, min, max)
    }

    pub(super) fn vrf(&self) -> Result<u32, Error> {
        self.number("vrf", 0, VRF_MAX)
    }
}

impl FromRequestParts<AppState> for Params {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Error> {
        axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|p| Params(p.0))
            .map_err(|e| Error::InvalidPathParam {
                param: "path",
                reason: e.body_text(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Nexthop, Policy, VifRequest};
    use proptest::prelude::*;

    fn classify<T: DeserializeOwned>(bytes: &[u8]) -> Option<u16> {
        parse_json::<T>(bytes).err().map(|e| e.status())
    }

    proptest! {
        /// Whatever bytes arrive, parsing answers (never panics) and refusals are 400s.
        #[test]
        fn arbitrary_bodies_are_refused_with_400(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for status in [classify::<VifRequest>(&bytes), classify::<Nexthop>(&bytes), classify::<Policy>(&bytes)]
                .into_iter()
                .flatten()
            {
                prop_assert_eq!(status, 400);
            }
        }

        /// JSON of the wrong shape names the field it is about.
        #[test]
        fn wrong_types_name_their_field(field in "(name|vrf|mac|mtu|queues)", v in any::<bool>()) {
            let mut body = serde_json::json!({"name":"a","type":"tap","vrf":0,"mac":"02:00:00:00:00:01"});
            body[&field] = serde_json::Value::Bool(v);
            let body = body.to_string();
            match parse_json::<VifRequest>(body.as_bytes()) {
                Err(Error::InvalidField { field: f, .. }) => prop_assert_eq!(f, field),
                other => prop_assert!(false, "expected invalid-field, got {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let e = parse_json::<crate::api::MplsRequest>(br#"{"nexthop":1} x"#).unwrap_err();
        assert_eq!(e.code(), "invalid-json");
        let ok: crate::api::MplsRequest = parse_json(b" {\"nexthop\":1}\n").unwrap();
        assert_eq!(ok.nexthop, Some(1));
    }
}
