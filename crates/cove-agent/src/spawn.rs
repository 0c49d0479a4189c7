//! Starting a command with `posix_spawn`: glibc starts the child with a vfork-style clone that
//! shares the agent's memory until exec, where std's `Command` with a `pre_exec` hook forks,
//! copying the agent's page tables and then faulting on every page either side writes. Under
//! TCG that cost `cove exec VM true` 5-7 ms (p50 28-33 ms with posix_spawn against 35-39 ms
//! with fork, alternating in one run; BENCHMARKS.md §4).
//!
//! `posix_spawn` covers what a plain command needs (its own session, every signal at its
//! default, pipes, a working directory); switching user, a controlling terminal and tracing
//! need code between fork and exec and keep std's fork path (`exec::Launch::command`).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// A started child: its pid and the host ends of its stdio pipes.
pub(crate) struct Child {
    pid: libc::pid_t,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
}

impl Child {
    /// Takes over a child std started (its pipes become plain files; std's `Child` neither
    /// waits nor kills on drop).
    pub fn from_std(mut child: std::process::Child) -> Self {
        Self {
            pid: child.id() as libc::pid_t,
            stdin: child.stdin.take().map(|p| File::from(OwnedFd::from(p))),
            stdout: child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            stderr: child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
        }
    }

    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    pub fn kill(&self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    pub fn wait(&self) -> io::Result<ExitStatus> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid writes the status of our own child into `status`.
            if unsafe { libc::waitpid(self.pid, &mut status, 0) } >= 0 {
                return Ok(ExitStatus::from_raw(status));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Starts `argv` with exactly `env`, in `cwd`, in a session of its own with every signal at
/// its default, stdin/stdout/stderr on new pipes. A bare program name is looked up in `env`'s
/// PATH, as std does for a command whose environment was set.
pub(crate) fn spawn_piped(
    argv: &[String],
    env: &[(String, String)],
    cwd: &CStr,
) -> io::Result<Child> {
    let path_var = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v);
    let program = resolve(&argv[0], path_var.map(String::as_str))?;
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| c_string(a))
        .collect::<io::Result<_>>()?;
    let envp: Vec<CString> = env
        .iter()
        .map(|(k, v)| c_string(&format!("{k}={v}")))
        .collect::<io::Result<_>>()?;
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;

    let mut actions = FileActions::new()?;
    actions.dup2(&in_r, 0)?;
    actions.dup2(&out_w, 1)?;
    actions.dup2(&err_w, 2)?;
    actions.chdir(cwd)?;
    let mut attr = Attr::new()?;
    attr.session_and_default_signals()?;

    let ptrs = |v: &[CString]| {
        let mut p: Vec<*mut libc::c_char> = v.iter().map(|s| s.as_ptr().cast_mut()).collect();
        p.push(std::ptr::null_mut());
        p
    };
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));
    let mut pid = 0;
    // SAFETY: every pointer is valid for the call: NUL-terminated strings, null-terminated
    // arrays, initialised attributes and file actions; posix_spawn writes only `pid`.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv_p.as_ptr(),
            envp_p.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // The child has its own copies of its ends now; the agent keeps only the other ends.
    drop((in_r, out_w, err_w));
    Ok(Child {
        pid,
        stdin: Some(File::from(in_w)),
        stdout: Some(File::from(out_r)),
        stderr: Some(File::from(err_r)),
    })
}

/// `program` as execvp would find it in `path_var` (the command's PATH, not the agent's).
fn resolve(program: &str, path_var: Option<&str>) -> io::Result<CString> {
    if program.contains('/') {
        return c_string(program);
    }
    let dirs = path_var.unwrap_or(crate::exec::DEFAULT_PATH);
    for dir in dirs.split(':') {
        let candidate = format!("{}/{program}", if dir.is_empty() { "." } else { dir });
        let Ok(c) = CString::new(candidate.as_str()) else {
            continue;
        };
        let is_file = std::fs::metadata(&candidate).is_ok_and(|m| m.is_file());
        // SAFETY: access reads a NUL-terminated path.
        if is_file && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(c);
        }
    }
    Err(io::Error::from_raw_os_error(libc::ENOENT))
}

