//! Read files from a stopped VM's disk without mounting it, without root,
//! and without flattening the disk first.
//!
//! A VM's root disk is a qcow2 overlay over a read-only raw ext4 base; data
//! disks are standalone qcow2 or raw files. [`DiskImage`] gives random access
//! to the guest-visible bytes of any of them (the qcow2 layer is `imago`,
//! see [`image`] for why), and [`Fs`] reads the ext4 filesystem on it with
//! `ext4-view`, touching only the blocks a request needs: reading a small log
//! file from a 4 GiB disk reads a few MiB of the host files.
//!
//! ```no_run
//! use cove_disk::{DiskImage, Fs};
//! let fs = Fs::open(DiskImage::open("root.qcow2")?)?.with_label("VM web's disk");
//! for e in fs.list("/var/log")? {
//!     println!("{} {:>8} {}", e.mode_string(), e.size, e.name);
//! }
//! fs.read_to("/var/log/init.log", &mut std::io::stdout().lock())?;
//! fs.copy_out("/etc", "/tmp/web-etc")?;
//! # Ok::<(), cove_disk::Error>(())
//! ```

mod copy;
mod entry;
mod error;
mod fs;
pub mod image;
mod partition;
mod probe;

pub use copy::CopyReport;
pub use entry::{Entry, FileKind};
pub use error::{Error, Result};
pub use fs::{FileReader, Fs};
pub use image::DiskImage;
pub use partition::{Partition, partitions};
pub use probe::{Format, Layer};
