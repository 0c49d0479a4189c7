//! File get/put, streamed: a file moves as raw bytes, a directory as a tar archive produced or
//! consumed on the fly, so nothing is ever buffered whole.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

use cove_proto::{
    Channel, ErrorKind, ErrorMsg, FRAME_COST, FileKind, MAX_PAYLOAD, PutRequest, StreamMsg,
};

use crate::handlers::meta_of;
use crate::mux::{AgentStream, Inbound, StreamSender};

/// `Write` into a stream's Data channel, in full-size frames.
struct StreamWriter {
    s: StreamSender,
    buf: Vec<u8>,
}

impl StreamWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.s
                .data(Channel::Data, &self.buf)
                .map_err(|_| io::Error::other("stream reset by the host"))?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Write for StreamWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_PAYLOAD - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_PAYLOAD {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

/// `Read` from a stream's Data channel until its Eof.
struct StreamReader<'a> {
    s: &'a AgentStream,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.s.recv() {
                Inbound::Data(bytes, c) => {
                    self.s.consumed(c);
                    self.cur = bytes;
                    self.pos = 0;
                }
                Inbound::Eof(_) => self.eof = true,
                Inbound::Msg(_, c) => self.s.consumed(c),
                Inbound::Reset | Inbound::ChildExited => {
                    return Err(io::Error::other("stream reset by the host"));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub fn get(stream: AgentStream, path: &str) {
    let md = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return stream.fail(ErrorMsg::from_io(&format!("cannot read {path}"), &e)),
    };
    let meta = meta_of(&md);
    let s = stream.sender();
    if s.msg(&StreamMsg::Started { pid: None }).is_err()
        || s.msg(&StreamMsg::FileMeta(meta.clone())).is_err()
    {
        return;
    }
    let res = match meta.kind {
        FileKind::Dir => send_dir(&s, path),
        _ => send_file(&s, path),
    };
    if stream.is_cancelled() {
        return;
    }
    match res {
        Ok(()) => {
            if s.eof(Channel::Data).is_ok() && s.msg(&StreamMsg::Done).is_ok() {
                stream.finish();
            }
        }
        Err(e) => stream.fail(ErrorMsg::from_io(&format!("reading {path}"), &e)),
    }
}

fn send_file(s: &StreamSender, path: &str) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        let credit = s
            .wait_credit(FRAME_COST + 4096)
            .map_err(|_| io::Error::other("stream reset"))?;
        let max = ((credit - FRAME_COST) as usize).min(MAX_PAYLOAD);
        let n = f.read(&mut buf[..max])?;
        if n == 0 {
            return Ok(());
        }
        s.data(Channel::Data, &buf[..n])
            .map_err(|_| io::Error::other("stream reset"))?;
    }
}

fn send_dir(s: &StreamSender, path: &str) -> io::Result<()> {
    let w = StreamWriter {
        s: s.clone(),
        buf: Vec::with_capacity(MAX_PAYLOAD),
    };
    let mut b = tar::Builder::new(w);
    b.follow_symlinks(false);
    b.append_dir_all(".", path)?;
    b.into_inner()?.flush()
}

pub fn put(stream: AgentStream, req: PutRequest) {
    let path = req.path.clone();
    let res = match req.kind {
        FileKind::File => put_file(&stream, &req),
        FileKind::Dir => put_dir(&stream, &req),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "only files and directories can be copied",
        )),
    };
    if stream.is_cancelled() {
        return;
    }
    match res {
        Ok(()) => {
            if stream.sender().msg(&StreamMsg::Done).is_ok() {
                stream.finish();
            }
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => stream.fail(ErrorMsg::new(
            ErrorKind::InvalidRequest,
            format!("{path}: {e}"),
        )),
        Err(e) => stream.fail(ErrorMsg::from_io(&format!("writing {path}"), &e)),
    }
}

fn put_file(stream: &AgentStream, req: &PutRequest) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(req.mode & 0o7777)
        .open(&req.path)?;
    started(stream)?;
    let mut r = StreamReader {
        s: stream,
        cur: Vec::new(),
        pos: 0,
        eof: false,
    };
    io::copy(&mut r, &mut f)?;
    f.set_permissions(std::fs::Permissions::from_mode(req.mode & 0o7777))?;
    Ok(())
}

fn put_dir(stream: &AgentStream, req: &PutRequest) -> io::Result<()> {
    std::fs::create_dir_all(&req.path)?;
    started(stream)?;
    let mut r = StreamReader {
        s: stream,
        cur: Vec::new(),
        pos: 0,
        eof: false,
    };
    {
        let mut a = tar::Archive::new(&mut r);
        a.set_preserve_permissions(true);
        a.set_preserve_mtime(true);
        a.set_overwrite(true);
        a.unpack(&req.path)?;
    }
    io::copy(&mut r, &mut io::sink())?; // the archive's trailing padding, up to the Eof
    std::fs::set_permissions(
        &req.path,
        std::fs::Permissions::from_mode(req.mode & 0o7777),
    )?;
    Ok(())
}

fn started(stream: &AgentStream) -> io::Result<()> {
    stream
        .sender()
        .msg(&StreamMsg::Started { pid: None })
        .map_err(|_| io::Error::other("stream reset"))
}