fn c_string(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// A pipe whose two ends close on exec (the child gets its end by `dup2`, which clears that).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Maps a posix_spawn* return code (an errno value, 0 for success) to a Result.
fn check(rc: libc::c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: an opaque C struct for which all zeroes is a valid value to initialise.
        let mut fa = unsafe { std::mem::zeroed() };
        // SAFETY: init fills the structure before any other use.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut fa) })?;
        Ok(Self(fa))
    }

    fn dup2(&mut self, fd: &OwnedFd, to: libc::c_int) -> io::Result<()> {
        // SAFETY: an initialised file-actions object; the fd stays open until after the spawn.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, fd.as_raw_fd(), to) })
    }

    fn chdir(&mut self, dir: &CStr) -> io::Result<()> {
        // SAFETY: an initialised file-actions object; glibc copies the path.
        check(unsafe { libc::posix_spawn_file_actions_addchdir_np(&mut self.0, dir.as_ptr()) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> io::Result<Self> {
        // SAFETY: an opaque C struct for which all zeroes is a valid value to initialise.
        let mut attr = unsafe { std::mem::zeroed() };
        // SAFETY: init fills the structure before any other use.
        check(unsafe { libc::posix_spawnattr_init(&mut attr) })?;
        Ok(Self(attr))
    }

    /// A session of its own (as `setsid`), every signal at its default action (the agent may
    /// have been started with some ignored, which exec would pass on) and none blocked.
    fn session_and_default_signals(&mut self) -> io::Result<()> {
        let attr = &mut self.0;
        let flags = libc::POSIX_SPAWN_SETSID
            | (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short;
        // SAFETY: zeroed sigset_t values are filled/emptied before use; `attr` is initialised.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigdefault(attr, &all))?;
            check(libc::posix_spawnattr_setsigmask(attr, &none))?;
            check(libc::posix_spawnattr_setflags(attr, flags))
        }
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_found_in_the_commands_path_not_the_agents() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("only-here");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let not_executable = dir.path().join("not-executable");
        std::fs::write(&not_executable, "").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());

        let found = resolve("only-here", Some(&path)).unwrap();
        assert_eq!(found.to_str().unwrap(), tool.to_str().unwrap());
        let missing = resolve("only-here", Some("/nonexistent:/bin")).unwrap_err();
        assert_eq!(missing.raw_os_error(), Some(libc::ENOENT));
        // Found but not executable is not found, as execvp skips it.
        assert!(resolve("not-executable", Some(&path)).is_err());
        // A path with a slash is taken as it is.
        assert_eq!(resolve("./x", None).unwrap().to_str().unwrap(), "./x");
    }

    #[test]
    fn a_spawned_command_gets_exactly_its_environment_directory_and_pipes() {
        use std::io::Read;
        let env = [
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("X".to_owned(), "1".to_owned()),
        ];
        let argv = ["sh", "-c", "pwd; env; echo err >&2; exit 3"].map(String::from);
        let mut child = spawn_piped(&argv, &env, c"/tmp").unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.take().unwrap();
        stdout.read_to_string(&mut out).unwrap();
        let mut stderr = child.stderr.take().unwrap();
        stderr.read_to_string(&mut err).unwrap();
        assert!(out.starts_with("/tmp\n"), "{out}");
        assert!(out.lines().any(|l| l == "X=1"), "{out}");
        // Nothing of the agent's own environment (this test's HOME) crosses.
        assert!(std::env::var_os("HOME").is_some());
        assert!(!out.lines().any(|l| l.starts_with("HOME=")), "{out}");
        assert_eq!(err, "err\n");
        assert_eq!(child.wait().unwrap().code(), Some(3));
    }
}
