//! Attestation: a joining node shows what code it runs before it is handed the ledger secrets.
//!
//! A report binds a **measurement** (what runs) to **report data** (who asks: the SHA-256 of the
//! node's id, Ed25519 key and X25519 key), and carries evidence that the platform produced it.
//! Governance keeps the accepted measurements (`accept_measurement`, `revoke_measurement`);
//! once one is accepted, a peer hands the secrets only to a node whose report verifies and whose
//! measurement is accepted (`api.rs`, `/raft/secrets`). A node without the secrets cannot open a
//! store and cannot join.
//!
//! This machine has no TEE, so the one platform here is **virtual**: the measurement is the
//! SHA-256 of the node's own executable, the evidence the node key's signature. It proves which
//! binary an honest node runs (a rebuilt binary has another measurement and is refused), not
//! that a malicious host did not lie: only hardware evidence does that. AMD SEV-SNP or Intel TDX
//! implement [`Attestor`] and [`Verifier`] with the CPU vendor's signed reports and chains, and
//! the rest of the flow (report data, governance, the secrets handover) stays as it is.

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::entry::NodeId;

/// The platform name of [`VirtualAttestor`] reports.
pub const VIRTUAL_PLATFORM: &str = "virtual";
/// Longest evidence a report may carry (hardware reports with certificate chains fit).
pub const EVIDENCE_BYTES_MAX: usize = 16 * 1024;

/// An attestation report, as a joining node sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationReport {
    pub platform: String,
    /// Hex of the 32-byte measurement.
    pub measurement: String,
    /// Hex of the 32-byte report data the report is bound to.
    pub report_data: String,
    /// Hex of the platform's evidence.
    pub evidence: String,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("unknown attestation platform {0:?}")]
    UnknownPlatform(String),
    #[error("malformed attestation report: {0}")]
    Malformed(&'static str),
    #[error("the report is bound to other keys than the requesting node's")]
    WrongReportData,
    #[error("the report's evidence does not verify")]
    BadEvidence,
}

/// What a node's platform attests.
pub trait Attestor: Send + Sync {
    /// A report over `report_data`.
    fn report(&self, report_data: [u8; 32]) -> AttestationReport;
    /// The measurement this platform reports for this node.
    fn measurement(&self) -> [u8; 32];
}

/// Checks reports of one platform; returns the measurement a valid report attests.
pub trait Verifier {
    fn verify(
        &self,
        report: &AttestationReport,
        report_data: &[u8; 32],
        node_key: &[u8; 32],
    ) -> Result<[u8; 32], AttestationError>;
}

/// The report data of a node: SHA-256 over its id, Ed25519 key and X25519 key.
pub fn report_data(node_id: NodeId, node_key: &[u8; 32], x25519_public: &[u8; 32]) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"wattle.attestation.v1\0")
        .chain_update(node_id.to_be_bytes())
        .chain_update(node_key)
        .chain_update(x25519_public)
        .finalize()
        .into()
}

fn evidence_message(measurement: &[u8; 32], report_data: &[u8; 32]) -> Vec<u8> {
    [b"wattle.virtual-attestation.v1\0".as_slice(), measurement, report_data].concat()
}

/// The SHA-256 of a file: the virtual platform's measurement of an executable.
pub fn measure_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// The measurement of the running executable.
pub fn measure_self() -> std::io::Result<[u8; 32]> {
    measure_file(&std::env::current_exe()?)
}

/// Virtual attestation: measurement of the executable, evidence signed by the node key.
pub struct VirtualAttestor {
    measurement: [u8; 32],
    node_key: SigningKey,
}

impl std::fmt::Debug for VirtualAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualAttestor").field("measurement", &hex::encode(self.measurement)).finish()
    }
}

impl VirtualAttestor {
    pub fn new(measurement: [u8; 32], node_key: SigningKey) -> Self {
        VirtualAttestor { measurement, node_key }
    }
}

impl Attestor for VirtualAttestor {
    fn report(&self, report_data: [u8; 32]) -> AttestationReport {
        let signature = self.node_key.sign(&evidence_message(&self.measurement, &report_data));
        AttestationReport {
            platform: VIRTUAL_PLATFORM.into(),
            measurement: hex::encode(self.measurement),
            report_data: hex::encode(report_data),
            evidence: hex::encode(signature.to_bytes()),
        }
    }
    fn measurement(&self) -> [u8; 32] {
        self.measurement
    }
}

/// Verifies virtual reports: the evidence is the node key's signature.
#[derive(Debug, Default)]
pub struct VirtualVerifier;

fn hex32(text: &str, what: &'static str) -> Result<[u8; 32], AttestationError> {
    hex::decode(text).ok().and_then(|bytes| bytes.try_into().ok()).ok_or(AttestationError::Malformed(what))
}

impl Verifier for VirtualVerifier {
    fn verify(
        &self,
        report: &AttestationReport,
        report_data: &[u8; 32],
        node_key: &[u8; 32],
    ) -> Result<[u8; 32], AttestationError> {
        let measurement = hex32(&report.measurement, "measurement is not 32 bytes of hex")?;
        if hex32(&report.report_data, "report data is not 32 bytes of hex")? != *report_data {
            return Err(AttestationError::WrongReportData);
        }
        let evidence: [u8; 64] = hex::decode(&report.evidence)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(AttestationError::Malformed("virtual evidence is not 64 bytes of hex"))?;
        domain::verify::verify_signature(node_key, &evidence, &evidence_message(&measurement, report_data))
            .map_err(|_| AttestationError::BadEvidence)?;
        Ok(measurement)
    }
}

/// Verifies a report of any platform this build knows.
pub fn verify(
    report: &AttestationReport,
    report_data: &[u8; 32],
    node_key: &[u8; 32],
) -> Result<[u8; 32], AttestationError> {
    if report.evidence.len() > EVIDENCE_BYTES_MAX * 2 {
        return Err(AttestationError::Malformed("evidence longer than the limit"));
    }
    match report.platform.as_str() {
        VIRTUAL_PLATFORM => VirtualVerifier.verify(report, report_data, node_key),
        other => Err(AttestationError::UnknownPlatform(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_verifies_only_for_its_node_and_keys() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let node_key = key.verifying_key().to_bytes();
        let attestor = VirtualAttestor::new([9; 32], key);
        let data = report_data(2, &node_key, &[4; 32]);
        let report = attestor.report(data);
        assert_eq!(verify(&report, &data, &node_key), Ok([9; 32]));
        assert_eq!(
            verify(&report, &report_data(3, &node_key, &[4; 32]), &node_key),
            Err(AttestationError::WrongReportData)
        );
        let stranger = SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes();
        assert_eq!(verify(&report, &data, &stranger), Err(AttestationError::BadEvidence));
        let mut claimed = report.clone();
        claimed.measurement = hex::encode([8; 32]);
        assert_eq!(verify(&claimed, &data, &node_key), Err(AttestationError::BadEvidence), "a claimed measurement");
        let mut other = report;
        other.platform = "sev-snp".into();
        assert!(matches!(verify(&other, &data, &node_key), Err(AttestationError::UnknownPlatform(_))));
    }

    #[test]
    fn the_measurement_of_a_file_changes_with_one_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("binary");
        std::fs::write(&path, b"\x7fELF one").expect("write");
        let first = measure_file(&path).expect("measure");
        std::fs::write(&path, b"\x7fELF one!").expect("write");
        assert_ne!(measure_file(&path).expect("measure"), first);
    }
}
