//! SQL checks against a real PostgreSQL server started for the test (Debian's `postgresql`
//! package, a throwaway cluster run as the `postgres` user on a free port).

use cove_check::{LocalGuest, Status, VmFacts, from_toml, run};
use cove_state::{PortForward, VmState};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn as_postgres(args: &[&str]) -> String {
    sh(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args))
}

/// The newest installed server's bin directory, installing the package if none is.
fn server_bin() -> PathBuf {
    let find = || {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
            .collect();
        bins.sort_by_key(|b| {
            b.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        bins.pop()
    };
    if let Some(bin) = find() {
        return bin;
    }
    sh(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "postgresql",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    find().expect("the postgresql package installed no server under /usr/lib/postgresql")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Cluster {
    fn start() -> Cluster {
        let bin = server_bin();
        let dir = tempfile::Builder::new()
            .prefix("cove-check-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let data = dir.path().join("data");
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        sh(Command::new("chown").args(["postgres:", &path(dir.path())]));
        // psql in the "guest" (this machine) looks for the server's socket in Debian's
        // default directory, so the server listens there too.
        let default_sockets = Path::new("/var/run/postgresql");
        if !default_sockets.exists() {
            std::fs::create_dir_all(default_sockets).unwrap();
            sh(Command::new("chown").args(["postgres:", "/var/run/postgresql"]));
        }
        as_postgres(&[
            &path(&bin.join("initdb")),
            "-D",
            &path(&data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ]);
        let port = free_port();
        let options = format!(
            "-p {port} -k {},/var/run/postgresql -c listen_addresses=127.0.0.1",
            path(dir.path())
        );
        as_postgres(&[
            &path(&bin.join("pg_ctl")),
            "-D",
            &path(&data),
            "-l",
            &path(&dir.path().join("log")),
            "-o",
            &options,
            "-w",
            "-t",
            "60",
            "start",
        ]);
        Cluster {
            bin,
            data,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.data.to_str().unwrap_or(""),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

#[tokio::test]
#[ignore = "needs postgresql server (installs Debian's package if missing, runs as root)"]
async fn sql_checks_against_a_real_server_from_host_and_guest() {
    let pg = Cluster::start();
    // The "VM" forwards guest port 5432 to the server's port, as `-p PORT:5432` would.
    let vm = VmFacts {
        name: "pg".into(),
        state: VmState::Running,
        vmm_pid: Some(std::process::id()),
        peers: vec![],
        ports: vec![PortForward {
            host_addr: "127.0.0.1".into(),
            host_port: pg.port,
            guest_port: 5432,
        }],
    };
    let toml = format!(
        r#"
[[check]]
name = "PostgreSQL responding"
tcp = 5432

[[check]]
name = "Can execute query"
sql = "select 1"
expect = "1"
via = "host"

[[check]]
sql = "select n, n * 2 from generate_series(1, 3) n"
expect = ["1|2", "2|4", "3|6"]
via = "host"

[[check]]
sql = "select 2"
expect = "1"
via = "host"

[[check]]
sql = "select 1"
user = "no_such_role"
via = "host"

[[check]]
sql = "selec 1"
via = "host"

[[check]]
sql = "select current_user"
expect = "postgres"
port = {port}

[[check]]
process = "postgres"

[[check]]
command = ["{isready}", "-h", "127.0.0.1", "-p", "{port}"]
stdout_contains = "accepting connections"
"#,
        port = pg.port,
        isready = pg.bin.join("pg_isready").display()
    );
    let report = run(&vm, &LocalGuest, &from_toml(&toml).unwrap()).await;
    print!("{}", report.to_text());
    let status: Vec<Status> = report.checks.iter().map(|c| c.status).collect();
    use Status::*;
    assert_eq!(
        status,
        [
            Pass, Pass, Pass, Pass, Pass, Fail, Fail, Fail, Pass, Pass, Pass
        ]
    );
    assert_eq!(report.checks[3].detail.as_deref(), Some("1 row: [\"1\"]"));
    let f = report.checks[5].failure.as_ref().unwrap();
    assert_eq!(f.expected.as_deref(), Some("1 row: [\"1\"]"));
    assert_eq!(f.got.as_deref(), Some("1 row: [\"2\"]"));
    let f = report.checks[6].failure.as_ref().unwrap();
    assert!(
        f.cause.as_deref().unwrap().contains("role does not exist"),
        "{f:?}"
    );
    let f = report.checks[7].failure.as_ref().unwrap();
    assert!(
        f.stderr.as_deref().unwrap().contains("syntax error"),
        "{f:?}"
    );
    assert_eq!(report.summary(), "=== 3 OF 11 CHECKS FAILED ===");
}

/// Makes `shmget` fail with ENOSYS for this thread and every process it starts from now on,
/// as on seed 000's guest kernel built without CONFIG_SYSVIPC.
fn deny_shmget_on_this_thread() {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: 0,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let mut program = [
        stmt(load, 4), // seccomp_data.arch
        jump(AUDIT_ARCH_X86_64, 3),
        stmt(load, 0), // seccomp_data.nr
        jump(libc::SYS_shmget as u32, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: prctl with these options reads only `fprog`, which outlives the call; the
    // filter applies to the calling thread (no TSYNC), which this test owns.
    let rc = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            -1
        } else {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                &fprog as *const libc::sock_fprog as libc::c_ulong,
            )
        }
    };
    assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
}

#[test]
#[cfg(target_arch = "x86_64")]
#[ignore = "needs postgresql server (installs Debian's package if missing, runs as root)"]
fn seed_000_initdb_without_sysvipc_is_traced_to_the_kernel_option() {
    let bin = server_bin();
    let dir = tempfile::Builder::new()
        .prefix("cove-check-initdb")
        .tempdir_in("/tmp")
        .unwrap();
    sh(Command::new("chown").args(["postgres:", dir.path().to_str().unwrap()]));
    let toml = format!(
        r#"
[[check]]
name = "initdb"
command = ["{initdb}", "-D", "{data}", "-U", "postgres", "--no-sync"]
user = "postgres"
timeout = "60s"
"#,
        initdb = bin.join("initdb").display(),
        data = dir.path().join("data").display()
    );
    let checks = from_toml(&toml).unwrap();
    let vm = VmFacts {
        name: "pg".into(),
        state: VmState::Running,
        vmm_pid: Some(std::process::id()),
        peers: vec![],
        ports: vec![],
    };
    // A thread of its own: the filter stays with it and ends with it.
    let report = std::thread::spawn(move || {
        deny_shmget_on_this_thread();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(&vm, &LocalGuest, &checks))
    })
    .join()
    .unwrap();
    print!("{}", report.to_text());
    let f = report.checks[2].failure.as_ref().expect("initdb must fail");
    let output = format!("{:?}{:?}", f.stdout, f.stderr);
    assert!(output.contains("shmget"), "{output}");
    assert!(output.contains("Function not implemented"), "{output}");
    let cause = f.cause.as_deref().unwrap();
    assert!(cause.contains("CONFIG_SYSVIPC"), "{cause}");
    assert!(cause.contains("cove kernel explain shmget"), "{cause}");
}
