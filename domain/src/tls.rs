//! TLS between the ledger's nodes and their clients (issue 15), the way CCF does it: a node's
//! certificate is bound to the service identity, so anyone who knows the service public key (the
//! key receipts verify against) can tell an admitted node from an impostor, with no CA and no
//! host names.
//!
//! - A node's certificate is self-signed by its Ed25519 node key and carries the service key's
//!   endorsement of (node id, node key, period) in a private extension ([`ENDORSEMENT_OID`]).
//!   The self-signature proves nothing by itself; the endorsement is what admits the key.
//! - A client ([`ServiceVerifier`]) accepts a server only if that endorsement verifies under the
//!   service key it was given and the period covers the wall clock, and the handshake is signed
//!   by the endorsed key. TLS 1.3 only, Ed25519 only.
//! - Servers ask for no client certificate: nodes sign every raft request with their endorsed
//!   key (`ledger::peer_auth`), gateways, billing and members sign theirs, so the channel is
//!   authenticated both ways while any client can still reach the public endpoints.
//!
//! Revocation is the ledger's record, not the certificate's: a node checks a peer's requests
//! against the revoked list, and an offline client learns of revocations the way receipt
//! verifiers do (`docs/receipts.md`).

use std::sync::Arc;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::codec::{Reader, Writer};
use crate::receipt::Validity;

/// The certificate extension holding the endorsement: a UUID-derived OID (ITU-T X.667, arc
/// 2.25), so no registration is needed. Not critical: other TLS stacks may ignore it.
pub const ENDORSEMENT_OID: &str = "2.25.6204271398317728801";
const ENDORSEMENT_ARCS: [u64; 3] = [2, 25, 6_204_271_398_317_728_801];
/// Ed25519's algorithm identifier (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";
/// The extension's payload: node id, flag, period, signature.
const PAYLOAD_LENGTH: usize = 8 + 1 + 16 + 64;
/// The extension's value is the payload as a DER OCTET STRING: tag 4, then its length, which is
/// under 128 and so fits one byte.
const PAYLOAD_HEADER: [u8; 2] = [0x04, PAYLOAD_LENGTH as u8];
/// HTTP/1.1 is all the ledger's API speaks.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The service key's endorsement of a node key, as a certificate carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endorsement {
    pub node_id: u64,
    pub validity: Option<Validity>,
    pub signature: [u8; 64],
}

/// A server whose certificate the service endorses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndorsedNode {
    pub node_id: u64,
    pub key: [u8; 32],
    pub validity: Option<Validity>,
}

/// Why a certificate does not prove an admitted node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate is not DER X.509: {0}")]
    Malformed(String),
    #[error("the certificate's key is not Ed25519")]
    NotEd25519,
    #[error("the certificate carries no service endorsement (extension {ENDORSEMENT_OID})")]
    NotEndorsed,
    #[error("the certificate's endorsement is malformed: {0}")]
    MalformedEndorsement(String),
    #[error("the certificate's endorsement is not the service key's for node {node_id} and this key")]
    WrongEndorsement { node_id: u64 },
    #[error("node {node_id}'s endorsement is not valid now ({at} ms; period {not_before}..={not_after} ms)")]
    OutsidePeriod { node_id: u64, at: i64, not_before: i64, not_after: i64 },
    #[error("the server is node {actual}, not node {expected}")]
    WrongNode { expected: u64, actual: u64 },
    #[error("node {node_id} is refused: {reason}")]
    Refused { node_id: u64, reason: String },
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

impl Endorsement {
    fn payload(&self) -> Vec<u8> {
        let mut writer = Writer::with_capacity(PAYLOAD_LENGTH);
        writer.u64(self.node_id);
        match self.validity {
            None => writer.u8(0).i64(0).i64(0),
            Some(period) => writer.u8(1).i64(period.not_before).i64(period.not_after),
        };
        writer.fixed(&self.signature);
        writer.finish()
    }

    fn from_payload(payload: &[u8]) -> Result<Self, TlsError> {
        let malformed = |error: crate::codec::DecodeError| TlsError::MalformedEndorsement(error.to_string());
        let mut reader = Reader::new(payload);
        let node_id = reader.u64().map_err(malformed)?;
        let timed = reader.bool("validity").map_err(malformed)?;
        let (not_before, not_after) = (reader.i64().map_err(malformed)?, reader.i64().map_err(malformed)?);
        let signature = reader.array::<64>().map_err(malformed)?;
        reader.finish().map_err(malformed)?;
        let validity = timed.then_some(Validity { not_before, not_after });
        Ok(Endorsement { node_id, validity, signature })
    }
}

