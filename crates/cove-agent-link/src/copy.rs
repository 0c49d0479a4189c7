//! `cove cp` both ways, streamed: files as raw bytes, directories as tar archives built or
//! unpacked on a blocking thread while the bytes flow (no temporary archive, no full buffering).
//!
//! Destination rules follow `cp`/`docker cp`: copying onto an existing directory puts the source
//! inside it under its own name; otherwise the destination path is the copy itself.
//!
//! Out of the guest, everything the guest says is untrusted: modes lose setuid, setgid, sticky
//! and group/world write ([`cove_untrusted::host_mode`], as `cove disk get`), entry names that
//! are absolute, hold `..` or lead through a symlink are refused, and device nodes and fifos
//! are skipped (creating them as root would hand the guest the host's disks).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cove_proto::{Channel, FileKind, MAX_PAYLOAD, OpenRequest, PutRequest, StreamMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::ops::{StreamOpener, stat};
use crate::stream::{Stream, StreamEvent, within};

/// Called with the number of content bytes moved so far.
pub type Progress<'a> = Option<&'a (dyn Fn(u64) + Send + Sync)>;

fn report(p: Progress<'_>, n: u64) {
    if let Some(f) = p {
        f(n)
    }
}

fn base_name(p: &str) -> Result<String, LinkError> {
    Path::new(p.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            LinkError::local(
                format!("{p} has no file name to copy to"),
                std::io::ErrorKind::InvalidInput.into(),
            )
        })
}

/// Waits for the agent's `Done` after an upload.
async fn wait_done(mut s: Stream) -> Result<(), LinkError> {
    let mut done = false;
    loop {
        match within("confirmation of the upload", s.recv()).await? {
            StreamEvent::Msg(StreamMsg::Done) => done = true,
            StreamEvent::Msg(StreamMsg::Error(e)) => return Err(LinkError::Remote(e)),
            StreamEvent::Closed if done => return Ok(()),
            StreamEvent::Closed => {
                return Err(LinkError::Protocol("upload closed without Done".into()));
            }
            _ => {}
        }
    }
}

/// `Write` that hands full chunks to the async side (runs on a blocking thread).
struct ChanWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChanWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(MAX_PAYLOAD - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_PAYLOAD {
            self.flush()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_PAYLOAD));
            self.tx
                .blocking_send(chunk)
                .map_err(|_| std::io::Error::other("upload aborted"))?;
        }
        Ok(())
    }
}

/// `Read` over chunks from the async side (runs on a blocking thread).
struct ChanReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Copies a local file or directory into the guest. Returns the bytes of content sent.
pub async fn copy_in(
    opener: &impl StreamOpener,
    local: &Path,
    remote: &str,
    progress: Progress<'_>,
) -> Result<u64, LinkError> {
    let md = tokio::fs::metadata(local)
        .await
        .map_err(|e| LinkError::local(format!("cannot read {}", local.display()), e))?;
    let into_dir = remote.ends_with('/')
        || matches!(stat(opener, remote).await?, Some(m) if m.kind == FileKind::Dir);
    let dest = if into_dir {
        format!(
            "{}/{}",
            remote.trim_end_matches('/'),
            base_name(&local.to_string_lossy())?
        )
    } else {
        remote.to_string()
    };
    let mode = md.permissions().mode() & 0o7777;
    let kind = if md.is_dir() {
        FileKind::Dir
    } else {
        FileKind::File
    };
    let stream = opener
        .open(OpenRequest::FilePut(PutRequest {
            path: dest,
            kind,
            mode,
        }))
        .await?;
    let mut sent = 0u64;
    if kind == FileKind::File {
        let mut f = tokio::fs::File::open(local)
            .await
            .map_err(|e| LinkError::local(format!("cannot open {}", local.display()), e))?;
        let mut buf = vec![0u8; MAX_PAYLOAD];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| LinkError::local(format!("reading {}", local.display()), e))?;
            if n == 0 {
                break;
            }
            within(
                "flow-control credit for the upload",
                stream.send_data(Channel::Data, &buf[..n]),
            )
            .await?;
            sent += n as u64;
            report(progress, sent);
        }
    } else {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let dir = local.to_path_buf();
        let producer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut b = tar::Builder::new(ChanWriter {
                tx,
                buf: Vec::with_capacity(MAX_PAYLOAD),
            });
            b.follow_symlinks(false);
            b.append_dir_all(".", &dir)?;
            b.into_inner()?.flush()
        });
        while let Some(chunk) = rx.recv().await {
            within(
                "flow-control credit for the upload",
                stream.send_data(Channel::Data, &chunk),
            )
            .await?;
            sent += chunk.len() as u64;
            report(progress, sent);
        }
        match producer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = stream.sender().reset("local archive failed").await;
                return Err(LinkError::local(
                    format!("archiving {}", local.display()),
                    e,
                ));
            }
            Err(e) => return Err(LinkError::Protocol(format!("archiver thread failed: {e}"))),
        }
    }
    stream.send_eof(Channel::Data).await?;
    wait_done(stream).await?;
    Ok(sent)
}

