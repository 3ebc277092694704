//! CNI error objects: the spec's well-known codes, plus the plugin's own (100 and up).

use serde::Serialize;

/// The CNI spec's well-known error codes, and this plugin's.
pub mod code {
    /// The runtime asked for a version the plugin does not speak.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field in the network configuration the plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container (attachment) is not known.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A `CNI_*` environment variable is missing or wrong.
    pub const INVALID_ENV: u32 = 4;
    /// Reading or writing a file, or running a command, failed.
    pub const IO_FAILURE: u32 = 5;
    /// The configuration on stdin is not the JSON this plugin takes.
    pub const DECODE_FAILURE: u32 = 6;
    /// The network configuration is well-formed but not valid.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient: vrouterd not reachable; the runtime may retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD now (vrouterd does not answer).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// vrouterd refused a request.
    pub const VROUTERD_REFUSED: u32 = 100;
    /// The address pool has no free address.
    pub const POOL_EXHAUSTED: u32 = 101;
    /// Setting up the kernel interface (veth, addresses, routes) failed.
    pub const INTERFACE_FAILURE: u32 = 102;
    /// CHECK found the attachment differs from what ADD made.
    pub const CHECK_FAILED: u32 = 103;
    /// The delegated IPAM plugin failed (its own error is in the message).
    pub const DELEGATE_FAILED: u32 = 104;
}

/// A CNI error object (`{"cniVersion","code","msg","details"}`), printed on stdout with a
/// non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// An invalid configuration value: `field` is the JSON path an operator fixes.
    pub fn config(field: &str, what: impl std::fmt::Display) -> Self {
        CniError::new(code::INVALID_CONFIG, format!("field `{field}`: {what}"))
    }

    pub fn io(what: impl std::fmt::Display) -> Self {
        CniError::new(code::IO_FAILURE, what.to_string())
    }

    /// The JSON object the spec asks for.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        struct Obj<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Obj {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or(serde_json::Value::Null)
    }
}

/// What vrouterd's client reported, as a CNI error: unreachable is "try again later", a refusal
/// carries vrouterd's own message (which names the rule broken).
pub fn from_api(what: &str, e: control_api::Error) -> CniError {
    match e {
        control_api::Error::Connect { path, source } => CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "{what}: cannot reach vrouterd at {} ({source}); is vrouterd running, and does `controlSocket` name its --control-socket?",
                path.display()
            ),
        ),
        control_api::Error::Api {
            status,
            code: c,
            message,
        } => CniError::new(
            code::VROUTERD_REFUSED,
            format!("{what}: vrouterd refused ({status} {c}): {message}"),
        ),
        other => CniError::new(code::VROUTERD_REFUSED, format!("{what}: {other}")),
    }
}

pub type Result<T, E = CniError> = std::result::Result<T, E>;
