//! `vessel-sync keygen`, `vessel-sync key ...` (the fleet root's certificates), the certificate
//! `bundle build` carries, and `vessel-sync rotate-key` (a vessel's own key): parsing and
//! printing around `wire::envelope::trust` and `vessel::rotate::rotate_key`.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::fail;
use base::clock::{Clock, format_time, parse_time};
use base::exit;
use wire::envelope::{Certificate, Grant, Keyring, PublicKey, SecretKey};

/// Key subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Certify an operator key with the fleet root key: writes FILE.cert, which says what the
    /// key may sign, for which vessels, until when.
    ///
    /// Vessels whose [keyring] root lists the root's .pub then accept that operator's bundles
    /// without any file changed on board: `bundle build` puts the certificate into every
    /// bundle signed by the key (it looks for KEY.cert beside KEY.key, or takes --cert).
    Certify {
        /// The fleet root's private key (`keygen --root`; kept offline).
        #[arg(long, value_name = "ROOT.key")]
        root: PathBuf,
        /// The operator's public key.
        #[arg(long, value_name = "OPERATOR.pub")]
        key: PathBuf,
        /// Who holds it (shown in status and the audit trail); default: the .pub file's label.
        #[arg(long)]
        name: Option<String>,
        /// Command types it may sign, comma-separated; `*` for every type (trust_key and
        /// revoke_key stay the root's).
        #[arg(long, value_delimiter = ',', default_value = "*")]
        may_sign: Vec<String>,
        /// Vessel ids it may address, comma-separated; `*` for the whole fleet.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        recipients: Vec<String>,
        /// Start of validity (RFC 3339 UTC); default now.
        #[arg(long)]
        not_before: Option<String>,
        /// Days of validity from the start.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write the certificate (never overwritten).
        #[arg(long, value_name = "FILE.cert")]
        out: PathBuf,
    },
    /// Show a key or certificate file: key id, holder and, for a certificate, its grant and
    /// validity. With --root, also check the certificate's signature (exit 65 when it fails).
    Show {
        /// A .pub, .key or .cert file.
        file: PathBuf,
        /// The fleet root's public key, to check a certificate against.
        #[arg(long, value_name = "ROOT.pub")]
        root: Option<PathBuf>,
    },
}

/// Runs a key subcommand.
pub fn run(cmd: KeyCmd, clock: &dyn Clock) -> i32 {
    match cmd {
        KeyCmd::Certify {
            root,
            key,
            name,
            may_sign,
            recipients,
            not_before,
            days,
            out,
        } => {
            let root = match SecretKey::load(&root) {
                Ok(k) => k,
                Err(e) => return fail(exit::NOINPUT, e),
            };
            let key = match PublicKey::load(&key) {
                Ok(k) => k,
                Err(e) => return fail(exit::NOINPUT, e),
            };
            if key.id == root.id {
                return fail(
                    exit::USAGE,
                    "that is the root key itself; certify an operator key (make one with 'vessel-sync keygen')",
                );
            }
            let now = clock.now();
            let start = match not_before.as_deref().map(parse_time) {
                None => now,
                Some(Some(t)) => t,
                Some(None) => {
                    return fail(
                        exit::USAGE,
                        "--not-before must be an RFC 3339 UTC time, e.g. 2027-01-01T00:00:00Z",
                    );
                }
            };
            if days == 0 {
                return fail(exit::USAGE, "--days must be at least 1");
            }
            let grant = Grant {
                may_sign: may_sign
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                recipients: recipients
                    .iter()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                not_before: start,
                not_after: start + i64::from(days) * 86_400,
            };
            if let Some(bad) = grant
                .recipients
                .iter()
                .find(|r| *r != "*" && !wire::valid_vessel_id(r))
            {
                return fail(
                    exit::USAGE,
                    format!("--recipients: {bad:?} is not a vessel id"),
                );
            }
            let holder = name.unwrap_or_else(|| key.name.clone());
            let cert = match Certificate::issue(&root, &key, &holder, &grant, now) {
                Ok(c) => c,
                Err(e) => return fail(exit::USAGE, e),
            };
            if out.exists() {
                return fail(
                    exit::IOERR,
                    format!(
                        "{} already exists; refusing to overwrite a certificate",
                        out.display()
                    ),
                );
            }
            if let Err(e) = base::fsutil::atomic_write(&out, cert.to_text().as_bytes()) {
                return fail(exit::IOERR, format!("{}: {e}", out.display()));
            }
            println!(
                "wrote {}: operator {holder} (key {}) may sign {} for {} from {} until {}, certified by root {}",
                out.display(),
                key.id,
                grant.may_sign.join(", "),
                grant.recipients.join(", "),
                format_time(grant.not_before),
                format_time(grant.not_after),
                root.id
            );
            exit::OK
        }
        KeyCmd::Show { file, root } => show(&file, root.as_deref(), clock.now()),
    }
}

