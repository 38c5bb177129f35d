//! Test support: a throwaway vessel (config, keys, directories), signed bundles built with the
//! library, hand-crafted hostile archives, and the real binary run as a process.

#![allow(dead_code)]

pub mod browser;
pub mod dbs;
pub mod shore;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vessel::store::Store;
use wire::envelope::{self, CommandEntry, Draft, Kind, SecretKey, Source};

pub const VESSEL: &str = "mv-aurora";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vessel-sync")
}

pub fn now() -> i64 {
    base::clock::Clock::now(&base::clock::SystemClock)
}

/// A vessel in a temporary directory.
pub struct Vessel {
    pub dir: tempfile::TempDir,
    pub ops: SecretKey,
    pub rogue: SecretKey,
    pub config: PathBuf,
}

pub struct Options {
    pub settle: &'static str,
    pub gap_timeout: &'static str,
    pub extra: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settle: "0s",
            gap_timeout: "2days",
            extra: "",
        }
    }
}

impl Vessel {
    pub fn new() -> Self {
        Self::with(Options::default())
    }

    pub fn with(o: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ops = SecretKey::from_seed([1u8; 32]);
        let rogue = SecretKey::from_seed([2u8; 32]);
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        ops.write_pair(&dir.path().join("keys/ops"), "ops").unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\n[vessel]\nid = \"{VESSEL}\"\n[paths]\nstate_dir = \"state\"\ninbox = \"inbox\"\n\
                 [keyring]\ntrusted = [\"keys/ops.pub\"]\n[inbox]\nsettle = \"{}\"\ngap_timeout = \"{}\"\n{}",
                o.settle, o.gap_timeout, o.extra
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
        Self {
            dir,
            ops,
            rogue,
            config,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn inbox(&self) -> PathBuf {
        self.path("inbox")
    }

    pub fn quarantine(&self) -> PathBuf {
        self.path("state/quarantine")
    }

    /// Writes a file under the vessel dir and returns its path.
    pub fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    /// Builds a signed bundle under `shore/NAME`.
    pub fn bundle(&self, name: &str, d: Draft) -> PathBuf {
        self.bundle_with(name, d, &self.ops)
    }

    pub fn bundle_with(&self, name: &str, d: Draft, key: &SecretKey) -> PathBuf {
        let out = self.path(&format!("shore/{name}"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        envelope::write_envelope(&d, key, now(), &out).unwrap();
        out
    }

    /// Copies a file into the inbox under `name` the way a well-behaved carrier does: under a
    /// temporary `.part` name, then renamed.
    pub fn drop_in(&self, src: &Path, name: &str) -> PathBuf {
        let to = self.inbox().join(name);
        let tmp = self.inbox().join(format!("{name}.part"));
        std::fs::copy(src, &tmp).unwrap();
        std::fs::rename(&tmp, &to).unwrap();
        to
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("VESSEL_SYNC_FAILPOINT");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// `agent --once`; asserts it exited 0.
    pub fn once(&self) -> String {
        let out = self.run(&["agent", "--once", "--config", self.config.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "agent --once failed: {}\n{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// A journaled command's state and reason, by command id; `None` if there is none.
    pub fn find_command(&self, id: &str) -> Option<(vessel::store::CommandState, String)> {
        self.store()
            .commands()
            .unwrap()
            .into_iter()
            .find(|c| c.cmd_id == id)
            .map(|c| (c.state, c.reason.unwrap_or_default()))
    }

    pub fn store(&self) -> Store {
        Store::open_readonly(&self.path("state/journal.db")).unwrap()
    }

    /// The quarantine reason file of `name`, if any.
    pub fn reason(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.quarantine().join(format!("{name}.reason.txt"))).ok()
    }

    pub fn inbox_names(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.inbox())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Audit rows of one event kind: (bundle_id, command_id, outcome, detail).
    pub fn audit(&self, event: &str) -> Vec<(Option<String>, Option<String>, String, String)> {
        let mut rows = Vec::new();
        self.store()
            .for_each_audit(0, Some(event), |e| {
                rows.push((e.bundle_id, e.command_id, e.outcome, e.detail));
                Ok(())
            })
            .unwrap()
            .unwrap();
        rows
    }
}

pub fn cmd(kind: &str, id: &str, args: serde_json::Value, files: &[&str]) -> CommandEntry {
    CommandEntry {
        id: id.into(),
        kind: kind.into(),
        args: args.as_object().cloned().unwrap_or_default(),
        files: files.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn draft(
    recipient: &str,
    sequence: u64,
    commands: Vec<CommandEntry>,
    files: Vec<(&str, Source)>,
) -> Draft {
    Draft {
        kind: Kind::Commands,
        sender: "test".into(),
        recipient: recipient.into(),
        sequence,
        not_before: None,
        expires: None,
        commands,
        files: files.into_iter().map(|(n, s)| (n.to_string(), s)).collect(),
        id: None,
    }
}

/// A one-command ack bundle draft.
pub fn ack(sequence: u64, acked: u64) -> Draft {
    draft(
        VESSEL,
        sequence,
        vec![cmd("ack", "", serde_json::json!({"acked_seq": acked}), &[])],
        vec![],
    )
}

/// A one-command set_mapping draft with the given CSV text.
pub fn mapping(sequence: u64, csv: &str) -> Draft {
    draft(
        VESSEL,
        sequence,
        vec![cmd(
            "set_mapping",
            "",
            serde_json::json!({}),
            &["files/mapping.csv"],
        )],
        vec![("files/mapping.csv", Source::Bytes(csv.as_bytes().to_vec()))],
    )
}

/// Every member of an envelope: (name, type flag, data).
pub fn members(bundle: &Path) -> Vec<(Vec<u8>, u8, Vec<u8>)> {
    // A test reads the bundle it made, to check its members: no bound needed.
    #[allow(clippy::disallowed_methods)]
    let raw = zstd::decode_all(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= raw.len() {
        let h = &raw[pos..pos + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name: Vec<u8> = h[..100].iter().copied().take_while(|b| *b != 0).collect();
        let size_txt: String = h[124..136]
            .iter()
            .map(|b| *b as char)
            .filter(|c| c.is_digit(8))
            .collect();
        let size = usize::from_str_radix(&size_txt, 8).unwrap();
        let data = raw[pos + 512..pos + 512 + size].to_vec();
        out.push((name, h[156], data));
        pos += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// One raw ustar member for hand-made archives.
pub struct Raw {
    pub name: Vec<u8>,
    pub kind: u8,
    pub link: Vec<u8>,
    pub data: Vec<u8>,
    /// Size written in the header (defaults to data length).
    pub size: Option<u64>,
}

impl Raw {
    pub fn file(name: &[u8], data: &[u8]) -> Self {
        Self {
            name: name.to_vec(),
            kind: b'0',
            link: vec![],
            data: data.to_vec(),
            size: None,
        }
    }
}

/// A ustar header built byte by byte, so that tests can write what no well-behaved tar writer
/// would: `..`, absolute paths, links, devices.
pub fn header(name: &[u8], size: u64, kind: u8, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let s = format!("{size:011o}");
    h[124..135].copy_from_slice(s.as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    let c = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(c.as_bytes());
    h
}

/// A zstd-compressed tar of raw members, plus `trailer` extra bytes after the end marker.
pub fn craft(members: &[Raw], trailer: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    for m in members {
        raw.extend_from_slice(&header(
            &m.name,
            m.size.unwrap_or(m.data.len() as u64),
            m.kind,
            &m.link,
        ));
        raw.extend_from_slice(&m.data);
        let pad = (512 - m.data.len() % 512) % 512;
        raw.extend(std::iter::repeat_n(0u8, pad));
    }
    raw.extend_from_slice(&[0u8; 1024]);
    raw.extend_from_slice(trailer);
    zstd::encode_all(&raw[..], 3).unwrap()
}

/// The signed manifest and signature of a real bundle, as raw members to reuse.
pub fn signed_head(bundle: &Path) -> (Raw, Raw) {
    let m = members(bundle);
    (Raw::file(&m[0].0, &m[0].2), Raw::file(&m[1].0, &m[1].2))
}

/// A spawned agent that is killed when the test ends, even by a panic, so that no daemon
/// outlives its test.
pub struct Daemon(pub std::process::Child);

impl Daemon {
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.stdout(std::process::Stdio::null()).spawn().unwrap())
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.0.id() as i32, sig);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
