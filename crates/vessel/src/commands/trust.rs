//! `trust_key` and `revoke_key`: the fleet root key's commands, changing whose bundles this
//! vessel applies. Only the root may sign them ([`crate::trust`]); they run in the root's
//! stream in sequence order, and their whole effect is in the journal, in the transaction that
//! marks them done.
//!
//! `trust_key` takes one file, an operator certificate (`vessel-sync key certify`), and keeps
//! it: from then on that operator's bundles are accepted within its grant even when they do not
//! carry it. A certificate for a revoked key is refused: a revoked key stays revoked.
//!
//! `revoke_key` takes `key` (the key id), `reason` (words for the audit trail), and optional
//! `last_good`: the last sequence still to be let through, either one integer for every stream
//! of the key or a table by recipient (`{"*" = 12, "mv-aurora" = 40}`); a stream it does not
//! name lets nothing more through. Bundles from the key after that point are refused as
//! `revoked_key`, whether they arrive later or wait in the journal; bundles applied before the
//! revocation arrived stay applied and are listed in the audit trail.

use std::collections::BTreeMap;

use super::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, Result, Revocation};
use wire::envelope::Certificate;

/// The key under which a `last_good` integer is stored: it covers every stream.
pub const ALL_STREAMS: &str = "(all)";

/// The `trust_key` command.
pub struct TrustKey;

impl Command for TrustKey {
    fn kind(&self) -> &'static str {
        "trust_key"
    }

    fn changes_moodle(&self) -> bool {
        false
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let [(name, path)] = ctx.files.as_slice() else {
            return Ok(CommandOutcome::Failed(
                "trust_key takes exactly one file: the operator's certificate (from 'vessel-sync key certify')".into(),
            ));
        };
        let cert = match Certificate::load(path) {
            Ok(c) => c,
            Err(e) => return Ok(CommandOutcome::Failed(format!("{name}: {e}"))),
        };
        let key = match cert.verify(ctx.roots) {
            Ok(k) => k,
            Err(e) => return Ok(CommandOutcome::Failed(format!("{name}: {e}"))),
        };
        if let Some(r) = j.with(|tx| tx.revocation(&key.id))? {
            return Ok(CommandOutcome::Failed(format!(
                "key {} of {} was revoked by {} ({}); a revoked key stays revoked: certify a new key",
                key.id, key.name, r.by_command, r.reason
            )));
        }
        let what = cert.body.summary();
        if j.with(|tx| {
            tx.remember_cert(
                &cert,
                &format!("trust_key command {}", ctx.cmd.cmd_id),
                ctx.now,
            )
        })? {
            ctx.audit(j, "key_trusted", "trust_key", &what)?;
            Ok(CommandOutcome::Done(what))
        } else {
            Ok(CommandOutcome::Done(format!(
                "{what}: this vessel already holds that certificate or a newer one for the key"
            )))
        }
    }
}

/// The `revoke_key` command.
pub struct RevokeKey;

fn last_good(v: Option<&serde_json::Value>) -> std::result::Result<BTreeMap<String, u64>, String> {
    let mut map = BTreeMap::new();
    match v {
        None => {}
        Some(serde_json::Value::Number(n)) => {
            let n = n
                .as_u64()
                .ok_or("last_good must be a non-negative integer or a table of them")?;
            map.insert(ALL_STREAMS.to_string(), n);
        }
        Some(serde_json::Value::Object(o)) => {
            for (k, v) in o {
                let n = v.as_u64().ok_or_else(|| {
                    format!("last_good.{k} must be a non-negative integer (a sequence)")
                })?;
                map.insert(k.clone(), n);
            }
        }
        Some(_) => {
            return Err(
                "last_good must be an integer (every stream) or a table of recipient = sequence"
                    .into(),
            );
        }
    }
    Ok(map)
}

impl Command for RevokeKey {
    fn kind(&self) -> &'static str {
        "revoke_key"
    }

    fn changes_moodle(&self) -> bool {
        false
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let Some(key) = ctx
            .args
            .get("key")
            .and_then(|v| v.as_str())
            .filter(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(CommandOutcome::Failed(
                "argument key must be the key id to revoke (16 hex characters, as 'vessel-sync key show' prints)".into(),
            ));
        };
        let Some(reason) = ctx
            .args
            .get("reason")
            .and_then(|v| v.as_str())
            .filter(|r| !r.trim().is_empty())
        else {
            return Ok(CommandOutcome::Failed(
                "argument reason is required: say why the key is revoked (it is shown in the audit trail and in every refusal)".into(),
            ));
        };
        let last_good = match last_good(ctx.args.get("last_good")) {
            Ok(m) => m,
            Err(e) => return Ok(CommandOutcome::Failed(e)),
        };
        if ctx.roots.get(key).is_some() {
            return Ok(CommandOutcome::Failed(format!(
                "key {key} is a fleet root key of this vessel's config; a root is changed in [keyring] root on board, not revoked by a bundle"
            )));
        }
        let r = Revocation {
            key_id: key.to_string(),
            reason: reason.trim().to_string(),
            last_good,
            by_command: ctx.cmd.cmd_id.clone(),
            revoked_at: ctx.now,
        };
        if !j.with(|tx| tx.revoke_key(&r))? {
            return Ok(CommandOutcome::Done(format!(
                "key {key} was already revoked; the first revocation stands"
            )));
        }
        let points = if r.last_good.is_empty() {
            "nothing more from it is applied".to_string()
        } else {
            let list: Vec<String> = r
                .last_good
                .iter()
                .map(|(k, v)| {
                    if k == ALL_STREAMS {
                        format!("up to sequence {v} in every stream")
                    } else {
                        format!("up to {v} to {k:?}")
                    }
                })
                .collect();
            format!("bundles are still let through {}", list.join(", "))
        };
        let what = format!("key {key} revoked ({}): {points}", r.reason);
        ctx.audit(j, "key_revoked", "revoke_key", &what)?;
        let before = j.with(|tx| tx.applied_after(&r))?;
        for (id, recipient, seq) in &before {
            j.with(|tx| tx.audit(ctx.now, key, Some(id), None, "revoked_key_applied", "applied_before_revocation",
                &format!("bundle {id} (sequence {seq} to {recipient:?}) from key {key} was applied before the revocation arrived, and lies after its revocation point: check what it did")))?;
        }
        Ok(CommandOutcome::Done(if before.is_empty() {
            what
        } else {
            format!(
                "{what}; {} bundle(s) from it after that point were applied before the revocation arrived (see audit)",
                before.len()
            )
        }))
    }
}
