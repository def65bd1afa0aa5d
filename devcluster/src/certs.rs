//! A throwaway certificate authority and the X.509 v3 certificates of one cluster.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Paths of the PEM files written by [`generate`].
#[derive(Clone, Debug)]
pub struct CertPaths {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    /// ECDSA key that signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public half, which verifies them.
    pub service_account_pub: PathBuf,
    /// Client identities: (user, cert, key).
    pub clients: Vec<ClientCert>,
    /// The real node's kubelet serving certificate (SAN: its name and address).
    pub kubelet_serving_cert: PathBuf,
    pub kubelet_serving_key: PathBuf,
}

impl CertPaths {
    /// The certificate of a client identity in [`CLIENTS`].
    pub fn client(&self, user: &str) -> Option<&ClientCert> {
        self.clients.iter().find(|c| c.user == user)
    }
}

/// One client certificate.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub user: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Client identities the control plane needs: the admin (group `system:masters`), the
/// built-in identities that bootstrap RBAC grants to the controller manager, the scheduler
/// and kube-proxy, the real node's kubelet (authorized by the Node authorizer), the API
/// server's identity towards kubelets, and the DNS server's (bound to a read-only role).
pub const CLIENTS: [(&str, Option<&str>); 7] = [
    ("admin", Some("system:masters")),
    ("system:kube-controller-manager", None),
    ("system:kube-scheduler", None),
    ("system:kube-proxy", None),
    (crate::node::NODE_USER, Some("system:nodes")),
    (APISERVER_KUBELET_CLIENT, Some("system:masters")),
    (crate::node::DNS_USER, None),
];

/// The identity the API server presents to kubelets.
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Generates the CA, the API server's serving certificate (SAN 127.0.0.1, localhost and the
/// in-cluster names), the client certificates and the service-account key into `dir`.
pub fn generate(dir: &Path) -> Result<CertPaths> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = dn("substratus-devcluster-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let ca_path = dir.join("ca.crt");
    write(&ca_path, &ca_cert.pem())?;

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ])?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    // The `kubernetes` Service's cluster IP: in-cluster clients dial it.
    serving
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(
            crate::node::KUBERNETES_SERVICE_IP,
        )));
    serving.distinguished_name = dn("kube-apiserver", None);
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;
    let serving_cert_path = dir.join("apiserver.crt");
    let serving_key_path = dir.join("apiserver.key");
    write(&serving_cert_path, &serving_cert.pem())?;
    write(&serving_key_path, &serving_key.serialize_pem())?;

    let mut clients = Vec::new();
    for (user, group) in CLIENTS {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(user, group);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer)?;
        let file = user.replace(':', "-");
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        write(&cert_path, &cert.pem())?;
        write(&key_path, &key.serialize_pem())?;
        clients.push(ClientCert {
            user: user.to_owned(),
            cert: cert_path,
            key: key_path,
        });
    }

    let kubelet_key = KeyPair::generate()?;
    let mut kubelet = CertificateParams::new(vec![crate::node::NODE_NAME.to_owned()])?;
    kubelet
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(crate::node::NODE_IP)));
    kubelet.distinguished_name = dn(crate::node::NODE_NAME, None);
    kubelet.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    kubelet.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let kubelet_cert = kubelet.signed_by(&kubelet_key, &issuer)?;
    let kubelet_serving_cert = dir.join("kubelet.crt");
    let kubelet_serving_key = dir.join("kubelet.key");
    write(&kubelet_serving_cert, &kubelet_cert.pem())?;
    write(&kubelet_serving_key, &kubelet_key.serialize_pem())?;

    let sa_key = KeyPair::generate()?;
    let sa_path = dir.join("service-account.key");
    write(&sa_path, &sa_key.serialize_pem())?;
    let sa_pub = dir.join("service-account.pub");
    write(&sa_pub, &sa_key.public_key_pem())?;

    Ok(CertPaths {
        ca_cert: ca_path,
        serving_cert: serving_cert_path,
        serving_key: serving_key_path,
        service_account_key: sa_path,
        service_account_pub: sa_pub,
        clients,
        kubelet_serving_cert,
        kubelet_serving_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_as_pem() {
        let dir = std::env::temp_dir().join(format!("devcluster-certs-{}", std::process::id()));
        let paths = generate(&dir).unwrap();
        for p in [&paths.ca_cert, &paths.serving_cert] {
            let pem = std::fs::read_to_string(p).unwrap();
            assert!(
                pem.starts_with("-----BEGIN CERTIFICATE-----"),
                "{}",
                p.display()
            );
        }
        let key = std::fs::read_to_string(&paths.service_account_key).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(paths.clients.len(), CLIENTS.len());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
