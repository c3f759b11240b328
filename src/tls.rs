//! TLS on the public listener (`[server.tls]`), through rustls: certificate and key from PEM files, TLS 1.2
//! or 1.3 as the minimum, HTTP/1.1 by ALPN. The certificate is read again on every reload (SIGHUP), so a
//! renewed certificate is served without a restart.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsConfig, TlsVersion};

/// rustls needs one process-wide crypto provider chosen before the first handshake (ours, or the Redis
/// client's for `rediss://`). Installing it twice is harmless: the second call changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads the certificate chain and key and builds the server side of TLS. The error names the file.
pub fn server_config(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    install_crypto_provider();
    let certs = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("server.tls.cert_file `{}`: {e}", config.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "server.tls.cert_file `{}` holds no certificate",
            config.cert_file.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .map_err(|e| format!("server.tls.key_file `{}`: {e}", config.key_file.display()))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut server = rustls::ServerConfig::builder_with_protocol_versions(versions)
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server.tls: the certificate and key do not fit together: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}
