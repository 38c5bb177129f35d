//! `vessel-sync bundle build|inspect|verify`: an operator's spec made into a signed bundle
//! ([`::shore::build`]), a manifest read, a bundle checked completely.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::fail;
use base::clock::Clock;
use base::exit;
use wire::envelope::{self, Keyring, PublicKey, SecretKey, VerifyError};

use super::keys;

/// Bundle subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Build and sign a bundle from a spec file (TOML; see docs/bundle-format.md, "Spec").
    ///
    /// The output is written atomically (a temporary .part name, then renamed), so it is safe to
    /// write straight into an outbound carrier folder.
    Build {
        /// The spec: recipient, sequence, optional not_before/expires, and [[command]] entries.
        #[arg(long, value_name = "SPEC.toml")]
        spec: PathBuf,
        /// The operator's private key (from `vessel-sync keygen`).
        #[arg(long, value_name = "PREFIX.key")]
        key: PathBuf,
        /// Where to write the bundle (conventionally NAME.vsb).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The key's certificate from the fleet root (`key certify`), carried in the bundle;
        /// default: PREFIX.cert beside PREFIX.key, when it exists.
        #[arg(long, value_name = "FILE.cert")]
        cert: Option<PathBuf>,
        /// A course backup the recipients already hold (the previous version): content files
        /// it has are listed but not carried, so only what changed crosses the link. Repeat
        /// for several. Without it, every content file is carried and shore can still leave
        /// out, per vessel, what that vessel holds.
        #[arg(long, value_name = "OLD.mbz")]
        base: Vec<PathBuf>,
        /// Carry course backups as they are (one .mbz member), for agents that predate delta bundles.
        #[arg(long, conflicts_with = "base")]
        whole: bool,
    },
    /// Show a bundle's manifest: issuer, recipient, sequence, validity, commands and files.
    /// This reads the manifest without checking the signature; use `verify` for that.
    Inspect {
        /// The bundle file.
        file: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle completely: signature against the given keys, recipient, validity
    /// window, and every member's size and SHA-256. Exit 0 only when valid; otherwise the
    /// reason is printed and the exit status is 65.
    Verify {
        /// The bundle file.
        file: PathBuf,
        /// Trusted public key files (.pub); repeat for several.
        #[arg(long = "trust", value_name = "PUB", required = true)]
        trust: Vec<PathBuf>,
        /// Also check that the bundle is addressed to this vessel (or the fleet).
        #[arg(long, value_name = "ID")]
        vessel: Option<String>,
    },
}

/// ": ID (NAME), ..." for a non-empty keyring, nothing for an empty one.
pub(super) fn key_names(k: &Keyring) -> String {
    if k.is_empty() {
        return String::new();
    }
    let names: Vec<String> = k.iter().map(|k| format!("{} ({})", k.id, k.name)).collect();
    format!(": {}", names.join(", "))
}

/// Runs a bundle subcommand; returns the exit code.
pub fn run(cmd: BundleCmd, clock: &dyn Clock) -> i32 {
    match cmd {
        BundleCmd::Build {
            spec,
            key: key_path,
            out,
            cert,
            base,
            whole,
        } => {
            let key = match SecretKey::load(&key_path) {
                Ok(k) => k,
                Err(e) => return fail(exit::NOINPUT, e),
            };
            let certificate = match keys::certificate_for(&key_path, &key, cert.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let built = ::shore::build::build(
                ::shore::build::BuildSpec {
                    spec: &spec,
                    key: &key,
                    certificate,
                    base: &base,
                    whole,
                    out: &out,
                },
                clock.now(),
            );
            match built {
                Ok(b) => render_built(&out, &b),
                Err(e) => {
                    eprintln!("vessel-sync: {e}");
                    super::shore::exit_code(&e)
                }
            }
        }
        BundleCmd::Inspect { file, json } => crate::cli::report::inspect(&file, json),
        BundleCmd::Verify {
            file,
            trust,
            vessel,
        } => {
            let mut keys = Vec::new();
            for p in &trust {
                match PublicKey::load(p) {
                    Ok(k) => keys.push(k),
                    Err(e) => return fail(exit::NOINPUT, e),
                }
            }
            let keyring = Keyring::new(keys);
            let limits = envelope::Limits::default();
            // The keys given are trusted outright and as roots: a bundle carrying a
            // certificate by one of them verifies too (its grant is not applied here).
            let resolve = |bytes: &[u8]| {
                envelope::trust::keyring_with_carried(
                    bytes,
                    keyring.iter().cloned().collect(),
                    &keyring,
                )
            };
            let result = envelope::open_with(&file, &resolve, &limits).and_then(|o| {
                if let Some(v) = &vessel {
                    envelope::check_policy(&o.manifest, v, clock.now(), 0)?;
                } else if let Some(exp) = o
                    .manifest
                    .expires
                    .as_deref()
                    .and_then(base::clock::parse_time)
                {
                    if clock.now() > exp {
                        return Err(envelope::Rejection::Expired {
                            expires: base::clock::format_time(exp),
                            now: base::clock::format_time(clock.now()),
                        }
                        .into());
                    }
                }
                let m = o.manifest.clone();
                let signer = o.signer.clone();
                o.extract(None).map(|x| (m, signer, x))
            });
            match result {
                Ok((m, signer, x)) => {
                    println!(
                        "valid: bundle {} signed by {} ({}), for {:?}, sequence {}, {} file(s), {} bytes verified",
                        m.id, signer.id, signer.name, m.recipient, m.sequence, x.members, x.bytes
                    );
                    exit::OK
                }
                Err(VerifyError::Rejected(r)) => fail(
                    exit::DATAERR,
                    format!("{}: INVALID ({}): {r}", file.display(), r.code()),
                ),
                Err(VerifyError::Local(e)) => fail(exit::NOINPUT, e),
            }
        }
    }
}

/// `bundle build`'s report: each backup split by content, a warning for a command type this
/// build does not know, and the bundle written.
fn render_built(out: &Path, b: &::shore::build::Built) -> i32 {
    for n in &b.splits {
        println!(
            "{}: {} bytes whole; by content: {} content file(s), {} carried ({} bytes), {} held by the recipients",
            n.member,
            n.whole_bytes,
            n.content,
            n.carried,
            n.carried_bytes,
            n.content - n.carried
        );
    }
    let m = &b.manifest;
    for c in &m.commands {
        if vessel::commands::find(&c.kind).is_none() {
            eprintln!(
                "vessel-sync: warning: command type {:?} is unknown to this build ({}); agents of the same version will fail that command",
                c.kind,
                vessel::commands::known_kinds().join(", ")
            );
        }
    }
    println!(
        "wrote {} ({} bytes): bundle {} for {:?}, sequence {}, {} command(s), {} file(s), signed by {}",
        out.display(),
        b.bytes,
        m.id,
        m.recipient,
        m.sequence,
        m.commands.len(),
        m.files.len(),
        m.issuer
    );
    exit::OK
}
