//! Shared by the disk targets: the input written to a file in /dev/shm (cove-disk reads files
//! by path, as `cove disk` does), then read the way `cove disk ls/cat/get` read it.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

/// The input as a file of its own (one per process), overwritten in place: truncating and
/// refilling it freed and cleared the tmpfs pages of the whole image on every execution.
pub fn image_file(data: &[u8]) -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("cove-fuzz-{}.img", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("scratch file");
    f.write_all_at(data, 0).expect("write scratch file");
    f.set_len(data.len() as u64).expect("size scratch file");
    path
}

/// Lists, reads and copies what the filesystem offers, with the same entry points as the CLI:
/// at most 64 entries, at most 8 directories deep. Every structure is parsed as well at depth
/// 8 as deeper; deeper, a crafted cycle (/a/b/a/b/...) only makes each path longer to resolve
/// again, which took up to 0.6 s an input and held the runs to a few hundred a second. Each
/// listing still reads its whole directory; past 64 entries the files and links read go
/// through the same code again (replaying the corpora with 64: the same edges as with 256, in
/// a third less time).
pub fn walk(fs: &cove_disk::Fs) {
    const MAX_ENTRIES: usize = 64;
    const MAX_DEPTH: usize = 8;
    let mut todo = vec![("/".to_string(), 0)];
    let mut seen = 0;
    while let Some((dir, depth)) = todo.pop() {
        let Ok(entries) = fs.list(&dir) else { continue };
        for e in entries {
            seen += 1;
            if seen > MAX_ENTRIES {
                return;
            }
            let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
            match e.kind {
                cove_disk::FileKind::Dir if depth < MAX_DEPTH => todo.push((path, depth + 1)),
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
