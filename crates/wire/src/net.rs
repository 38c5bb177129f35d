//! The one place that builds HTTP clients and TLS configurations (rustls with the `ring`
//! provider, both directions).
//!
//! Client side: trust comes from a CA file (Debian's bundle by default), optionally narrowed by
//! certificate pins (SHA-256 of the server certificate, hex). With pins and no CA file, the pin
//! alone decides (for a shore with a self-signed certificate); with both, both must pass. The
//! TLS handshake signature is always verified. Server side: a certificate chain and key in PEM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Debian's CA bundle, the default trust for the uplink.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS trust for the uplink.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// PEM file of trusted CA certificates; `None` with pins means pin-only.
    pub ca_file: Option<PathBuf>,
    /// Lower-case hex SHA-256 of acceptable server certificates (DER).
    pub pins: Vec<String>,
}

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, detail: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no PEM certificate in this file"));
    }
    Ok(certs)
}

/// SHA-256 of a certificate, lower-case hex: the value `pin_sha256` takes.
pub fn cert_pin(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

#[derive(Debug)]
struct Pinned {
    inner: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(inner) = &self.inner {
            inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        }
        if !self.pins.is_empty() && !self.pins.contains(&cert_pin(end_entity)) {
            return Err(rustls::Error::General(format!(
                "shore's certificate (sha256 {}) matches none of [uplink] pin_sha256",
                cert_pin(end_entity)
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The uplink's TLS configuration for `trust`: TLS 1.3 only, SHA-256 suites first. Every byte
/// of a handshake is billed on a vessel's link: a TLS 1.2 offer adds cipher suites and
/// extensions to every ClientHello, and a SHA-384 suite makes both `Finished` messages and the
/// resumption binder 16 bytes longer each. Shore (this binary, or a TLS proxy in front of it)
/// speaks TLS 1.3.
pub fn uplink_tls(trust: &Trust) -> Result<rustls::ClientConfig, TlsError> {
    use rustls::crypto::ring::cipher_suite;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let provider = Arc::new(p);
    let verifier = verifier(trust, provider.clone())?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(cfg)
}

/// The certificate verifier for `trust` (CA file, pins or both).
fn verifier(
    trust: &Trust,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let inner = match &trust.ca_file {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in load_certs(path)? {
                roots.add(c).map_err(|e| file_err(path, e))?;
            }
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            )
        }
        None if trust.pins.is_empty() => {
            return Err(TlsError::Config(
                "no CA file and no pin: nothing to trust shore's certificate with".into(),
            ));
        }
        None => None,
    };
    Ok(Arc::new(Pinned {
        inner,
        pins: trust.pins.clone(),
        provider,
    }))
}

/// The client TLS configuration for `trust`.
pub fn client_tls(trust: &Trust) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = verifier(trust, provider.clone())?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(cfg)
}

/// The uplink's HTTP client: rustls, connection reuse, timeouts, no redirects, no proxies from
/// the environment unless `HTTPS_PROXY` is set explicitly.
// This module is the seam where HTTP clients are built (clippy.toml).
#[allow(clippy::disallowed_methods)]
pub fn http_client(
    trust: &Trust,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, TlsError> {
    let tls = client_tls(trust)?;
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(2)
        .tcp_keepalive(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vessel-sync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The client for a Moodle site's web services: plain HTTP for a Moodle on the same host or
/// ship network, HTTPS checked against Debian's CA bundle otherwise. Keep-alive, no redirects
/// (a redirect to a login page must not turn a POST into a GET).
#[allow(clippy::disallowed_methods)]
pub fn moodle_client(
    endpoint: &str,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, TlsError> {
    let builder = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .pool_max_idle_per_host(4)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vessel-sync/", env!("CARGO_PKG_VERSION")));
    let builder = if endpoint.starts_with("https://") {
        builder.use_preconfigured_tls(client_tls(&Trust {
            ca_file: Some(PathBuf::from(SYSTEM_CA_FILE)),
            pins: Vec::new(),
        })?)
    } else {
        builder
    };
    builder.build().map_err(|e| TlsError::Config(e.to_string()))
}

/// Resumable sessions shore remembers (one per vessel in use, a few hundred bytes each).
pub const SESSION_CACHE: usize = 16_384;

/// The shore's server TLS configuration from a PEM chain and a PEM private key.
pub fn server_tls(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| file_err(key_file, e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    // One ticket per handshake, kept in shore's memory (a 32-byte id on the wire, not a
    // stateless ticket of a few hundred bytes): a vessel's next connection resumes without a
    // certificate chain crossing the link. The vessel's client sends its request in the same
    // flight as its `Finished` ([`crate::link`]), so the ticket costs no turn. A shore restart
    // forgets the tickets; each vessel then does one full handshake.
    cfg.send_tls13_tickets = 1;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(cfg)
}

/// Years a generated CA certificate is valid, from a day before it was made.
pub const CA_YEARS: i32 = 20;
/// Years a generated server certificate is valid (make a new one with `shore gen-cert` and the
/// same CA trust before then).
pub const SERVER_YEARS: i32 = 10;

/// The (year, month, day) a day before `now` (day clamped to 28, so that the same day some
/// years later always exists).
fn day_before(now: i64) -> (i32, u8, u8) {
    let text = base::clock::format_time(now.saturating_sub(86_400));
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|t| t.parse::<i32>().ok());
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(y), Some(m), Some(d)) => (y, m.clamp(1, 12) as u8, d.clamp(1, 28) as u8),
        _ => (2026, 1, 1),
    }
}

/// Generates a private CA and a server certificate for `names` (shore without a PKI, the demo
/// and the tests). Returns PEM texts: (CA certificate, server certificate, server key); shore
/// serves the server certificate without the CA.
/// The CA is valid for [`CA_YEARS`], the server certificate for [`SERVER_YEARS`], both from a
/// day before `now` (a vessel's clock may lag).
pub fn generate_server_cert(
    names: &[String],
    now: i64,
) -> Result<(String, String, String), TlsError> {
    let (y, m, d) = day_before(now);
    let err = |e: rcgen::Error| TlsError::Config(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vessel-sync shore CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = rcgen::date_time_ymd(y, m, d);
    ca_params.not_after = rcgen::date_time_ymd(y + CA_YEARS, m, d);
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(err)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + SERVER_YEARS, m, d);
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
    // The server certificate alone: every vessel holds the CA already (its `ca_file`, or a pin
    // of this very certificate), and a CA sent along would add about 400 bytes to every full
    // handshake on a billed link (`bench link`, first poll: 1,620 bytes with it, 1,223 without).
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

    /// `shore gen-cert`'s certificates are valid from a day ago for ten years: not from 1975 to
    /// 4096 (rcgen's default), which no operator would notice to renew or revoke.
    #[test]
    fn a_generated_server_certificate_is_valid_for_ten_years_from_yesterday() {
        let now: u64 = 1_796_000_000;
        let (ca, chain, _) = generate_server_cert(&["shore.example".into()], now as i64).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let name = ServerName::try_from("shore.example").unwrap();
        let at = |t: u64| {
            verifier.verify_server_cert(
                &leaf,
                &[],
                &name,
                &[],
                UnixTime::since_unix_epoch(std::time::Duration::from_secs(t)),
            )
        };
        assert!(at(now).is_ok());
        assert!(at(now + 9 * 365 * 86_400).is_ok());
        assert!(
            at(now + 11 * 365 * 86_400).is_err(),
            "expired after ten years"
        );
        assert!(
            at(now - 3 * 86_400).is_err(),
            "not valid long before it was made"
        );
    }
}
