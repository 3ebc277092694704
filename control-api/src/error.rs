//! The crate's one error type: every way a control operation, the server or the client fails,
//! each with the HTTP status and short code it is reported under.

use std::path::PathBuf;

use crate::dataplane::DataplaneError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON, or not the JSON this path takes.
    #[error("{0}")]
    InvalidJson(String),
    /// A field is present and well-formed JSON but its value is refused.
    #[error("field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("field `{field}` is required {context}")]
    MissingField { field: String, context: String },
    #[error("path parameter `{param}`: {reason}")]
    InvalidPathParam { param: &'static str, reason: String },
    #[error("query parameter: {0}")]
    InvalidQuery(String),
    #[error("{what} {key} does not exist")]
    NotFound { what: &'static str, key: String },
    /// A body refers to an object that does not exist.
    #[error("field `{field}`: {what} {key} does not exist; {hint}")]
    UnknownReference {
        field: &'static str,
        what: &'static str,
        key: String,
        hint: String,
    },
    #[error("{what} {key} already exists; {hint}")]
    AlreadyExists {
        what: &'static str,
        key: String,
        hint: String,
    },
    #[error("{what} {key} is still used by {}; remove those first", users.join(", "))]
    InUse {
        what: &'static str,
        key: String,
        users: Vec<String>,
    },
    /// A change that would leave other objects invalid (e.g. a nexthop type change under routes
    /// whose label no longer fits).
    #[error("{0}")]
    Conflict(String),
    /// A vhost-user socket path breaks an isolation rule (see [`crate::socket_path`]).
    #[error("{message}")]
    Socket {
        rule: crate::socket_path::SocketRule,
        message: String,
    },
    #[error("dataplane: {0}")]
    Dataplane(#[from] DataplaneError),
    /// A forwarding table is at its limit (the dataplane's message names the table and the
    /// limit, so it is the whole message).
    #[error("{0}")]
    TableFull(String),
    #[error("{action} {path}: {source}")]
    Filesystem {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `--state-dir` file that cannot be trusted; found at start-up, never an API answer.
    #[error("{path}: at byte offset {offset}: {reason}")]
    StateCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("no such path: {0}; see openapi.yaml for the API")]
    UnknownPath(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("internal error: {0}")]
    Internal(String),
    /// One item of a batch request refused (nothing of the batch applied): the item, and why;
    /// answered with the status and code of why.
    #[error("{item}: {why}")]
    InBatch { item: String, why: Box<Error> },
    /// Client side: could not reach the control socket.
    #[error("cannot connect to {path}: {source} (is vrouterd running? see --socket)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Client side: the HTTP exchange failed.
    #[error("HTTP exchange with vrouterd failed: {0}")]
    Http(String),
    /// Client side: vrouterd answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// Client side: the answer was not what the contract says.
    #[error("unexpected answer from vrouterd: {0}")]
    Decode(String),
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidJson(_)
            | Error::InvalidField { .. }
            | Error::MissingField { .. }
            | Error::InvalidPathParam { .. }
            | Error::InvalidQuery(_) => 400,
            Error::NotFound { .. } | Error::UnknownPath(_) => 404,
            Error::MethodNotAllowed { .. } => 405,
            // Well formed, but at odds with the configuration as it is.
            Error::UnknownReference { .. }
            | Error::AlreadyExists { .. }
            | Error::InUse { .. }
            | Error::Conflict(_) => 409,
            Error::PayloadTooLarge { .. } => 413,
            Error::Socket { rule, .. } => rule.status(),
            Error::Dataplane(e) => e.kind.status(),
            Error::TableFull(_) => 507,
            Error::Filesystem { .. } | Error::StateCorrupt { .. } | Error::Internal(_) => 500,
            Error::Connect { .. } | Error::Http(_) | Error::Decode(_) => 502,
            Error::Api { status, .. } => *status,
            Error::InBatch { why, .. } => why.status(),
        }
    }

    /// The short stable code of the error body.
    pub fn code(&self) -> &str {
        match self {
            Error::InvalidJson(_) => "invalid-json",
            Error::InvalidField { .. } => "invalid-field",
            Error::MissingField { .. } => "missing-field",
            Error::InvalidPathParam { .. } => "invalid-path-param",
            Error::InvalidQuery(_) => "invalid-query",
            Error::NotFound { .. } => "not-found",
            Error::UnknownReference { .. } => "unknown-reference",
            Error::AlreadyExists { .. } => "already-exists",
            Error::InUse { .. } => "in-use",
            Error::Conflict(_) => "conflict",
            Error::Socket { rule, .. } => rule.code(),
            Error::Dataplane(e) => e.kind.code(),
            Error::TableFull(_) => "table-full",
            Error::Filesystem { .. } => "filesystem",
            Error::StateCorrupt { .. } => "state-corrupt",
            Error::PayloadTooLarge { .. } => "payload-too-large",
            Error::UnknownPath(_) => "unknown-path",
            Error::MethodNotAllowed { .. } => "method-not-allowed",
            Error::Internal(_) => "internal",
            Error::Connect { .. } => "connect",
            Error::Http(_) => "http",
            Error::Api { code, .. } => code,
            Error::InBatch { why, .. } => why.code(),
            Error::Decode(_) => "decode",
        }
    }

    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The error body this error is answered with.
    pub fn body(&self) -> crate::api::ErrorBody {
        crate::api::ErrorBody {
            error: self.code().to_string(),
            message: match self {
                // The client-side rendering adds status and code; the body carries only the text.
                Error::Api { message, .. } => message.clone(),
                other => other.to_string(),
            },
        }
    }
}