fn show(file: &Path, root: Option<&Path>, now: i64) -> i32 {
    if let Ok(k) = PublicKey::load(file) {
        println!("public key {} ({})", k.id, k.name);
        return exit::OK;
    }
    if let Ok(k) = SecretKey::load(file) {
        println!(
            "private key {} (keep it where it is; never copy it to a vessel)",
            k.id
        );
        return exit::OK;
    }
    let cert = match Certificate::load(file) {
        Ok(c) => c,
        Err(e) => return fail(exit::DATAERR, format!("{e} (nor is it a key file)")),
    };
    let b = &cert.body;
    println!("certificate {}", b.serial);
    println!("operator:   {} (key {})", b.name, b.key_id);
    println!("may sign:   {}", b.may_sign.join(", "));
    println!("recipients: {}", b.recipients.join(", "));
    println!("valid:      {} to {}", b.not_before, b.not_after);
    println!("issued:     {} by root {}", b.issued, b.root);
    if parse_time(&b.not_after).is_some_and(|t| t < now) {
        println!("state:      EXPIRED");
    }
    if let Some(r) = root {
        let root = match PublicKey::load(r) {
            Ok(k) => k,
            Err(e) => return fail(exit::NOINPUT, e),
        };
        match cert.verify(&Keyring::new([root])) {
            Ok(_) => println!("signature:  valid"),
            Err(e) => return fail(exit::DATAERR, format!("signature: {e}")),
        }
    }
    exit::OK
}

/// `vessel-sync keygen`.
pub fn keygen(out: &Path, comment: &str, root: bool, vessel: bool) -> i32 {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return fail(
                exit::NOINPUT,
                format!("directory {} does not exist", parent.display()),
            );
        }
    }
    let key = match SecretKey::generate() {
        Ok(k) => k,
        Err(e) => return fail(exit::SOFTWARE, format!("no randomness available: {e}")),
    };
    let label = if comment.is_empty() {
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        comment.to_string()
    };
    match key.write_pair(out, &label) {
        Ok((k, p)) if root => {
            println!(
                "fleet root private key: {} (mode 0600; keep it offline: it certifies operators and signs trust_key and revoke_key only)",
                k.display()
            );
            println!(
                "fleet root public key:  {} (copy to each vessel, list under [keyring] root)",
                p.display()
            );
            println!("key id:                 {}", key.id);
            exit::OK
        }
        Ok((k, p)) if vessel => {
            println!(
                "private key: {} (mode 0600; this vessel's own: it stays on board, readable by the agent's user only; set it as [uplink] signing_key)",
                k.display()
            );
            println!(
                "public key:  {} (send it ashore: 'vessel-sync shore vessel add ID --pubkey {}')",
                p.display(),
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
            println!("key id:      {}", key.id);
            exit::OK
        }
        Ok((k, p)) => {
            println!(
                "private key: {} (mode 0600; an operator's or shore's key: keep it ashore, never copy it to a vessel; for this vessel's own key use --vessel)",
                k.display()
            );
            println!(
                "public key:  {} (copy to each vessel, list under [keyring] trusted)",
                p.display()
            );
            println!("key id:      {}", key.id);
            exit::OK
        }
        Err(e) => fail(exit::IOERR, e),
    }
}

/// The certificate to carry in a bundle signed by `key`: `--cert`, or `KEY.cert` beside the
/// key file; it must name that key.
pub fn certificate_for(
    key_path: &Path,
    key: &SecretKey,
    explicit: Option<&Path>,
) -> Result<Option<Certificate>, i32> {
    let beside = key_path.with_extension("cert");
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if beside.is_file() => beside,
        None => return Ok(None),
    };
    let cert = Certificate::load(&path).map_err(|e| fail(exit::NOINPUT, e))?;
    if cert.body.key_id != key.id {
        return Err(fail(
            exit::USAGE,
            format!(
                "{} certifies key {}, but the bundle is signed by key {}",
                path.display(),
                cert.body.key_id,
                key.id
            ),
        ));
    }
    Ok(Some(cert))
}

/// `vessel-sync rotate-key`.
pub fn rotate(config: &Path, json: bool, clock: &dyn Clock) -> i32 {
    let cfg = match super::load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = vessel::agent::check_owner(&cfg.paths.state_dir) {
        return fail(exit::NOPERM, e);
    }
    let _work = match super::agent::work_lock(&cfg) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut store = match vessel::store::Store::open(&cfg.paths.database(), &cfg.vessel_id) {
        Ok(s) => s,
        Err(e) => return fail(exit::IOERR, e),
    };
    match vessel::rotate::rotate_key(&mut store, &cfg, clock.now()) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!(
                    "new signing key {} in {} (mode 0600); it signs every batch from {} on",
                    r.new_key,
                    r.path.display(),
                    r.from_seq
                );
                println!(
                    "those batches carry it signed by the old key {} until shore acknowledges one; nothing needs doing ashore",
                    r.old_key
                );
            }
            exit::OK
        }
        Err(e) => fail(exit::TEMPFAIL, e),
    }
}
