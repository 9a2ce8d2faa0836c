//! How a command reaches a node's HTTP API (`ctl`, `import`, `batch-export --view`): its
//! base URL, and an HTTP client that trusts the node's TLS certificate and presents the
//! user's own when the node asks for one. One place, so every command takes the same
//! `--node`, `--password`, `--cacert`, `--cert` and `--key`.

use anyhow::Context;

use crate::cli::NodeAccess;

impl NodeAccess {
    /// The node's base URL: `--node` as given when it has a scheme, else `https://` when
    /// a CA is given and `http://` when not.
    pub fn base_url(&self) -> String {
        let node = self.node.trim_end_matches('/');
        if node.starts_with("http://") || node.starts_with("https://") {
            node.to_string()
        } else if self.cacert.is_some() {
            format!("https://{node}")
        } else {
            format!("http://{node}")
        }
    }

    /// A client from `builder` that trusts only `--cacert` (no system roots: the node's
    /// certificate comes from the operator's CA) and presents `--cert`/`--key`.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> anyhow::Result<reqwest::Client> {
        let mut builder = builder;
        if let Some(path) = &self.cacert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --cacert {}", path.display()))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--cacert {} holds no PEM certificate", path.display()))?;
            anyhow::ensure!(
                !certificates.is_empty(),
                "--cacert {} holds no PEM certificate",
                path.display()
            );
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("cannot read --cert {}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .with_context(|| format!("cannot read --key {}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
                format!(
                    "--cert {} and --key {} are not a PEM certificate and its key",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        builder.build().context("cannot set up the HTTP client")
    }

    /// Adds the bearer token when a password is given.
    pub fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.password {
            Some(password) => request.bearer_auth(password),
            None => request,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::NodeAccess;

    fn access(node: &str, cacert: Option<&str>) -> NodeAccess {
        NodeAccess {
            node: node.into(),
            password: None,
            cacert: cacert.map(Into::into),
            cert: None,
            key: None,
        }
    }

    #[test]
    fn the_scheme_follows_the_ca_unless_the_address_names_one() {
        assert_eq!(
            access("127.0.0.1:1/", None).base_url(),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            access("127.0.0.1:1", Some("ca.pem")).base_url(),
            "https://127.0.0.1:1"
        );
        assert_eq!(access("https://x", None).base_url(), "https://x");
        assert_eq!(access("http://x", Some("ca.pem")).base_url(), "http://x");
    }
}