/// Copies a guest file or directory to the host. Returns the bytes of content received.
pub async fn copy_out(
    opener: &impl StreamOpener,
    remote: &str,
    local: &Path,
    progress: Progress<'_>,
) -> Result<u64, LinkError> {
    let mut stream = opener
        .open(OpenRequest::FileGet {
            path: remote.into(),
        })
        .await?;
    let meta = match within("file metadata", stream.recv()).await? {
        StreamEvent::Msg(StreamMsg::FileMeta(m)) => m,
        StreamEvent::Msg(StreamMsg::Error(e)) => return Err(LinkError::Remote(e)),
        other => {
            return Err(LinkError::Protocol(format!(
                "expected FileMeta, got {other:?}"
            )));
        }
    };
    let dest: PathBuf = if tokio::fs::metadata(local).await.is_ok_and(|m| m.is_dir()) {
        local.join(base_name(remote)?)
    } else {
        local.to_path_buf()
    };
    let lerr = |what: &str, e| LinkError::local(format!("{what} {}", dest.display()), e);
    let mut got = 0u64;
    if meta.kind == FileKind::Dir {
        tokio::fs::create_dir_all(&dest)
            .await
            .map_err(|e| lerr("cannot create", e))?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        let d = dest.clone();
        let unpacker = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut r = ChanReader {
                rx,
                cur: Vec::new(),
                pos: 0,
            };
            unpack_untrusted(&mut r, &d)?;
            std::io::copy(&mut r, &mut std::io::sink()).map(|_| ())
        });
        let res = recv_content(&mut stream, progress, &mut got, Sink::Chan(tx)).await;
        let unpacked = unpacker
            .await
            .map_err(|e| LinkError::Protocol(format!("unpacker thread failed: {e}")))?;
        // The unpacker's error is the cause when both failed (it stopped, so the sink did too).
        unpacked.map_err(|e| lerr("unpacking into", e))?;
        res?;
    } else {
        // 0600 while the content arrives; the guest's mode (stripped) is applied at the end.
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&dest)
            .await
            .map_err(|e| lerr("cannot create", e))?;
        recv_content(&mut stream, progress, &mut got, Sink::File(&mut f)).await?;
        f.flush().await.map_err(|e| lerr("writing", e))?;
        drop(f);
    }
    tokio::fs::set_permissions(
        &dest,
        std::fs::Permissions::from_mode(cove_untrusted::host_mode(meta.mode)),
    )
    .await
    .map_err(|e| lerr("cannot chmod", e))?;
    Ok(got)
}

/// Receives Data until Eof then Done/Closed, handing each chunk to `sink`.
async fn recv_content(
    stream: &mut Stream,
    progress: Progress<'_>,
    got: &mut u64,
    mut sink: Sink<'_>,
) -> Result<(), LinkError> {
    let mut done = false;
    loop {
        match within("file content", stream.recv()).await? {
            StreamEvent::Data(_, b) => {
                let n = b.len() as u64;
                sink.put(b)
                    .await
                    .map_err(|e| LinkError::local("saving the copy", e))?;
                *got += n;
                report(progress, *got);
            }
            StreamEvent::Eof(_) => sink.finish(),
            StreamEvent::Msg(StreamMsg::Done) => done = true,
            StreamEvent::Msg(StreamMsg::Error(e)) => return Err(LinkError::Remote(e)),
            StreamEvent::Msg(_) => {}
            StreamEvent::Closed if done => return Ok(()),
            StreamEvent::Closed => {
                return Err(LinkError::Protocol("download closed without Done".into()));
            }
        }
    }
}

/// Where downloaded bytes go: a file, or the tar unpacker's channel (dropped at Eof so the
/// unpacker sees the end of the archive).
enum Sink<'a> {
    File(&'a mut tokio::fs::File),
    Chan(mpsc::Sender<Vec<u8>>),
    Done,
}

impl Sink<'_> {
    async fn put(&mut self, b: Vec<u8>) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(&b).await,
            Sink::Chan(tx) => tx
                .send(b)
                .await
                .map_err(|_| std::io::Error::other("unpacking stopped early")),
            Sink::Done => Ok(()),
        }
    }

    fn finish(&mut self) {
        if matches!(self, Sink::Chan(_)) {
            *self = Sink::Done;
        }
    }
}

/// Unpacks a guest's tar stream into `dest`: names checked with [`cove_untrusted::inside`],
/// modes masked with [`cove_untrusted::STRIPPED_MODE_BITS`], special files skipped. Directories
/// get their modes last (a read-only directory must not stop its own entries).
fn unpack_untrusted(r: &mut impl Read, dest: &Path) -> std::io::Result<()> {
    use tar::EntryType;
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(false);
    a.set_mask(cove_untrusted::STRIPPED_MODE_BITS);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    let mut dirs = Vec::new();
    for entry in a.entries()? {
        let mut e = entry?;
        let name = e.path()?.into_owned();
        let target = cove_untrusted::inside(dest, &name)
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::PermissionDenied, err))?;
        let kind = e.header().entry_type();
        if kind == EntryType::Link
            && let Some(link) = e.link_name()?
        {
            // A hard link's target is an entry name too.
            cove_untrusted::inside(dest, &link)
                .map_err(|err| std::io::Error::new(std::io::ErrorKind::PermissionDenied, err))?;
        }
        match kind {
            EntryType::Char | EntryType::Block | EntryType::Fifo => continue,
            EntryType::Directory => {
                std::fs::create_dir_all(&target)?;
                dirs.push((target, e.header().mode().unwrap_or(0o700)));
            }
            _ => {
                e.unpack_in(dest)?;
            }
        }
    }
    // Deepest first, so a parent's mode never stops a child's chmod.
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (d, mode) in dirs {
        if !std::fs::symlink_metadata(&d)?.file_type().is_symlink() {
            std::fs::set_permissions(
                &d,
                std::fs::Permissions::from_mode(cove_untrusted::host_mode(mode)),
            )?;
        }
    }
    Ok(())
}
