//! Certificates for tests, made with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost (controllers, etcd), and a client certificate (mutual TLS). Written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// PEM files of one test PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Pki {
    /// A new CA and certificates under `dir`, named after `name` (two calls give two CAs that do
    /// not trust each other).
    pub fn generate(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("creating the PKI directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");

        let leaf = |sans: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>, cn: &str| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).expect("certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            // Also a client certificate: an embedded worker presents its controller's.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            "ferry test server",
        );
        let (client_cert, client_key) = leaf(
            vec!["ferry-client".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            "ferry test client",
        );
        let pki = Pki {
            ca: dir.join(format!("{name}-ca.pem")),
            server_cert: dir.join(format!("{name}-server.pem")),
            server_key: dir.join(format!("{name}-server.key")),
            client_cert: dir.join(format!("{name}-client.pem")),
            client_key: dir.join(format!("{name}-client.key")),
        };
        write(&pki.ca, &ca.pem());
        write(&pki.server_cert, &server_cert);
        write(&pki.server_key, &server_key);
        write(&pki.client_cert, &client_cert);
        write(&pki.client_key, &client_key);
        pki
    }
}
