//! Certificates for the TLS tests, made in-process with rcgen: a test CA and the node and
//! client certificates it signs, as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA and what it signed, as PEM files in a directory.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The path of file `name` (e.g. `ca.pem`, `node-key.pem`).
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Writes `<ca>.pem`, and for each `(name, sans)` a `<name>.pem` / `<name>-key.pem` that CA
/// signed.
pub fn issue(dir: &Path, ca_name: &str, leaves: &[(&str, &[&str])]) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, format!("{ca_name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join(format!("{ca_name}.pem")), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for (name, sans) in leaves {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let params = CertificateParams::new(sans).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// In `dir`: `ca.pem`; `node.pem` (127.0.0.1, localhost) and `client.pem` it signed, with
/// their `-key.pem`; and `rogue.pem`, a CA nobody trusts, with its `rogue-client.pem`.
pub fn pki(dir: &Path) -> Pki {
    issue(
        dir,
        "ca",
        &[
            ("node", &["127.0.0.1", "localhost"]),
            ("client", &["client"]),
        ],
    );
    // A second CA, trusted by nobody: its client certificate must be refused.
    issue(
        dir,
        "rogue",
        &[
            ("rogue-client", &["client"]),
            ("rogue-node", &["127.0.0.1"]),
        ],
    );
    Pki {
        dir: dir.to_path_buf(),
    }
}
