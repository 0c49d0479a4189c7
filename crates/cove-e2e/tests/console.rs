//! `cove console`: an interactive serial console that several viewers can
//! share, with a detach key, and a guest shell that does not die waiting
//! for a cursor-position answer (seed 003).

use cove_e2e::Cove;
use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Reads a child's stdout on a thread, so the test can wait with a deadline.
fn output_of(child: &mut Child) -> mpsc::Receiver<u8> {
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for b in &buf[..n] {
                let _ = tx.send(*b);
            }
        }
    });
    rx
}

fn wait_for_text(rx: &mpsc::Receiver<u8>, seen: &mut String, needle: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(b) => seen.push(b as char),
            Err(_) => return false,
        }
    }
    true
}

#[test]
#[ignore = "boots VMs"]
fn two_viewers_share_the_console_and_detach_with_ctrl_bracket() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "con", "--image", "minimal"]);
    cove.ok(&["start", "con"]);
    let attach = || {
        cove.command()
            .args(["console", "con"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (attach(), attach());
    let (out1, out2) = (output_of(&mut first), output_of(&mut second));
    let (mut seen1, mut seen2) = (String::new(), String::new());
    // The serial shell answers; both viewers see the answer.
    let mut input = first.stdin.take().unwrap();
    input.write_all(b"\necho console-$((6*7))\n").unwrap();
    assert!(
        wait_for_text(&out1, &mut seen1, "console-42"),
        "first viewer saw: {seen1}"
    );
    assert!(
        wait_for_text(&out2, &mut seen2, "console-42"),
        "second viewer saw: {seen2}"
    );
    // Ctrl-] detaches this viewer only; the VM and the other viewer go on.
    input.write_all(&[0x1d]).unwrap();
    let status = first.wait().unwrap();
    assert!(status.success());
    let mut err = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("detach with Ctrl-]") && err.contains("detached"),
        "{err}"
    );
    assert_eq!(cove.state("con"), "running");
    // Stopping the VM ends the remaining viewer.
    cove.ok(&["stop", "con"]);
    assert!(second.wait().unwrap().success());
}

#[test]
#[ignore = "boots VMs"]
fn a_shell_asking_for_the_cursor_position_gets_an_answer_without_a_viewer() {
    let cove = Cove::new();
    cove.minimal_image();
    cove.ok(&["create", "cpr", "--image", "minimal"]);
    cove.ok(&["start", "cpr"]);
    // Ask on the serial line with nobody attached, and wait for the reply
    // (what brush and other line editors do at every prompt).
    // The console's own shell would read the reply first: pause it.
    let script = "for p in $(pidof sh); do [ \"$(readlink /proc/$p/fd/0)\" = /dev/ttyS0 ] && kill -STOP $p; done; \
                  stty -F /dev/ttyS0 raw -echo; \
                  (sleep 0.5; printf '\\033[6n' > /dev/ttyS0) & \
                  timeout 10 dd if=/dev/ttyS0 bs=1 count=6 2>/dev/null | od -c | head -1";
    let reply = cove.ok(&["exec", "cpr", "--", "sh", "-c", script]);
    assert!(
        reply.contains("033   [   1   ;   1   R"),
        "the supervisor answered: {reply}"
    );
}