/// A node's TLS certificate and private key: self-signed by its node key, carrying `endorsement`.
pub fn node_certificate(
    node_key: &SigningKey,
    endorsement: &Endorsement,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let config = |error: &dyn std::fmt::Display| TlsError::Config(error.to_string());
    let pkcs8 = node_key.to_pkcs8_der().map_err(|error| config(&error))?;
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(|error| config(&error))?;
    let name = format!("wattle-node-{}", endorsement.node_id);
    let mut params = rcgen::CertificateParams::new(vec![name.clone()]).map_err(|error| config(&error))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let content = [&PAYLOAD_HEADER[..], &endorsement.payload()].concat();
    params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(&ENDORSEMENT_ARCS, content));
    let certificate = params.self_signed(&key_pair).map_err(|error| config(&error))?;
    Ok((certificate.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// Reads a certificate's key and endorsement and checks the endorsement under `service_key`.
/// The period is not checked here (see [`ServiceVerifier`]).
pub fn endorsed_node(certificate: &[u8], service_key: &[u8; 32]) -> Result<EndorsedNode, TlsError> {
    let (_, certificate) =
        X509Certificate::from_der(certificate).map_err(|error| TlsError::Malformed(error.to_string()))?;
    let spki = certificate.public_key();
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return Err(TlsError::NotEd25519);
    }
    let key: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().map_err(|_| TlsError::NotEd25519)?;
    let extension = certificate
        .extensions()
        .iter()
        .find(|extension| extension.oid.to_id_string() == ENDORSEMENT_OID)
        .ok_or(TlsError::NotEndorsed)?;
    let payload = extension
        .value
        .strip_prefix(&PAYLOAD_HEADER[..])
        .ok_or_else(|| TlsError::MalformedEndorsement("not an OCTET STRING of the payload's length".into()))?;
    let endorsement = Endorsement::from_payload(payload)?;
    let message = crate::receipt::endorsement_message_for(endorsement.node_id, &key, endorsement.validity);
    crate::verify::verify_signature(service_key, &endorsement.signature, &message)
        .map_err(|_| TlsError::WrongEndorsement { node_id: endorsement.node_id })?;
    Ok(EndorsedNode { node_id: endorsement.node_id, key, validity: endorsement.validity })
}

/// ring, not aws-lc-rs: ring is already built for the gateway's MQTT TLS, and aws-lc-rs would add a
/// CMake build of its own to every cold CI run. (rustls deprecates this constructor only for its
/// lack of post-quantum key exchange.)
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A further check of an endorsed server, `Err(reason)` to refuse it: a node checks its peers
/// against the ledger's revoked list.
pub type NodeCheck = Arc<dyn Fn(&EndorsedNode) -> Result<(), String> + Send + Sync>;

/// Accepts a server only if its certificate is endorsed by the service key, valid now, (when
/// `expect_node` is set) the node the caller meant to reach, and passes `check` when given.
pub struct ServiceVerifier {
    service_key: [u8; 32],
    expect_node: Option<u64>,
    check: Option<NodeCheck>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for ServiceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceVerifier")
            .field("service_key", &hex::encode(self.service_key))
            .field("expect_node", &self.expect_node)
            .field("check", &self.check.is_some())
            .finish()
    }
}

impl ServiceVerifier {
    pub fn new(service_key: [u8; 32], expect_node: Option<u64>) -> Self {
        ServiceVerifier { service_key, expect_node, check: None, provider: provider() }
    }

    /// Refuses, beyond the endorsement, every server `check` refuses.
    pub fn with_check(self, check: NodeCheck) -> Self {
        ServiceVerifier { check: Some(check), ..self }
    }

    /// The check behind [`ServerCertVerifier::verify_server_cert`], at `now_ms` on the wall clock.
    pub fn check(&self, certificate: &[u8], now_ms: i64) -> Result<EndorsedNode, TlsError> {
        let node = endorsed_node(certificate, &self.service_key)?;
        if let Some(period) = node.validity.filter(|period| !period.covers(now_ms)) {
            return Err(TlsError::OutsidePeriod {
                node_id: node.node_id,
                at: now_ms,
                not_before: period.not_before,
                not_after: period.not_after,
            });
        }
        if let Some(expected) = self.expect_node.filter(|expected| *expected != node.node_id) {
            return Err(TlsError::WrongNode { expected, actual: node.node_id });
        }
        if let Some(check) = &self.check {
            check(&node).map_err(|reason| TlsError::Refused { node_id: node.node_id, reason })?;
        }
        Ok(node)
    }
}

impl ServerCertVerifier for ServiceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now_ms = i64::try_from(now.as_secs().saturating_mul(1000)).unwrap_or(i64::MAX);
        self.check(end_entity, now_ms)
            .map(|_| ServerCertVerified::assertion())
            .map_err(|error| rustls::Error::General(error.to_string()))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// A client configuration that trusts exactly the nodes `service_key` endorses (TLS 1.3).
pub fn client_config(service_key: [u8; 32], expect_node: Option<u64>) -> Result<rustls::ClientConfig, TlsError> {
    verifying_config(ServiceVerifier::new(service_key, expect_node))
}

