//! vrouter's control side: the contract types of control API v1 ([`api`]), the validated
//! control model ([`model`]) with its socket isolation rules ([`socket_path`]), the hook vrouterd
//! implements to apply changes ([`dataplane`]), the controller that ties them together
//! ([`controller`]), the REST server on a unix socket ([`server`]), Prometheus rendering
//! ([`metrics`]) and a client ([`client`]) used by `vrouterctl`.
//!
//! Wiring it into vrouterd:
//! ```text
//! let ctrl = Arc::new(Controller::new(ControllerConfig { socket_base, vrouter_mac }, dataplane)?);
//! let socket = ControlSocket::bind(&control_socket_path)?;
//! runtime.block_on(serve(socket, ctrl.clone(), ServeOptions::default(), shutdown_future))?;
//! // on shutdown, once the vhost core has stopped: server sockets and created dirs removed
//! ctrl.remove_socket_files();
//! ```

// The contract: what requests and answers are.
pub mod api;
pub mod error;

// The control side proper, with no HTTP in it: validation, the rules, the hook, the saved state
// and the controller over them.
pub mod controller;
pub mod dataplane;
pub mod events;
pub mod journal;
pub mod model;
pub mod socket_path;

// Transports: the server and its Prometheus page, and the client. The command line is the
// `vrouterctl` binary (src/bin/vrouterctl), a user of the client.
pub mod client;
pub mod metrics;
pub mod pkt0;
pub mod server;

pub use client::{BlockingClient, Client};
pub use controller::{Controller, ControllerConfig, Outcome};
pub use dataplane::{
    Change, Dataplane, DataplaneError, DataplaneErrorKind, DhcpSettings, TableChange, VifKind,
    VifSpec,
};
pub use error::Error;
pub use server::{serve, ControlSocket, ServeOptions};
