//! The vessel registry's operator commands: `shore vessel add|rekey|revoke`, and the tokens
//! vessels authenticate with.

use std::io::Write;
use std::path::Path;

use base::exit;
use wire::envelope::PublicKey;

use crate::{ShoreConfig, token_hash};

/// Generates a random token (32 bytes, URL-safe base64).
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

fn write_private(path: &Path, data: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            format!(
                "{}: {e} (it is never overwritten; remove it first)",
                path.display()
            )
        })?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `shore vessel add`.
pub fn vessel_add(cfg: &ShoreConfig, id: &str, pubkey: &Path, token_out: &Path, now: i64) -> i32 {
    let run = || -> Result<String, String> {
        if !wire::valid_vessel_id(id) {
            return Err(format!("{id:?} is not a valid vessel id"));
        }
        let text =
            std::fs::read_to_string(pubkey).map_err(|e| format!("{}: {e}", pubkey.display()))?;
        let key = PublicKey::parse(&text, pubkey).map_err(|e| e.to_string())?;
        let token = new_token()?;
        write_private(token_out, &format!("{token}\n"))?;
        let db = cfg.open()?;
        db.add_vessel(id, &token_hash(&token), text.trim(), &key.id, now)
            .map_err(|e| e.to_string())?;
        Ok(key.id)
    };
    match run() {
        Ok(key_id) => {
            println!(
                "vessel {id} registered (key {key_id}); its token is in {} (mode 0600): copy it to the vessel as [uplink] token_file",
                token_out.display()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `shore vessel rekey`.
pub fn vessel_rekey(cfg: &ShoreConfig, id: &str, pubkey: &Path, now: i64) -> i32 {
    let run = || -> Result<Option<(String, String)>, String> {
        let text =
            std::fs::read_to_string(pubkey).map_err(|e| format!("{}: {e}", pubkey.display()))?;
        let key = PublicKey::parse(&text, pubkey).map_err(|e| e.to_string())?;
        let db = cfg.open()?;
        let Some(before) = db.vessel(id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if !db
            .rekey_vessel(id, text.trim(), &key.id, now)
            .map_err(|e| e.to_string())?
        {
            return Ok(None);
        }
        Ok(Some((before.key_id, key.id)))
    };
    match run() {
        Ok(Some((old, new))) => {
            tracing::info!(vessel = id, old_key = %old, new_key = %new, "vessel rekeyed by an operator");
            println!(
                "vessel {id}: key {new} is now its only key; batches signed by {old} or any earlier key are refused from now on"
            );
            exit::OK
        }
        Ok(None) => {
            eprintln!("error: no vessel {id:?} (see 'vessel-sync shore vessel list')");
            exit::DATAERR
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}

/// `shore vessel revoke`.
pub fn vessel_revoke(cfg: &ShoreConfig, id: &str, now: i64) -> i32 {
    match cfg
        .open()
        .and_then(|db| db.revoke_vessel(id, now).map_err(|e| e.to_string()))
    {
        Ok(true) => {
            println!("vessel {id} revoked: its token and key are refused from now on");
            exit::OK
        }
        Ok(false) => {
            eprintln!("error: no active vessel {id:?} (see 'vessel-sync shore vessel list')");
            exit::DATAERR
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::FAILURE
        }
    }
}
