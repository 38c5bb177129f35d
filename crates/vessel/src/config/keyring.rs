//! `[keyring]` and `[limits]`: the keys whose bundles the vessel trusts, and the caps on what
//! one bundle may hold (checked while it is read, before anything is written).
//!
//! `trusted` lists operator keys trusted outright; `root` lists fleet root keys, which trust
//! every operator key they certify and alone may sign `trust_key` and `revoke_key`. Either may
//! be empty, not both.

use std::path::PathBuf;

use base::tomlcheck::Walker;
use toml_edit::Table;
use wire::envelope::{Keyring, Limits, PublicKey};

/// Reads this section of `root`: (operator keys, fleet root keys, limits).
pub(crate) fn parse(w: &mut Walker<'_>, root: &Table) -> (Keyring, Keyring, Limits, u64) {
    let keyring_t = w.sub(root, "keyring");
    if let Some(t) = keyring_t {
        w.only(t, "[keyring]", &["trusted", "root"]);
    }
    let trusted = key_list(w, keyring_t, "trusted");
    let roots = key_list(w, keyring_t, "root");
    if trusted.is_none() && roots.is_none() {
        w.push(
            keyring_t.and_then(Table::span),
            "[keyring] needs trusted (operator .pub files), root (the fleet root .pub file), or both, e.g. root = [\"/etc/vessel-sync/keys/fleet-root.pub\"]".into(),
        );
    } else if trusted.as_ref().is_none_or(|k| k.1 == 0) && roots.as_ref().is_none_or(|k| k.1 == 0) {
        w.push(
            keyring_t.and_then(Table::span),
            "[keyring] lists no key: with no trusted or root key every bundle would be refused"
                .into(),
        );
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
                "content_store_bytes",
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

    (
        Keyring::new(trusted.map(|k| k.0).unwrap_or_default()),
        Keyring::new(roots.map(|k| k.0).unwrap_or_default()),
        limits,
        w.bytes(
            limits_t,
            "limits",
            "content_store_bytes",
            DEFAULT_CONTENT_STORE,
        ),
    )
}

/// The content store's default bound: 2 GiB of course files kept for delta bundles.
pub const DEFAULT_CONTENT_STORE: u64 = 2 << 30;

/// The public keys loaded from the files listed under `[keyring] NAME` and how many entries
/// the list has, or `None` when the entry is absent.
fn key_list(w: &mut Walker<'_>, t: Option<&Table>, name: &str) -> Option<(Vec<PublicKey>, usize)> {
    let item = t.and_then(|t| t.get(name))?;
    let mut keys = Vec::new();
    let Some(arr) = item.as_array() else {
        w.push(
            item.span(),
            format!("keyring.{name} must be a list of file paths"),
        );
        return Some((keys, 1));
    };
    for v in arr.iter() {
        match v.as_str() {
            None => w.push(v.span(), format!("keyring.{name} entries must be strings")),
            Some(s) => {
                let p = PathBuf::from(s);
                let p = if p.is_absolute() { p } else { w.base.join(p) };
                match PublicKey::load(&p) {
                    Ok(k) => keys.push(k),
                    Err(e) => w.push(v.span(), format!("keyring.{name}: {e}")),
                }
            }
        }
    }
    Some((keys, arr.len()))
}
