//! The vessel registry's operator commands: `shore vessel add|rekey|revoke`, and the tokens
//! vessels authenticate with.

use std::io::Write;
use std::path::Path;

use wire::envelope::PublicKey;

use crate::error::{Error, Result};
use crate::{ShoreConfig, token_hash};

/// Generates a random token (32 bytes, URL-safe base64).
pub fn new_token() -> Result<String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Failed(format!("no random bytes for a token: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Error::Usage(format!(
                "{}: {e} (it is never overwritten; remove it first)",
                path.display()
            ))
        })?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(Error::io(path))
}

fn read_key(pubkey: &Path) -> Result<(String, PublicKey)> {
    let text = std::fs::read_to_string(pubkey).map_err(Error::io(pubkey))?;
    let key = PublicKey::parse(&text, pubkey).map_err(|e| Error::Refused(e.to_string()))?;
    Ok((text, key))
}

/// `shore vessel add`: registers vessel `id` with its public key and writes its new token to
/// `token_out` (mode 0600, never overwritten). Returns the key's id.
pub fn vessel_add(
    cfg: &ShoreConfig,
    id: &str,
    pubkey: &Path,
    token_out: &Path,
    now: i64,
) -> Result<String> {
    if !wire::valid_vessel_id(id) {
        return Err(Error::Usage(format!("{id:?} is not a valid vessel id")));
    }
    let (text, key) = read_key(pubkey)?;
    let token = new_token()?;
    write_private(token_out, &format!("{token}\n"))?;
    let db = cfg.open()?;
    db.add_vessel(id, &token_hash(&token), text.trim(), &key.id, now)?;
    Ok(key.id)
}

/// A vessel's keys before and after `shore vessel rekey`.
#[derive(Debug, Clone)]
pub struct Rekeyed {
    /// The key it had.
    pub old_key: String,
    /// Its only key from now on.
    pub new_key: String,
}

/// `shore vessel rekey`: the key at `pubkey` becomes the vessel's only key.
pub fn vessel_rekey(cfg: &ShoreConfig, id: &str, pubkey: &Path, now: i64) -> Result<Rekeyed> {
    let (text, key) = read_key(pubkey)?;
    let db = cfg.open()?;
    let missing = || {
        Error::NotFound(format!(
            "no vessel {id:?} (see 'vessel-sync shore vessel list')"
        ))
    };
    let before = db.vessel(id)?.ok_or_else(missing)?;
    if !db.rekey_vessel(id, text.trim(), &key.id, now)? {
        return Err(missing());
    }
    tracing::info!(vessel = id, old_key = %before.key_id, new_key = %key.id, "vessel rekeyed by an operator");
    Ok(Rekeyed {
        old_key: before.key_id,
        new_key: key.id,
    })
}

/// `shore vessel revoke`: the vessel's token and key are refused from now on.
pub fn vessel_revoke(cfg: &ShoreConfig, id: &str, now: i64) -> Result<()> {
    if cfg.open()?.revoke_vessel(id, now)? {
        Ok(())
    } else {
        Err(Error::NotFound(format!(
            "no active vessel {id:?} (see 'vessel-sync shore vessel list')"
        )))
    }
}
