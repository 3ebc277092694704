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

pub mod api;
pub mod client;
pub mod controller;
pub mod dataplane;
pub mod error;
pub mod journal;
mod lane;
pub mod metrics;
pub mod model;
pub mod server;
pub mod socket_path;

pub use client::{BlockingClient, Client};
pub use controller::{Controller, ControllerConfig, Outcome};
pub use dataplane::{
    Change, Dataplane, DataplaneError, DataplaneErrorKind, TableChange, VifKind, VifSpec,
};
pub use error::Error;
pub use server::{serve, ControlSocket, ServeOptions};
