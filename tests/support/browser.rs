//! A real headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ending in NUL on fds 3 and 4), and a small PNG
//! reader for its screenshots.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

/// The browser binary, if installed.
pub fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// One browser with one page.
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: BufReader<std::fs::File>,
    next: u64,
    session: String,
    /// Every `Network.requestWillBeSent` URL seen.
    pub requests: Vec<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    /// Starts Chromium; `ignore_cert` for the test's private CA on loopback.
    pub fn start(bin: &std::path::Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        // fd 3: commands to the browser; fd 4: its answers.
        let (cmd_r, cmd_w) = pipe();
        let (ans_r, ans_w) = pipe();
        let (cr, aw) = (cmd_r.as_raw_fd(), ans_w.as_raw_fd());
        let mut c = Command::new(bin);
        c.args([
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            "--window-size=1280,1024",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(cr, 3) < 0 || libc::dup2(aw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        drop(cmd_r);
        drop(ans_w);
        let mut b = Self {
            child,
            to: std::fs::File::from(cmd_w),
            from: BufReader::new(std::fs::File::from(ans_r)),
            next: 0,
            session: String::new(),
            requests: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b.call("Network.enable", json!({}));
        b.call("Page.enable", json!({}));
        b
    }

    fn read(&mut self) -> Value {
        let mut buf = Vec::new();
        let n = self.from.read_until(0, &mut buf).unwrap();
        assert!(n > 0, "the browser closed its pipe");
        buf.pop();
        serde_json::from_slice(&buf).unwrap()
    }

    /// Sends a command (to the page once attached) and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = self.session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let m = self.read();
            if m["method"] == "Network.requestWillBeSent" {
                if let Some(u) = m["params"]["request"]["url"].as_str() {
                    self.requests.push(u.to_string());
                }
            }
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise), returning its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Resolves once `cond` (a JS expression) holds in the page, checked on each animation
    /// frame; fails after 20 s.
    pub fn until(&mut self, cond: &str) {
        let ok = self.eval(&format!(
            "new Promise((done) => {{ const t0 = Date.now(); const check = () => {{ let ok = false; try {{ ok = !!({cond}); }} catch (e) {{}} if (ok) done(true); else if (Date.now() - t0 > 20000) done(false); else requestAnimationFrame(check); }}; check(); }})"
        ));
        assert_eq!(ok, true, "the page never reached: {cond}");
    }

    /// A PNG screenshot of the page area (CSS pixels).
    pub fn screenshot(&mut self, x: f64, y: f64, w: f64, h: f64) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}}),
        );
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into
/// (width, height, RGBA pixels).
pub fn decode_png(png: &[u8]) -> (usize, usize, Vec<[u8; 4]>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut w, mut h, mut channels) = (0usize, 0usize, 0usize);
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap()) as usize;
                h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                assert_eq!(data[8], 8, "8-bit samples");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    t => panic!("colour type {t}"),
                };
                assert_eq!(data[12], 0, "not interlaced");
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w * channels;
    let mut out = vec![0u8; h * stride];
    for y in 0..h {
        let filter = raw[y * (stride + 1)];
        let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
        for i in 0..stride {
            let a = if i >= channels {
                out[y * stride + i - channels]
            } else {
                0
            } as i32;
            let b = if y > 0 { out[(y - 1) * stride + i] } else { 0 } as i32;
            let c = if y > 0 && i >= channels {
                out[(y - 1) * stride + i - channels]
            } else {
                0
            } as i32;
            let pred = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => (a + b) / 2,
                4 => {
                    let p = a + b - c;
                    let (pa, pb, pc) = ((p - a).abs(), (p - b).abs(), (p - c).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("PNG filter {f}"),
            };
            out[y * stride + i] = (line[i] as i32 + pred) as u8;
        }
    }
    let px = out
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2], if channels == 4 { p[3] } else { 255 }])
        .collect();
    (w, h, px)
}
