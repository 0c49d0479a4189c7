//! Read files from a stopped VM's disk without mounting it, without root,
//! and without flattening the disk first.
//!
//! A VM's root disk is a qcow2 overlay over a read-only raw ext4 base; data
//! disks are standalone qcow2 or raw files. [`DiskImage`] gives random access
//! to the guest-visible bytes of any of them (the qcow2 layer is `imago`,
//! see [`image`] for why), and [`Fs`] reads the ext4 filesystem on it with
//! `ext4-view`, touching only the blocks a request needs: reading a 1.4 KiB
//! log from a 4 GiB disk with a 323 MiB overlay reads 227 KiB of host files
//! (tests/big_disk.rs).
//!
//! | what | how |
//! |---|---|
//! | raw, qcow2 v2/v3, any cluster size | read |
//! | backing chains (raw or qcow2, names relative to the naming image) | followed, checked layer by layer first |
//! | zero clusters, deflate-compressed clusters | read |
//! | encryption, external data files, zstd, extended L2, dirty/corrupt flags | refused, the error says what to run |
//! | ext4 at byte 0, or in the one MBR/GPT partition that holds one | found ([`Fs::open_partition`] to choose) |
//! | a journal left dirty by a killed VM | replayed in memory (checksum v3 journals, as the kernel writes them); otherwise [`Error::NeedsRecovery`] |
//! | symlinks | resolved inside the image, never on the host |
//!
//! Nothing is ever written to the images.
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

mod bounds;
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