/// A client configuration that trusts the servers `verifier` accepts (TLS 1.3).
pub fn verifying_config(verifier: ServiceVerifier) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config(error.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// A node's server configuration: its endorsed certificate, TLS 1.3, HTTP/1.1.
pub fn server_config(node_key: &SigningKey, endorsement: &Endorsement) -> Result<rustls::ServerConfig, TlsError> {
    let (certificate, key) = node_certificate(node_key, endorsement)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Why a client without a service key cannot reach an `https://` ledger, in the words its user
/// needs (`where`: the flag or variable that gives the key).
pub fn missing_service_key(url: &str, r#where: &str) -> Option<String> {
    url.starts_with("https://").then(|| {
        format!("{url} serves TLS with certificates the ledger's service key endorses: give that key with {where}")
    })
}

/// Parses a service public key given as 64 hex digits (a flag or an environment variable).
pub fn parse_service_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|error| format!("not hex: {error}"))?;
    bytes.try_into().map_err(|bytes: Vec<u8>| format!("{} bytes, not 32", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::endorse_for;

    const PERIOD: Validity = Validity { not_before: 1_000_000, not_after: 2_000_000 };

    fn node(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn endorsement(service: &SigningKey, node_id: u64, key: &SigningKey, validity: Option<Validity>) -> Endorsement {
        let signature = endorse_for(service, node_id, &key.verifying_key().to_bytes(), validity);
        Endorsement { node_id, validity, signature }
    }

    fn certificate(key: &SigningKey, endorsement: &Endorsement) -> Vec<u8> {
        node_certificate(key, endorsement).expect("a certificate").0.to_vec()
    }

    #[test]
    fn a_node_certificate_carries_its_key_and_the_service_endorsement() {
        let (service, key) = (node(1), node(2));
        let signed = endorsement(&service, 3, &key, Some(PERIOD));
        let verifier = ServiceVerifier::new(service.verifying_key().to_bytes(), Some(3));
        let node = verifier.check(&certificate(&key, &signed), 1_500_000).expect("endorsed");
        assert_eq!(node, EndorsedNode { node_id: 3, key: key.verifying_key().to_bytes(), validity: Some(PERIOD) });
        let untimed = endorsement(&service, 3, &key, None);
        assert_eq!(verifier.check(&certificate(&key, &untimed), i64::MAX).expect("endorsed").validity, None);
    }

    #[test]
    fn impostors_expired_nodes_and_the_wrong_node_are_refused() {
        let (service, key, stranger) = (node(1), node(2), node(9));
        let verifier = ServiceVerifier::new(service.verifying_key().to_bytes(), Some(3));
        // Another service's endorsement, or the node's own key posing as the service.
        for signer in [&stranger, &key] {
            let forged = endorsement(signer, 3, &key, Some(PERIOD));
            assert_eq!(
                verifier.check(&certificate(&key, &forged), 1_500_000),
                Err(TlsError::WrongEndorsement { node_id: 3 })
            );
        }
        // The service's endorsement of one key, presented in a certificate of another.
        let borrowed = endorsement(&service, 3, &key, Some(PERIOD));
        assert_eq!(
            verifier.check(&certificate(&stranger, &borrowed), 1_500_000),
            Err(TlsError::WrongEndorsement { node_id: 3 })
        );
        let signed = endorsement(&service, 3, &key, Some(PERIOD));
        for at in [999_999, 2_000_001] {
            assert!(matches!(verifier.check(&certificate(&key, &signed), at), Err(TlsError::OutsidePeriod { .. })));
        }
        let other = endorsement(&service, 4, &key, Some(PERIOD));
        assert_eq!(
            verifier.check(&certificate(&key, &other), 1_500_000),
            Err(TlsError::WrongNode { expected: 3, actual: 4 })
        );
        // Endorsed, current, the right node, but revoked in the caller's record.
        let revoked = verifier.with_check(Arc::new(|node: &EndorsedNode| match node.node_id {
            3 => Err("revoked".into()),
            _ => Ok(()),
        }));
        assert_eq!(
            revoked.check(&certificate(&key, &signed), 1_500_000),
            Err(TlsError::Refused { node_id: 3, reason: "revoked".into() })
        );
    }

    #[test]
    fn a_certificate_without_an_endorsement_or_not_x509_is_refused() {
        let key = node(2);
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key.to_pkcs8_der().expect("pkcs8").as_bytes().to_vec()),
            &rcgen::PKCS_ED25519,
        )
        .expect("a key pair");
        let plain = rcgen::CertificateParams::new(vec!["wattle-node-3".into()])
            .expect("params")
            .self_signed(&key_pair)
            .expect("a certificate");
        assert_eq!(endorsed_node(plain.der(), &[7; 32]), Err(TlsError::NotEndorsed));
        assert!(matches!(endorsed_node(b"not a certificate", &[7; 32]), Err(TlsError::Malformed(_))));
    }

    #[test]
    fn configurations_build_for_tls_1_3_and_http_1_1() {
        let (service, key) = (node(1), node(2));
        let signed = endorsement(&service, 3, &key, None);
        let server = server_config(&key, &signed).expect("a server configuration");
        assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let client = client_config(service.verifying_key().to_bytes(), None).expect("a client configuration");
        assert_eq!(client.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(parse_service_key(&hex::encode([5u8; 32])), Ok([5; 32]));
        assert!(parse_service_key("abcd").is_err());
    }
}
