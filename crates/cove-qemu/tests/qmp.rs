//! The QMP client against a real QEMU with no guest (`-M none`): fast
//! enough for every `cargo test`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use cove_backend::{process, sockets};
use cove_qemu::{Qemu, QmpClient, QmpError, RunState};

const TIMEOUT: Duration = Duration::from_secs(10);

fn spawn_qemu(qmp: &Path) -> tokio::process::Child {
    let qemu = Qemu::find(None).expect("qemu-system-x86 is installed");
    let mut cmd = std::process::Command::new(&qemu.binary);
    cmd.args(["-M", "none", "-S", "-nodefaults", "-display", "none"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=qmp,server=on,wait=off,path={}",
            qmp.display()
        ))
        .args(["-mon", "chardev=qmp,mode=control"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    process::supervise(&mut cmd);
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn connect(qmp: &Path, child: &tokio::process::Child) -> QmpClient {
    let pid = child.id().unwrap() as i32;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = || unsafe { libc::kill(pid, 0) == 0 };
    let stream = sockets::connect_when_ready(qmp, TIMEOUT, alive)
        .await
        .unwrap();
    QmpClient::from_stream(stream, qmp).await.unwrap()
}

#[tokio::test]
async fn paused_then_running_then_quit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let mut child = spawn_qemu(&sock);
    let qmp = connect(&sock, &child).await;

    assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);
    qmp.cont().await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Running);
    // Commands may run concurrently on one connection.
    let (a, b) = tokio::join!(qmp.query_status(), qmp.query_status());
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (RunState::Running, RunState::Running)
    );
    // Accepted; whether the guest reacts is the guest's business.
    qmp.system_powerdown().await.unwrap();

    qmp.quit().await.unwrap();
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    // The VMM is gone: commands fail with a typed error, not a hang.
    let err = qmp.query_status().await.unwrap_err();
    assert!(matches!(err, QmpError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("exited"), "{err}");
}

#[tokio::test]
async fn connecting_to_no_vmm_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let err = QmpClient::connect(&sock).await.err().unwrap();
    assert!(matches!(err, QmpError::Connect { .. }));
    assert!(err.to_string().contains("is the VMM running"), "{err}");
}

#[tokio::test]
async fn connect_negotiates_on_a_plain_path() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let mut child = spawn_qemu(&sock);
    // Wait for the socket, then use the plain constructor.
    drop(connect(&sock, &child).await);
    let qmp = QmpClient::connect(&sock).await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap(), RunState::Prelaunch);
    qmp.quit().await.unwrap();
    tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
}
