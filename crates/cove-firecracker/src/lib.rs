//! cove's Firecracker backend: the only crate that names Firecracker's API.
//!
//! - [`backend`]: [`Firecracker`], the [`cove_backend::Backend`], and its
//!   runtime control through the API socket;
//! - [`api`]: the API's request bodies and the JSON configuration of a VM;
//! - [`http`]: HTTP/1.1 over the API's unix socket;
//! - [`vsock`]: the agent transport through Firecracker's hybrid vsock.
//!
//! Firecracker needs KVM. On a host whose KVM does not run vCPUs (the build
//! machines), the host probe says so and nothing is launched: the tests
//! check the requests against a double that follows the published API
//! contract, and no test claims a boot.

pub mod api;
pub mod backend;
pub mod http;
pub mod vsock;

pub use backend::{Firecracker, FirecrackerControl};
