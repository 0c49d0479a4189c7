//! JUnit XML for CI systems: one `<testsuite>` per VM, one `<testcase>` per check, a
//! `<failure>` with the message and the evidence, `<skipped>` for checks not run.

use crate::report::{Report, Status};
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// The report as a JUnit XML document.
pub fn to_junit(report: &Report) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    // Writing into a Vec cannot fail; the results are ignored for that reason.
    let _ = write(&mut w, report);
    let mut xml = String::from_utf8(w.into_inner()).unwrap_or_default();
    xml.push('\n');
    xml
}

fn write(w: &mut Writer<Vec<u8>>, r: &Report) -> std::io::Result<()> {
    let secs = |d: std::time::Duration| format!("{:.3}", d.as_secs_f64());
    let (tests, failures, skipped) = (
        r.total.to_string(),
        r.failed.to_string(),
        r.skipped.to_string(),
    );
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let suites_name = clean(&format!("cove test {}", r.vm));
    w.write_event(Event::Start(BytesStart::new("testsuites").with_attributes(
        [
            ("name", suites_name.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("skipped", skipped.as_str()),
            ("time", secs(r.duration).as_str()),
        ],
    )))?;
    let vm = clean(&r.vm);
    w.write_event(Event::Start(BytesStart::new("testsuite").with_attributes(
        [
            ("name", vm.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", "0"),
            ("skipped", skipped.as_str()),
            ("time", secs(r.duration).as_str()),
        ],
    )))?;
    let classname = format!("cove.{vm}");
    for c in &r.checks {
        let name = clean(&format!("{}. {}", c.number, c.name));
        let case = BytesStart::new("testcase").with_attributes([
            ("name", name.as_str()),
            ("classname", classname.as_str()),
            ("time", secs(c.duration).as_str()),
        ]);
        match (c.status, &c.failure) {
            (Status::Pass, _) | (Status::Fail, None) => w.write_event(Event::Empty(case))?,
            (Status::Fail, Some(f)) => {
                w.write_event(Event::Start(case))?;
                let message = clean(&match &f.cause {
                    Some(cause) => format!("{} — likely cause: {cause}", f.message),
                    None => f.message.clone(),
                });
                w.write_event(Event::Start(
                    BytesStart::new("failure")
                        .with_attributes([("message", message.as_str()), ("type", c.kind)]),
                ))?;
                let evidence = clean(&f.evidence_lines().join("\n"));
                w.write_event(Event::Text(BytesText::new(&evidence)))?;
                w.write_event(Event::End(BytesEnd::new("failure")))?;
                w.write_event(Event::End(BytesEnd::new("testcase")))?;
            }
            (Status::Skip, _) => {
                w.write_event(Event::Start(case))?;
                let why = clean(c.detail.as_deref().unwrap_or("not run"));
                w.write_event(Event::Empty(
                    BytesStart::new("skipped").with_attributes([("message", why.as_str())]),
                ))?;
                w.write_event(Event::End(BytesEnd::new("testcase")))?;
            }
        }
    }
    w.write_event(Event::End(BytesEnd::new("testsuite")))?;
    w.write_event(Event::End(BytesEnd::new("testsuites")))?;
    Ok(())
}

/// XML 1.0 cannot carry most control characters even escaped (a guest's output may hold
/// terminal escapes), so they are shown as `\u{1b}`-style text; quick-xml escapes the rest.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c.to_string(),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                format!("\\u{{{:x}}}", c as u32)
            }
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn control_characters_become_visible_text() {
        assert_eq!(clean("a\x1b[0mb\tc\n"), "a\\u{1b}[0mb\tc\n");
    }
}
