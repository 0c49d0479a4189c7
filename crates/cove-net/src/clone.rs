//! A clone on cove networks: its first start resumes a guest whose NICs have the snapshot
//! owner's MACs and addresses. [`crate::prepare_vm`] holds its TAPs (every frame from the guest
//! dropped before the bridge sees it), the post-restore fixup moves each NIC ([`restore_moves`]
//! says where from and to), and [`release_vm`] lets it onto the networks.

use crate::{NetError, dir, lock, nft};
use cove_state::net::{Attachment, HostObject, ObjectKind};
use cove_state::{Paths, Store};

/// A NIC a guest restored from another VM's snapshot must move: it resumed with the
/// snapshot owner's MAC and address on the network, and takes the VM's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicMove {
    /// The MAC the guest resumed with (the owner's on this network).
    pub from_mac: String,
    /// The VM's own MAC, address and TAP on the network.
    pub to: Attachment,
    pub prefix: u8,
    /// The network's gateway when it routes out (NAT), as its DHCP server says.
    pub router: Option<std::net::Ipv4Addr>,
}

/// Lifts [`prepare_vm`]'s hold on the VM's TAPs, once its guest has moved its NICs.
pub fn release_vm(paths: &Paths, vm: &str) -> Result<(), NetError> {
    let mut store = Store::open(paths)?;
    for a in store.attachments(None, Some(vm))? {
        release_tap(&mut store, paths, &a)?;
    }
    Ok(())
}

/// Whether any TAP of the VM is still held ([`prepare_vm`]): its guest's NICs may not have
/// moved yet (a supervisor that died during the post-restore fixup).
pub fn is_held(paths: &Paths, vm: &str) -> Result<bool, NetError> {
    let store = Store::open(paths)?;
    let held: Vec<String> = store
        .attachments(None, Some(vm))?
        .iter()
        .map(|a| nft::hold_table(&a.tap))
        .collect();
    Ok(store
        .objects(None)?
        .iter()
        .any(|o| o.kind == ObjectKind::Nft && held.contains(&o.name)))
}

/// What a VM restored from a snapshot of `owner` must move on each of its `networks` (in
/// NIC order): nothing when the snapshot is its own.
pub fn restore_moves(
    paths: &Paths,
    vm: &str,
    owner: &str,
    networks: &[String],
) -> Result<Vec<NicMove>, NetError> {
    if vm == owner || networks.is_empty() {
        return Ok(Vec::new());
    }
    let store = Store::open(paths)?;
    let mut out = Vec::new();
    for network in networks {
        let net = store.get_network(network)?;
        let from = store.attachments(Some(network), Some(owner))?;
        let Some(from) = from.first() else {
            return Err(NetError::NoSourceNic {
                vm: vm.to_owned(),
                owner: owner.to_owned(),
                network: network.clone(),
            });
        };
        // Attached at create; a VM recorded before its attachment is attached at start.
        let Some(to) = store
            .attachments(Some(network), Some(vm))?
            .into_iter()
            .next()
        else {
            continue;
        };
        out.push(NicMove {
            from_mac: from.mac.clone(),
            to,
            prefix: net.subnet.prefix,
            router: net.nat.then(|| net.subnet.gateway()),
        });
    }
    Ok(out)
}

pub(crate) fn hold_tap(store: &mut Store, paths: &Paths, a: &Attachment) -> Result<(), NetError> {
    let _lock = lock(paths, &a.network)?;
    store.record_object(&HostObject {
        kind: ObjectKind::Nft,
        name: nft::hold_table(&a.tap),
        network: a.network.clone(),
    })?;
    let file = dir(paths, &a.network).join(format!("hold-{}.nft", a.tap));
    nft::hold(&a.tap, &file)
}

pub(crate) fn release_tap(
    store: &mut Store,
    paths: &Paths,
    a: &Attachment,
) -> Result<(), NetError> {
    let table = nft::hold_table(&a.tap);
    let held = store
        .objects(Some(&a.network))?
        .iter()
        .any(|o| o.kind == ObjectKind::Nft && o.name == table);
    if held {
        let _lock = lock(paths, &a.network)?;
        nft::delete(&table)?;
        store.forget_object(ObjectKind::Nft, &table)?;
        let _ = std::fs::remove_file(dir(paths, &a.network).join(format!("hold-{}.nft", a.tap)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> (Paths, Store) {
        let paths = Paths::under(dir);
        let store = Store::open(&paths).unwrap();
        (paths, store)
    }

    #[test]
    fn a_clone_moves_each_nic_from_its_sources_mac_to_its_own_address() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, mut store) = store(dir.path());
        store.create_network("lab", None, true, "cove").unwrap();
        store.create_network("iso", None, false, "cove").unwrap();
        let nets = ["lab".to_owned(), "iso".to_owned()];
        for n in &nets {
            store.attach(n, "db").unwrap();
            store.attach(n, "db2").unwrap();
        }
        // Its own snapshot: nothing to move.
        assert!(restore_moves(&paths, "db", "db", &nets).unwrap().is_empty());
        let moves = restore_moves(&paths, "db2", "db", &nets).unwrap();
        assert_eq!(moves.len(), 2);
        for (m, n) in moves.iter().zip(&nets) {
            let from = &store.attachments(Some(n), Some("db")).unwrap()[0];
            let to = &store.attachments(Some(n), Some("db2")).unwrap()[0];
            assert_eq!((&m.from_mac, &m.to), (&from.mac, to));
            assert_ne!(from.mac, to.mac);
            assert_ne!(from.ip, to.ip);
            assert_eq!(m.prefix, 24);
        }
        // The route out only where the network has one (NAT).
        let lab = store.get_network("lab").unwrap();
        assert_eq!(moves[0].router, Some(lab.subnet.gateway()));
        assert_eq!(moves[1].router, None);
        // A snapshot of a VM that is not on the network: the NIC cannot be found.
        store.attach("lab", "web").unwrap();
        let err = restore_moves(&paths, "web", "other", &nets[..1]).unwrap_err();
        assert!(matches!(err, NetError::NoSourceNic { .. }), "{err}");
    }

    #[test]
    fn a_recorded_hold_on_one_of_its_taps_means_held() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, mut store) = store(dir.path());
        store.create_network("lab", None, true, "cove").unwrap();
        let a = store.attach("lab", "db2").unwrap();
        store.attach("lab", "db").unwrap();
        assert!(!is_held(&paths, "db2").unwrap());
        store
            .record_object(&HostObject {
                kind: ObjectKind::Nft,
                name: nft::hold_table(&a.tap),
                network: "lab".into(),
            })
            .unwrap();
        assert!(is_held(&paths, "db2").unwrap());
        assert!(!is_held(&paths, "db").unwrap());
    }
}
