//! TLS for remote peers (rustls with the `ring` provider), as a bridge: the
//! encrypted TCP stream is pumped by its own task into one end of a Unix
//! socket pair, and the other end becomes an ordinary [`Stream`], so the
//! framed reader and batched writer stay the same for every transport.
//!
//! The daemon side requires (or accepts) a client certificate signed by the
//! configured CA and reports the certificate's common name; the client side
//! verifies the daemon against its CA and may present its own certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Stream;

/// Why a TLS configuration could not be built or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {why}", path.display())]
    Pem { path: PathBuf, why: String },
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |why: String| TlsError::Pem { path: path.to_owned(), why };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::Pem { path: path.to_owned(), why: e.to_string() })
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's end of a TLS connection.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The daemon's side.
pub struct TlsServer {
    acceptor: TlsAcceptor,
}

/// What the daemon learns from a TLS handshake.
pub struct Accepted {
    pub stream: Stream,
    /// The common name of the client's verified certificate, if it sent one.
    pub common_name: Option<String>,
}

impl TlsServer {
    /// `cert` and `key` identify the daemon; with `client_ca`, clients are
    /// verified against it, and with `require_client_cert` one without a
    /// certificate is refused in the handshake.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
        require_client_cert: bool,
    ) -> Result<Self, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let verifier = if require_client_cert { verifier } else { verifier.allow_unauthenticated() };
                builder
                    .with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
            }
            None if require_client_cert => {
                return Err(TlsError::Config(
                    "client certificates are required but no client_ca is set".into(),
                ))
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self { acceptor: TlsAcceptor::from(Arc::new(config)) })
    }

    /// Performs the handshake on an accepted TCP connection.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, TlsError> {
        let (tls, common_name) = self.handshake(tcp).await?;
        Ok(Accepted { stream: bridge(tls).map_err(TlsError::Handshake)?, common_name })
    }

    /// The handshake alone, for a server that reads the encrypted stream
    /// itself (the HTTP gateway): the stream and the common name of the
    /// client's verified certificate, if it sent one.
    pub async fn handshake(&self, tcp: TcpStream) -> Result<(ServerStream, Option<String>), TlsError> {
        tcp.set_nodelay(true).map_err(TlsError::Handshake)?;
        let tls = self.acceptor.accept(tcp).await.map_err(TlsError::Handshake)?;
        let common_name = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| common_name(cert.as_ref()));
        Ok((tls, common_name))
    }
}

/// The client's side.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl TlsClient {
    /// Trusts daemons whose certificate `ca` signed; presents `identity`
    /// (certificate, key) when given.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots(ca)?);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .map_err(|e| TlsError::Config(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self { connector: TlsConnector::from(Arc::new(config)) })
    }

    /// Connects to `addr` (`HOST:PORT`) and verifies the daemon as `HOST`.
    pub async fn connect(&self, addr: &str) -> Result<Stream, TlsError> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host).trim_matches(['[', ']']);
        let name =
            ServerName::try_from(host.to_owned()).map_err(|e| TlsError::Config(format!("{host}: {e}")))?;
        let tcp = TcpStream::connect(addr).await.map_err(TlsError::Handshake)?;
        tcp.set_nodelay(true).map_err(TlsError::Handshake)?;
        let tls = self.connector.connect(name, tcp).await.map_err(TlsError::Handshake)?;
        bridge(tls).map_err(TlsError::Handshake)
    }
}

/// Pumps `io` into one end of a socket pair and returns the other end.
fn bridge<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(mut io: S) -> std::io::Result<Stream> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    theirs.set_nonblocking(true)?;
    let mut ours = tokio::net::UnixStream::from_std(ours)?;
    tokio::spawn(async move {
        let _ = tokio::io::copy_bidirectional(&mut io, &mut ours).await;
    });
    Stream::from_unix(tokio::net::UnixStream::from_std(theirs)?)
}

/// The subject common name (OID 2.5.4.3) of a DER certificate. Total on any
/// input: a malformed certificate yields `None`.
pub fn common_name(der: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (_, certificate, _) = tlv(der)?;
    let (_, tbs, _) = tlv(certificate)?;
    let mut fields = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    if fields.first() == Some(&0xa0) {
        fields = tlv(fields)?.2;
    }
    for _ in 0..4 {
        fields = tlv(fields)?.2;
    }
    let (_, mut subject, _) = tlv(fields)?;
    while !subject.is_empty() {
        let (_, rdn, rest) = tlv(subject)?;
        subject = rest;
        let (_, attribute, _) = tlv(rdn)?;
        let (tag, oid, value) = tlv(attribute)?;
        if tag == 0x06 && oid == CN {
            let (_, text, _) = tlv(value)?;
            return std::str::from_utf8(text).ok().map(str::to_owned);
        }
    }
    None
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_refuses_truncated_and_oversized_lengths() {
        assert_eq!(tlv(&[0x30, 0x02, 1, 2, 3]), Some((0x30, &[1u8, 2][..], &[3u8][..])));
        assert_eq!(tlv(&[0x30, 0x05, 1]), None);
        assert_eq!(tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(tlv(&[0x30]), None);
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = common_name(&bytes);
        }
    }
}
