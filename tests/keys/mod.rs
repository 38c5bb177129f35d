//! Keys that change at sea: operator certificates from the fleet root, `trust_key` and
//! `revoke_key` delivered like any bundle, vessel key rotation and operator rekeys ashore, and
//! the chain of progress batches (law 5: only trusted orders; law 1: nothing lost on the way).
//!
//! By idea: [`operators`] (certificates, grants, revocations, shore's checks of operator
//! bundles) and [`rotation`] (vessel keys and the chain of batches). This file holds the fleet
//! and the helpers both use.

mod operators;
mod rotation;

use std::path::{Path, PathBuf};

use crate::support::{VESSEL, Vessel, cmd, draft, now};
use wire::envelope::{
    self, Certificate, CommandEntry, Draft, Extra, Grant, Keyring, PublicKey, SecretKey, Source,
};

const DAY: i64 = 86_400;

pub(super) fn public(k: &SecretKey, name: &str) -> PublicKey {
    PublicKey {
        key: k.key.verifying_key(),
        id: k.id.clone(),
        name: name.into(),
    }
}

/// A fleet: its root, and vessels that trust only that root.
pub(super) struct Fleet {
    root: SecretKey,
}

impl Fleet {
    fn new() -> Self {
        Self {
            root: SecretKey::from_seed([40u8; 32]),
        }
    }

    /// A vessel whose `[keyring]` lists the root and no operator.
    fn vessel(&self) -> Vessel {
        let v = Vessel::new();
        std::fs::write(
            v.path("keys/root.pub"),
            format!("{}\n", public(&self.root, "fleet root").file_text()),
        )
        .unwrap();
        std::fs::write(
            &v.config,
            format!(
                "version = 1\n[vessel]\nid = \"{VESSEL}\"\n[paths]\nstate_dir = \"state\"\ninbox = \"inbox\"\n\
                 [keyring]\nroot = [\"keys/root.pub\"]\n[inbox]\nsettle = \"0s\"\ngap_timeout = \"2days\"\n"
            ),
        )
        .unwrap();
        v
    }

    fn certify(
        &self,
        op: &SecretKey,
        name: &str,
        may_sign: &[&str],
        from: i64,
        to: i64,
    ) -> Certificate {
        let grant = Grant {
            may_sign: may_sign.iter().map(|s| s.to_string()).collect(),
            recipients: vec!["*".into()],
            not_before: from,
            not_after: to,
        };
        Certificate::issue(&self.root, &public(op, name), name, &grant, from).unwrap()
    }
}

/// Writes a bundle signed by `key`, carrying `cert` when given, under the vessel's `shore/`.
pub(super) fn signed(
    v: &Vessel,
    name: &str,
    d: &Draft,
    key: &SecretKey,
    cert: Option<&Certificate>,
) -> PathBuf {
    let out = v.path(&format!("shore/{name}"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let extra = Extra {
        certificate: cert.cloned(),
        ..Default::default()
    };
    envelope::write_envelope_with(d, &extra, key, now(), &out).unwrap();
    out
}

pub(super) fn mapping_cmd(id: &str, n: u32) -> (CommandEntry, (String, Source)) {
    let member = format!("files/map-{id}.csv");
    (
        cmd("set_mapping", id, serde_json::json!({}), &[member.as_str()]),
        (
            member,
            Source::Bytes(format!("kind,legacy_id,moodle_key\ncourse,L{n},C{n}\n").into_bytes()),
        ),
    )
}

/// A bundle of one `set_mapping` command with id `id`.
pub(super) fn mapping(recipient: &str, seq: u64, id: &str, n: u32) -> Draft {
    let (c, (m, s)) = mapping_cmd(id, n);
    let mut d = draft(recipient, seq, vec![c], vec![]);
    d.files.push((m, s));
    d
}

pub(super) fn revoke(seq: u64, key: &str, last_good: serde_json::Value) -> Draft {
    draft(
        VESSEL,
        seq,
        vec![cmd(
            "revoke_key",
            &format!("revoke-{seq}"),
            serde_json::json!({"key": key, "reason": "laptop lost in Rotterdam", "last_good": last_good}),
            &[],
        )],
        vec![],
    )
}

pub(super) fn trust(seq: u64, cert: &Certificate) -> Draft {
    draft(
        VESSEL,
        seq,
        vec![cmd(
            "trust_key",
            &format!("trust-{seq}"),
            serde_json::json!({}),
            &["files/op.cert"],
        )],
        vec![("files/op.cert", Source::Bytes(cert.to_text().into_bytes()))],
    )
}

/// Command ids that took effect.
pub(super) fn applied(v: &Vessel) -> Vec<String> {
    let mut ids: Vec<String> = in_state(v, "done").into_iter().map(|c| c.cmd_id).collect();
    ids.sort();
    ids
}

pub(super) fn in_state(v: &Vessel, state: &str) -> Vec<vessel::store::CommandRow> {
    v.store()
        .commands()
        .unwrap()
        .into_iter()
        .filter(|c| c.state.as_str() == state)
        .collect()
}

pub(super) fn status(v: &Vessel) -> serde_json::Value {
    let out = v.run(&["status", "--json", "--config", v.config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An operator's one-mapping bundle `ID.vsb` (sequence `seq`, `seq` rows), signed with `key`
/// carrying `cert`, delivered.
fn send_mapping(v: &Vessel, seq: u64, id: &str, key: &SecretKey, cert: &Certificate) -> String {
    send(
        v,
        &format!("{id}.vsb"),
        &mapping(VESSEL, seq, id, seq as u32),
        key,
        Some(cert),
    )
}

/// Signs a bundle and delivers it (see [`signed`] and [`deliver`]).
pub(super) fn send(
    v: &Vessel,
    name: &str,
    d: &Draft,
    key: &SecretKey,
    cert: Option<&Certificate>,
) -> String {
    deliver(v, &signed(v, name, d, key, cert))
}

pub(super) fn deliver(v: &Vessel, bundle: &Path) -> String {
    let name = bundle.file_name().unwrap().to_str().unwrap().to_string();
    v.drop_in(bundle, &name);
    v.once()
}
