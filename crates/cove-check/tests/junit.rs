//! JUnit output from a real run, parsed back to prove it is well-formed and complete.

use cove_check::{LocalGuest, VmFacts, from_toml, run, to_junit};
use cove_state::VmState;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::reader::Reader;
use std::collections::HashMap;

#[derive(Debug, Default)]
struct Case {
    name: String,
    failure: Option<(String, String, String)>,
    skipped: Option<String>,
}

fn attrs(e: &quick_xml::events::BytesStart<'_>) -> HashMap<String, String> {
    e.attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            (
                String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                a.unescape_value().expect("escaped attribute").into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn junit_is_well_formed_and_carries_the_evidence() {
    let vm = VmFacts {
        name: "pg<&>".into(),
        state: VmState::Running,
        vmm_pid: Some(std::process::id()),
        peers: vec![],
        ports: vec![],
    };
    // Output with markup characters and a terminal escape, as a guest's output may have.
    let checks = from_toml(
        r#"
[[check]]
name = "quotes \" & <tags>"
command = "true"

[[check]]
command = "printf '<b>&amp; \\033[31mred\\033[0m\\n' >&2; exit 2"

[[check]]
tcp = 5432
"#,
    )
    .unwrap();
    let mut stopped = vm.clone();
    stopped.state = VmState::Crashed;
    let report = run(&vm, &LocalGuest, &checks).await;
    let xml = to_junit(&report);
    print!("{xml}");

    let mut reader = Reader::from_str(&xml);
    reader.config_mut().check_end_names = true;
    let mut suites = HashMap::new();
    let mut suite = HashMap::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_failure = false;
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testsuites" => suites = attrs(&e),
                b"testsuite" => suite = attrs(&e),
                b"testcase" => cases.push(Case {
                    name: attrs(&e)["name"].clone(),
                    ..Case::default()
                }),
                b"failure" => {
                    let a = attrs(&e);
                    cases.last_mut().unwrap().failure =
                        Some((a["message"].clone(), a["type"].clone(), String::new()));
                    in_failure = true;
                }
                b"skipped" => {
                    cases.last_mut().unwrap().skipped = Some(attrs(&e)["message"].clone())
                }
                other => panic!("unexpected element {:?}", String::from_utf8_lossy(other)),
            },
            Event::Text(t) if in_failure => {
                let text = t.decode().expect("UTF-8 text").into_owned();
                cases
                    .last_mut()
                    .unwrap()
                    .failure
                    .as_mut()
                    .unwrap()
                    .2
                    .push_str(&text);
            }
            // quick-xml reports `&amp;` and friends as their own events.
            Event::GeneralRef(r) if in_failure => {
                let name = r.decode().unwrap();
                let text = match r.resolve_char_ref().expect("valid character reference") {
                    Some(c) => c.to_string(),
                    None => resolve_predefined_entity(&name)
                        .expect("only XML's predefined entities")
                        .to_owned(),
                };
                cases
                    .last_mut()
                    .unwrap()
                    .failure
                    .as_mut()
                    .unwrap()
                    .2
                    .push_str(&text);
            }
            Event::End(e) if e.name().as_ref() == b"failure" => in_failure = false,
            Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(suites["tests"], "5");
    assert_eq!(suites["failures"], "2");
    assert_eq!(suite["name"], "pg<&>");
    assert_eq!(suite["tests"], "5");
    assert_eq!(cases.len(), 5);
    assert_eq!(cases[0].name, "1. VM running");
    assert_eq!(cases[2].name, "3. quotes \" & <tags>");
    assert!(cases[2].failure.is_none() && cases[2].skipped.is_none());
    let (message, kind, evidence) = cases[3].failure.clone().unwrap();
    assert_eq!(kind, "command");
    assert!(message.contains("exited with code 2"), "{message}");
    assert!(evidence.contains("exit code: 2"), "{evidence}");
    assert!(evidence.contains("<b>&amp; \\u{1b}[31mred"), "{evidence}");
    let (message, kind, _) = cases[4].failure.clone().unwrap();
    assert_eq!(kind, "tcp");
    assert!(
        message.contains("likely cause") && message.contains("-p HOST:5432"),
        "{message}"
    );

    // A crashed VM: the rest are <skipped/>.
    let report = run(&stopped, &LocalGuest, &checks).await;
    let xml = to_junit(&report);
    assert!(xml.contains("skipped=\"4\""), "{xml}");
    assert_eq!(
        xml.matches("<skipped message=\"needs a running VM, see check 1\"/>")
            .count(),
        4,
        "{xml}"
    );
}
