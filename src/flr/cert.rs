//! The session's own TLS identity: a fresh key pair and a self-signed
//! certificate whose names are the addresses the browser will use, made
//! when the session starts and never written to disk. The operator checks
//! the certificate by its SHA-256 fingerprint (what a browser's certificate
//! viewer shows), and a browser can be told to trust exactly this key by the
//! SHA-256 of its SubjectPublicKeyInfo (Chromium's
//! `--ignore-certificate-errors-spki-list`).

use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;

/// A session's certificate and key, ready to serve.
pub struct SessionCert {
    /// What rustls serves.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate, PEM, for an operator who wants to pin it.
    pub pem: String,
    /// SHA-256 of the certificate's DER, as `AB:CD:…`.
    pub fingerprint: String,
    /// SHA-256 of the SubjectPublicKeyInfo, base64.
    pub spki_sha256: String,
}

impl SessionCert {
    /// A new key pair and a certificate for `names` (DNS names or IP
    /// addresses; at least one).
    pub fn generate(names: &[String]) -> Result<SessionCert, String> {
        if names.is_empty() {
            return Err("a session certificate needs at least one name".into());
        }
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .map_err(|e| format!("certificate names {names:?}: {e}"))?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "skiff file-level recovery session",
        );
        // Valid from a little before now (clock skew) for a day at most: a
        // session's ttl is capped below that.
        let now = time_now();
        params.not_before = now - std::time::Duration::from_secs(300);
        params.not_after = now + std::time::Duration::from_secs(86_400);
        let key = rcgen::KeyPair::generate().map_err(|e| format!("key pair: {e}"))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("self-signed certificate: {e}"))?;
        let der = cert.der().to_vec();
        let fingerprint = digest::digest(&digest::SHA256, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let spki_sha256 = base64::engine::general_purpose::STANDARD
            .encode(digest::digest(&digest::SHA256, &key.public_key_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key_der)
            .map_err(|e| format!("TLS certificate: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(SessionCert {
            config: Arc::new(config),
            pem: cert.pem(),
            fingerprint,
            spki_sha256,
        })
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_session_has_its_own_key() {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let a = SessionCert::generate(&names).unwrap();
        let b = SessionCert::generate(&names).unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_ne!(a.spki_sha256, b.spki_sha256);
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
        assert!(a.pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(SessionCert::generate(&[]).is_err());
    }
}
