//! `[keyring]` and `[limits]`: the operator keys whose bundles the vessel trusts, and the caps
//! on what one bundle may hold (checked while it is read, before anything is written).

use std::path::PathBuf;

use base::tomlcheck::Walker;
use toml_edit::Table;
use wire::envelope::{Keyring, Limits, PublicKey};

/// Reads this section of `root`.
pub(crate) fn parse(w: &mut Walker<'_>, root: &Table) -> (Keyring, Limits) {
    let keyring_t = w.sub(root, "keyring");
    if let Some(t) = keyring_t {
        w.only(t, "[keyring]", &["trusted"]);
    }
    let mut keys = Vec::new();
    match keyring_t.and_then(|t| t.get("trusted")) {
            None => w.push(keyring_t.and_then(Table::span), "[keyring] trusted is required: a list of operator .pub files, e.g. trusted = [\"/etc/vessel-sync/keys/shore-ops.pub\"]".into()),
            Some(item) => match item.as_array() {
                None => w.push(item.span(), "keyring.trusted must be a list of file paths".into()),
                Some(arr) => {
                    if arr.is_empty() {
                        w.push(item.span(), "keyring.trusted is empty: with no trusted key every bundle would be refused".into());
                    }
                    for v in arr.iter() {
                        match v.as_str() {
                            None => w.push(v.span(), "keyring.trusted entries must be strings".into()),
                            Some(s) => {
                                let p = PathBuf::from(s);
                                let p = if p.is_absolute() { p } else { w.base.join(p) };
                                match PublicKey::load(&p) {
                                    Ok(k) => keys.push(k),
                                    Err(e) => w.push(v.span(), format!("keyring.trusted: {e}")),
                                }
                            }
                        }
                    }
                }
            },
        }

    let limits_t = w.sub(root, "limits");
    if let Some(t) = limits_t {
        w.only(
            t,
            "[limits]",
            &[
                "max_bundle_bytes",
                "max_member_bytes",
                "max_members",
                "max_manifest_bytes",
            ],
        );
    }
    let d = Limits::default();
    let limits = Limits {
        max_total_bytes: w.bytes(limits_t, "limits", "max_bundle_bytes", d.max_total_bytes),
        max_member_bytes: w.bytes(limits_t, "limits", "max_member_bytes", d.max_member_bytes),
        max_members: w.count(limits_t, "limits", "max_members", d.max_members),
        max_manifest_bytes: w.bytes(
            limits_t,
            "limits",
            "max_manifest_bytes",
            d.max_manifest_bytes,
        ),
        max_window_log: d.max_window_log,
    };

    (Keyring::new(keys), limits)
}
