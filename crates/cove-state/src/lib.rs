//! cove's persistent state: where files live ([`paths`]), which VMs exist
//! and what was last recorded about them ([`store`]), and the VM names and
//! states those records use ([`vm`]).

pub mod files;
pub mod net;
pub mod paths;
pub mod space;
pub mod store;
pub mod vm;

pub use paths::{Paths, VmPaths};
pub use store::{Store, StoreError};
pub use vm::{HostMount, NameError, PortForward, VmName, VmRecord, VmState};
