//! TLS between the docker-mode executor and a container on a remote engine (docs/containers.md §3):
//! the executor makes a self-signed certificate per container, passes certificate and key in
//! through the engine API (`KINITRO_ENV_TLS_CERT`/`_KEY`), and trusts exactly that certificate when
//! it connects — no CA, so nothing else can impersonate the container, and the token and each
//! task's `sim_seed` never cross the network in clear.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A container's certificate and key, PEM.
#[derive(Clone)]
pub struct ContainerTls {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (secret).
    pub key_pem: String,
}

impl std::fmt::Debug for ContainerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerTls").finish_non_exhaustive()
    }
}

/// A fresh self-signed certificate for the given host names and addresses.
pub fn generate(names: &[String]) -> Result<ContainerTls, String> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    Ok(ContainerTls {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificate(pem: &str) -> Result<CertificateDer<'static>, String> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("invalid certificate: {e}"))
}

/// The server side: serves `cert_pem` with `key_pem`.
pub fn server_config(cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, String> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("invalid private key: {e}"))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![certificate(cert_pem)?], key)
        .map_err(|e| format!("cannot use the certificate: {e}"))
}

/// The client side: trusts exactly the certificate `cert_pem` (pinned), whatever name it is
/// reached by.
pub fn pinned_client_config(cert_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let pinned = Pinned {
        cert: certificate(cert_pem)?,
        provider: provider(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An awc client that reaches one container: plain HTTP, or TLS pinned to its certificate. Its
/// connections are not capped: every evaluation a container runs holds one for the whole episode,
/// and awc's default cap of 100 would leave slots idle (with a 20 ms miner it halved the episode
/// rate of a 256-slot container in benches/docker.sh).
pub fn client(cert_pem: Option<&str>, timeout: std::time::Duration) -> Result<awc::Client, String> {
    let builder = awc::Client::builder().timeout(timeout);
    let connector = awc::Connector::new().limit(0);
    Ok(match cert_pem {
        None => builder.connector(connector).finish(),
        Some(pem) => builder
            .connector(connector.rustls_0_23(pinned_client_config(pem)?))
            .finish(),
    })
}

/// Accepts exactly one certificate (signatures still checked by the provider).
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the certificate this executor made for the container".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pinned_certificate_is_trusted() {
        let a = generate(&["127.0.0.1".into()]).unwrap();
        let b = generate(&["127.0.0.1".into()]).unwrap();
        assert!(server_config(&a.cert_pem, &a.key_pem).is_ok());
        assert!(server_config(&a.cert_pem, "not a key").is_err());
        let pinned = Pinned {
            cert: certificate(&a.cert_pem).unwrap(),
            provider: provider(),
        };
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let check = |pem: &str| {
            pinned
                .verify_server_cert(&certificate(pem).unwrap(), &[], &name, &[], UnixTime::now())
                .is_ok()
        };
        assert!(check(&a.cert_pem));
        assert!(
            !check(&b.cert_pem),
            "another self-signed certificate is refused"
        );
        assert!(
            !format!("{a:?}").contains("PRIVATE"),
            "the key is never printed"
        );
    }
}
