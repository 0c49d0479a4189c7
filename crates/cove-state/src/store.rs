//! The SQLite store: one file, opened per command, safe for concurrent
//! commands (WAL, a busy timeout and `BEGIN IMMEDIATE` for every write that
//! reads first).

use crate::paths::Paths;
use crate::vm::{VmName, VmRecord, VmState};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state database {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create directory {path}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the state database {path} private (mode 0600)")]
    Protect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a VM named `{0}` already exists; pick another name or `cove delete {0}` first")]
    AlreadyExists(VmName),
    #[error("no VM named `{0}`; `cove list` shows the VMs that exist")]
    NoSuchVm(String),
    #[error("the state database is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("while finishing the change")]
    Finish(#[source] Box<dyn std::error::Error + Send + Sync>),
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS vms (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    manifest TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_name ON images(name, created_at);
"#;

/// The layout of the rows this code writes, kept in SQLite's `user_version`.
/// 1 (or 0, a store from before versions): `machine` and `accel` free text
/// (`accel` could be `""`), no `backend`. 2: typed values and a backend.
const SCHEMA_VERSION: i64 = 2;

/// A version-1 VM record as version 2: the backend is QEMU (the only one
/// there was), an accelerator that is not a known value is forgotten (it is
/// re-chosen at the next start) and so is an unknown machine (the default).
fn upgrade_v1_record(json: &str) -> Result<String, StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("{e} in {json}"));
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(corrupt)?;
    let Some(fields) = value.as_object_mut() else {
        return Err(StoreError::Corrupt(format!("not a JSON object: {json}")));
    };
    fields
        .entry("backend")
        .or_insert_with(|| cove_backend::BackendKind::Qemu.as_str().into());
    let known = |key: &str, ok: &dyn Fn(&str) -> bool| {
        fields.get(key).and_then(|v| v.as_str()).is_some_and(ok)
    };
    let accel_ok = known("accel", &|s| s.parse::<cove_backend::Accel>().is_ok());
    let machine_ok = known("machine", &|s| s.parse::<cove_backend::Machine>().is_ok());
    if !accel_ok {
        fields.insert("accel".into(), serde_json::Value::Null);
    }
    if !machine_ok {
        let default = cove_backend::Machine::default().as_str();
        fields.insert("machine".into(), default.into());
    }
    serde_json::to_string(&value).map_err(corrupt)
}

/// One image row: its content id, its tag, and the builder's manifest (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub id: String,
    pub name: String,
    pub manifest: String,
    pub created_at: i64,
}

pub struct Store {
    pub(crate) conn: Connection,
}

