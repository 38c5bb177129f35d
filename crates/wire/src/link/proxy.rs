//! An HTTP proxy on the way out: `HTTPS_PROXY` / `NO_PROXY` as curl reads them, and the
//! `CONNECT` tunnel through which the TLS connection to shore runs.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::count::Counted;
use super::{LinkClient, LinkError};

/// Longest proxy answer head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An HTTP proxy reached with `CONNECT`.
#[derive(Debug, Clone)]
pub(super) struct Proxy {
    pub(super) addr: String,
    pub(super) auth: Option<String>,
}

/// The proxy from `HTTPS_PROXY` / `https_proxy` unless `NO_PROXY` / `no_proxy` names `host`.
pub(super) fn proxy_from_env(host: &str) -> Result<Option<Proxy>, LinkError> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    proxy_for(
        host,
        var("HTTPS_PROXY").or_else(|| var("https_proxy")),
        &var("NO_PROXY")
            .or_else(|| var("no_proxy"))
            .unwrap_or_default(),
    )
}

/// The proxy `url` for `host`, unless `no_proxy` (a comma-separated list of hosts and domain
/// suffixes, or `*`) names it.
fn proxy_for(host: &str, url: Option<String>, no_proxy: &str) -> Result<Option<Proxy>, LinkError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let skipped = no_proxy.split(',').map(str::trim).any(|n| {
        let n = n.trim_start_matches('.');
        n == "*" || (!n.is_empty() && (host == n || host.ends_with(&format!(".{n}"))))
    });
    if skipped {
        return Ok(None);
    }
    let rest = url.trim().strip_prefix("http://").ok_or_else(|| {
        LinkError::Url(format!(
            "HTTPS_PROXY={url:?}: give an http:// proxy URL (the tunnel to shore is TLS itself)"
        ))
    })?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (auth, addr) = match authority.rsplit_once('@') {
        Some((cred, addr)) => {
            use base64::Engine;
            (
                Some(base64::engine::general_purpose::STANDARD.encode(cred)),
                addr,
            )
        }
        None => (None, authority),
    };
    let addr = if addr.contains(':') && !addr.ends_with(']') {
        addr.to_string()
    } else {
        format!("{addr}:3128")
    };
    Ok(Some(Proxy { addr, auth }))
}

impl LinkClient {
    pub(super) fn tunnel(&self, p: &Proxy, target: &str) -> Result<TcpStream, LinkError> {
        let sock = self.tcp(&p.addr)?;
        let mut c = Counted::new(sock, self.counters.clone());
        // Round trips: the TCP connection to the proxy is counted by the caller as the
        // connection; the CONNECT and its answer are one more turn, counted as it is read.
        let mut head = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n");
        if let Some(a) = &p.auth {
            head.push_str(&format!("proxy-authorization: Basic {a}\r\n"));
        }
        head.push_str("\r\n");
        let fail = |detail: String| LinkError::Connect {
            to: format!("{target} through the proxy {}", p.addr),
            detail,
        };
        c.write_all(head.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
        // Byte by byte: nothing of the TLS stream that follows may be swallowed.
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if got.len() > MAX_HEAD {
                return Err(fail("the proxy's answer has no end".into()));
            }
            match c.read(&mut b) {
                Ok(0) => return Err(fail("the proxy closed the connection".into())),
                Ok(_) => got.push(b[0]),
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        let line = String::from_utf8_lossy(&got);
        let status = line.split_whitespace().nth(1).unwrap_or_default();
        if status != "200" {
            return Err(fail(format!(
                "the proxy answered {}",
                base::text::clip(line.trim(), 120)
            )));
        }
        Ok(c.into_socket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_proxy_is_used_unless_no_proxy_names_the_host() {
        let p = |url: &str, no: &str| proxy_for("shore.fleet.example", Some(url.into()), no);
        let got = p("http://proxy.ship.lan:8080", "").unwrap().unwrap();
        assert_eq!((got.addr.as_str(), got.auth), ("proxy.ship.lan:8080", None));
        let got = p("http://officer:secret@proxy.ship.lan", "")
            .unwrap()
            .unwrap();
        assert_eq!(got.addr, "proxy.ship.lan:3128", "the usual proxy port");
        assert_eq!(got.auth.as_deref(), Some("b2ZmaWNlcjpzZWNyZXQ="));
        for no in [
            "fleet.example",
            ".fleet.example",
            "*",
            "localhost, shore.fleet.example",
        ] {
            assert!(p("http://proxy:3128", no).unwrap().is_none(), "{no}");
        }
        assert!(
            p("http://proxy:3128", "example.org,leet.example")
                .unwrap()
                .is_some()
        );
        assert!(
            p("https://proxy:3128", "").is_err(),
            "a TLS proxy is not spoken"
        );
        assert!(proxy_for("shore", None, "").unwrap().is_none());
    }
}
