//! `-u USER` resolution from /etc/passwd and /etc/group. Written by hand because the agent is a
//! static glibc binary, where getpwnam() and friends (NSS) do not work.

use std::path::Path;

/// Who to run a command as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
    pub shell: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn passwd(root: &Path) -> Vec<PasswdEntry> {
    let text = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members) from /etc/group.
fn groups(root: &Path) -> Vec<(String, u32, Vec<String>)> {
    let text = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves `name`, `uid`, `name:group` or `uid:gid` against the files under `root`.
pub fn resolve(spec: &str, root: &Path) -> Result<User, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw = passwd(root);
    let entry = pw.iter().find(|e| e.name == u).or_else(|| {
        u.parse::<u32>()
            .ok()
            .and_then(|id| pw.iter().find(|e| e.uid == id))
    });
    let mut user = match (entry, u.parse::<u32>()) {
        (Some(e), _) => User {
            name: e.name.clone(),
            uid: e.uid,
            gid: e.gid,
            groups: vec![],
            home: e.home.clone(),
            shell: e.shell.clone(),
        },
        (None, Ok(uid)) => User {
            name: uid.to_string(),
            uid,
            gid: uid,
            groups: vec![],
            home: "/".into(),
            shell: "/bin/sh".into(),
        },
        (None, Err(_)) => {
            return Err(format!(
                "no user {u:?} in /etc/passwd of the guest; use a numeric uid or add the user to the image"
            ));
        }
    };
    let grp = groups(root);
    if let Some(g) = g {
        user.gid = match grp.iter().find(|(n, _, _)| n == g) {
            Some((_, gid, _)) => *gid,
            None => g.parse().map_err(|_| {
                format!("no group {g:?} in /etc/group of the guest; use a numeric gid")
            })?,
        };
    }
    user.groups.push(user.gid);
    for (_, gid, members) in &grp {
        if members.contains(&user.name) && !user.groups.contains(gid) {
            user.groups.push(*gid);
        }
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile_lite::Dir {
        let d = tempfile_lite::Dir::new();
        std::fs::create_dir_all(d.0.join("etc")).unwrap();
        std::fs::write(
            d.0.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000::/home/bob:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(
            d.0.join("etc/group"),
            "root:x:0:\nbob:x:1000:\nwheel:x:10:bob,alice\n",
        )
        .unwrap();
        d
    }

    /// A throwaway directory; the agent keeps its dependency list minimal, so no tempfile crate.
    mod tempfile_lite {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "cove-agent-users-{}-{}",
                    std::process::id(),
                    cove_proto::fresh_nonce()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn resolves_names_ids_and_groups() {
        let r = root();
        let bob = resolve("bob", &r.0).unwrap();
        assert_eq!(
            (bob.uid, bob.gid, bob.groups.clone(), bob.home.as_str()),
            (1000, 1000, vec![1000, 10], "/home/bob")
        );
        assert_eq!(resolve("1000", &r.0).unwrap().name, "bob");
        assert_eq!(resolve("bob:wheel", &r.0).unwrap().gid, 10);
        assert_eq!(resolve("4242:7", &r.0).unwrap().gid, 7);
        assert!(
            resolve("nobody-here", &r.0)
                .unwrap_err()
                .contains("/etc/passwd")
        );
    }
}