impl Store {
    /// Opens (and creates, on first use) the store and cove's directories.
    pub fn open(paths: &Paths) -> Result<Self, StoreError> {
        for dir in [&paths.state, &paths.vms(), &paths.vm_staging()] {
            crate::files::private_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let path = paths.database();
        let conn = Connection::open(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        // SQLite gives its -wal and -shm files the database's mode.
        crate::files::make_private(&path).map_err(|source| StoreError::Protect {
            path: path.clone(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a record the CLI reported written (a VM created, a pid
        // recorded) survives a host crash too; NORMAL in WAL mode may lose
        // the last commits. Records change a few times per command, so the
        // extra fsync costs nothing a user sees.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::net::SCHEMA)?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    /// Brings the rows of an older store up to [`SCHEMA_VERSION`], once, in
    /// one transaction (a concurrent command waits, then finds it done).
    fn migrate(&mut self) -> Result<(), StoreError> {
        // The common case, a current store, costs one read and no write lock.
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        if version < 2 {
            let rows: Vec<(String, String)> = tx
                .prepare("SELECT name, record FROM vms")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (name, json) in rows {
                let upgraded = upgrade_v1_record(&json)?;
                tx.execute(
                    "UPDATE vms SET record = ?2 WHERE name = ?1",
                    params![name, upgraded],
                )?;
            }
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// Inserts a new VM atomically. `finish` runs inside the write
    /// transaction after the name was found free (typically: move the staged
    /// VM directory into place); if it fails, nothing is recorded.
    pub fn create_vm<E>(
        &mut self,
        record: &VmRecord,
        finish: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), StoreError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM vms WHERE name = ?1",
                [record.name.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists(record.name.clone()));
        }
        finish().map_err(|e| StoreError::Finish(Box::new(e)))?;
        tx.execute(
            "INSERT INTO vms (name, record) VALUES (?1, ?2)",
            params![record.name.as_str(), encode(record)],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn get_vm(&self, name: &str) -> Result<VmRecord, StoreError> {
        self.find_vm(name)?
            .ok_or_else(|| StoreError::NoSuchVm(name.to_owned()))
    }

    pub fn find_vm(&self, name: &str) -> Result<Option<VmRecord>, StoreError> {
        // Cached: `cove list` and reconcile loops read many VMs on one connection.
        self.conn
            .prepare_cached("SELECT record FROM vms WHERE name = ?1")?
            .query_row([name], |r| r.get::<_, String>(0))
            .optional()?
            .map(|json| decode(&json))
            .transpose()
    }

    pub fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT record FROM vms ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|json| decode(&json?)).collect()
    }

    /// Read-modify-write of one VM under the write lock, so concurrent
    /// commands never lose each other's updates.
    pub fn update_vm<T>(
        &mut self,
        name: &str,
        change: impl FnOnce(&mut VmRecord) -> T,
    ) -> Result<(T, VmRecord), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let json: String = tx
            .query_row("SELECT record FROM vms WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::NoSuchVm(name.to_owned()))?;
        let mut record = decode(&json)?;
        let out = change(&mut record);
        tx.execute(
            "UPDATE vms SET record = ?2 WHERE name = ?1",
            params![name, encode(&record)],
        )?;
        tx.commit()?;
        Ok((out, record))
    }

    /// Sets the state, keeping everything else.
    pub fn set_state(&mut self, name: &str, state: VmState) -> Result<VmRecord, StoreError> {
        Ok(self.update_vm(name, |r| r.state = state)?.1)
    }

    pub fn delete_vm(&mut self, name: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM vms WHERE name = ?1", [name])?;
        Ok(())
    }

    pub fn put_image(&mut self, row: &ImageRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO images (id, name, manifest, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![row.id, row.name, row.manifest, row.created_at],
        )?;
        Ok(())
    }

    /// Finds an image by content id, id prefix (at least 8 characters) or tag;
    /// a tag resolves to its newest build.
    pub fn find_image(&self, name_or_id: &str) -> Result<Option<ImageRow>, StoreError> {
        let by_name = self
            .conn
            .query_row(
                "SELECT id, name, manifest, created_at FROM images WHERE name = ?1 \
                 ORDER BY created_at DESC LIMIT 1",
                [name_or_id],
                image_row,
            )
            .optional()?;
        if by_name.is_some() || name_or_id.len() < 8 {
            return Ok(by_name);
        }
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, manifest, created_at FROM images WHERE id LIKE ?1 || '%' \
                 ORDER BY created_at DESC LIMIT 1",
                [name_or_id],
                image_row,
            )
            .optional()?)
    }

    pub fn list_images(&self) -> Result<Vec<ImageRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, manifest, created_at FROM images ORDER BY name, created_at DESC",
        )?;
        let rows = stmt.query_map([], image_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_image(&mut self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM images WHERE id = ?1", [id])?;
        Ok(())
    }
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: r.get(0)?,
        name: r.get(1)?,
        manifest: r.get(2)?,
        created_at: r.get(3)?,
    })
}

// Records are stored as JSON so that adding a field needs no migration;
// serde's defaults fill what older rows lack.
fn encode(record: &VmRecord) -> String {
    serde_json::to_string(record).expect("a VmRecord always serializes")
}

fn decode(json: &str) -> Result<VmRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{e} in {json}")))
}

/// Seconds since the Unix epoch, for record timestamps.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::VmName;

    fn record(name: &str) -> VmRecord {
        VmRecord {
            name: VmName::new(name).unwrap(),
            image_id: "abc".into(),
            image_name: "minimal".into(),
            arch: cove_guest::Arch::Amd64,
            cpus: 1,
            memory_mib: 256,
            state: VmState::Created,
            supervisor_pid: None,
            vmm_pid: None,
            backend: Default::default(),
            accel: None,
            machine: Default::default(),
            ports: vec![],
            data_disks: vec![],
            disk_mounts: Default::default(),
            host_mounts: vec![],
            networks: vec![],
            host_loopback: false,
            last_exit: None,
            agent_answered: false,
            last_error: None,
            created_at: now(),
            started_at: None,
            cloned_from: None,
            restored_from: None,
        }
    }

    #[test]
    fn second_create_of_a_name_fails_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let mut store = Store::open(&paths).unwrap();
        store
            .create_vm(&record("a"), || Ok::<_, std::io::Error>(()))
            .unwrap();
        let mut ran = false;
        let err = store
            .create_vm(&record("a"), || {
                ran = true;
                Ok::<_, std::io::Error>(())
            })
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)));
        assert!(!ran);
    }

    #[test]
    fn failed_finish_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Paths::under(dir.path())).unwrap();
        let err = store.create_vm(&record("b"), || Err(std::io::Error::other("disk full")));
        assert!(err.is_err());
        assert!(store.find_vm("b").unwrap().is_none());
    }

    #[test]
    fn update_changes_only_what_it_touches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Paths::under(dir.path())).unwrap();
        store
            .create_vm(&record("c"), || Ok::<_, std::io::Error>(()))
            .unwrap();
        store.set_state("c", VmState::Running).unwrap();
        let r = store.get_vm("c").unwrap();
        assert_eq!(r.state, VmState::Running);
        assert_eq!(r.memory_mib, 256);
        assert!(matches!(store.get_vm("zz"), Err(StoreError::NoSuchVm(_))));
    }

    /// A store written before records were typed: `accel` was free text
    /// (even `""` after an adoption), there was no backend.
    #[test]
    fn an_old_store_is_migrated_to_typed_records() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(&paths.state).unwrap();
        {
            let conn = Connection::open(paths.database()).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            let mut old = serde_json::to_value(record("old")).unwrap();
            let fields = old.as_object_mut().unwrap();
            fields.remove("backend");
            fields.insert("accel".into(), "".into());
            fields.insert("machine".into(), "q35".into());
            let mut kvm = old.clone();
            kvm["name"] = "kvm".into();
            kvm["accel"] = "kvm".into();
            for r in [old, kvm] {
                conn.execute(
                    "INSERT INTO vms (name, record) VALUES (?1, ?2)",
                    params![r["name"].as_str().unwrap(), r.to_string()],
                )
                .unwrap();
            }
        }
        let store = Store::open(&paths).unwrap();
        let old = store.get_vm("old").unwrap();
        assert_eq!(old.backend, cove_backend::BackendKind::Qemu);
        assert_eq!(old.accel, None);
        assert_eq!(old.machine, cove_backend::Machine::Q35);
        assert_eq!(
            store.get_vm("kvm").unwrap().accel,
            Some(cove_backend::Accel::Kvm)
        );
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // Opening again changes nothing.
        drop(store);
        assert_eq!(Store::open(&paths).unwrap().get_vm("old").unwrap(), old);
    }

    #[test]
    fn image_tag_resolves_to_newest_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Paths::under(dir.path())).unwrap();
        for (id, t) in [("1111111111", 1), ("2222222222", 2)] {
            store
                .put_image(&ImageRow {
                    id: id.into(),
                    name: "minimal".into(),
                    manifest: "{}".into(),
                    created_at: t,
                })
                .unwrap();
        }
        assert_eq!(
            store.find_image("minimal").unwrap().unwrap().id,
            "2222222222"
        );
        assert_eq!(
            store.find_image("11111111").unwrap().unwrap().id,
            "1111111111"
        );
        assert!(store.find_image("nope").unwrap().is_none());
    }
}
