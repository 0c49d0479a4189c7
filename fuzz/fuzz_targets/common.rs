//! Shared by the disk targets: the input written to a file in /dev/shm (cove-disk reads files
//! by path, as `cove disk` does), then read the way `cove disk ls/cat/get` read it.

use std::io::Write;
use std::path::PathBuf;

pub fn image_file(data: &[u8]) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("cove-fuzz-{}.img", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("scratch file");
    f.write_all(data).expect("write scratch file");
    path
}

/// Lists, reads and copies what the filesystem offers, with the same entry points as the CLI.
pub fn walk(fs: &cove_disk::Fs) {
    let mut todo = vec!["/".to_string()];
    let mut seen = 0;
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs.list(&dir) else { continue };
        for e in entries {
            seen += 1;
            if seen > 256 {
                return;
            }
            let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
            match e.kind {
                cove_disk::FileKind::Dir => todo.push(path),
                cove_disk::FileKind::File => {
                    let _ = fs.read_to(&path, &mut std::io::sink());
                }
                cove_disk::FileKind::Symlink => {
                    let _ = fs.read_link(&path);
                    let _ = fs.metadata(&path);
                }
                _ => {}
            }
        }
    }
}
