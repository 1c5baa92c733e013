//! TLS, mutual TLS and bearer tokens with roles, against a real server.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fathom_server::catalog::{Catalog, LoadOptions};
use fathom_server::client::{Client, ClientError, Security};
use fathom_server::{self as server, Limits, RunningServer, ServeConfig, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::Code;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str, file: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            std::fs::write(dir.path().join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{file}.key")), key.serialize_pem()).unwrap();
        };
        leaf("127.0.0.1", "server");
        leaf("client.example", "client");
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server_files(&self, mutual: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mutual.then(|| self.path("ca.pem")),
        }
    }

    fn security(&self, identity: bool) -> Security {
        let (cert, key) = (self.path("client.pem"), self.path("client.key"));
        Security::from_files(
            Some(&self.path("ca.pem")),
            identity.then_some(cert.as_path()),
            identity.then_some(key.as_path()),
            None,
        )
        .unwrap()
    }
}

async fn start(config: ServeConfig) -> RunningServer {
    let specs = vec![("items".to_string(), prebuilt("v0"))];
    let catalog = Catalog::open(&specs, None, LoadOptions::default()).unwrap();
    server::start(config, Arc::new(catalog)).await.unwrap()
}

async fn connect(target: &str, security: &Security) -> Result<Client, ClientError> {
    Ok(
        Client::connect_with(target, Duration::from_secs(5), security)
            .await?
            .with_timeout(Duration::from_secs(5)),
    )
}

async fn search(client: &Client) -> Result<usize, ClientError> {
    let q = queries(1, DIM, 4).remove(0);
    Ok(client.search("items", &q, 5, 0).await?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_and_no_plaintext() {
    let pki = Pki::new();
    let server = start(ServeConfig {
        tls: Some(pki.server_files(false)),
        ..config(Limits::default(), false)
    })
    .await;
    let addr = server.local_addr();
    let client = connect(&format!("https://{addr}"), &pki.security(false))
        .await
        .unwrap();
    assert_eq!(search(&client).await.unwrap(), 5);
    // A CA file alone also turns TLS on for a bare host:port target.
    let bare = connect(&addr.to_string(), &pki.security(false))
        .await
        .unwrap();
    assert_eq!(search(&bare).await.unwrap(), 5);
    // Plaintext HTTP/2 gets nowhere.
    let plain = match connect(&format!("http://{addr}"), &Security::default()).await {
        Ok(c) => search(&c).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let e = plain.expect_err("plaintext was served over a TLS port");
    assert!(e.to_string().contains("https://"), "{e}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    let server = start(ServeConfig {
        tls: Some(pki.server_files(true)),
        ..config(Limits::default(), false)
    })
    .await;
    let target = format!("https://{}", server.local_addr());
    let anonymous = match connect(&target, &pki.security(false)).await {
        Ok(c) => search(&c).await,
        Err(e) => Err(e),
    };
    let e = anonymous.expect_err("a client without a certificate was served");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    let known = connect(&target, &pki.security(true)).await.unwrap();
    assert_eq!(search(&known).await.unwrap(), 5);
    server.shutdown().await.unwrap();
}

fn token(t: &str) -> Security {
    Security {
        token: Some(t.to_string()),
        ..Security::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "# roles\nsearch s-0123456789abcdef\nadmin a-0123456789abcdef  # ops\n",
    )
    .unwrap();
    let server = start(ServeConfig {
        tokens: Some(file),
        ..config(Limits::default(), false)
    })
    .await;
    let target = format!("http://{}", server.local_addr());
    let none = connect(&target, &Security::default()).await.unwrap();
    let wrong = connect(&target, &token("s-0123456789abcdeF"))
        .await
        .unwrap();
    let searcher = connect(&target, &token("s-0123456789abcdef"))
        .await
        .unwrap();
    let admin = connect(&target, &token("a-0123456789abcdef"))
        .await
        .unwrap();
    let one = ["v0:000001"];
    let two = ["v0:000001", "v0:000002"];

    for c in [&none, &wrong] {
        assert_eq!(code(search(c).await), Code::Unauthenticated);
        assert_eq!(code(c.list_indexes().await), Code::Unauthenticated);
        assert_eq!(
            code(c.get_items("items", &one).await),
            Code::Unauthenticated
        );
        assert_eq!(code(c.reload(None).await), Code::Unauthenticated);
    }
    let e = none.list_indexes().await.unwrap_err();
    assert!(e.to_string().contains("Bearer"), "{e}");
    let e = wrong.list_indexes().await.unwrap_err();
    assert!(!e.to_string().contains("s-0123"), "a token was echoed: {e}");

    assert_eq!(search(&searcher).await.unwrap(), 5);
    assert_eq!(searcher.list_indexes().await.unwrap().len(), 1);
    let q = queries(2, DIM, 4);
    assert_eq!(
        searcher
            .batch_search("items", &q, 3, 0)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(searcher.get_items("items", &one).await.unwrap().len(), 1);
    assert_eq!(
        code(searcher.get_items("items", &two).await),
        Code::PermissionDenied
    );
    let e = searcher.reload(None).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.to_string().contains("admin"), "{e}");
    let e = searcher.delete("items", &one).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(
        e.to_string()
            .contains("Delete needs a token with the admin role"),
        "{e}"
    );
    assert_eq!(
        code(none.delete("items", &one).await),
        Code::Unauthenticated
    );
    // Past the role check: "items" is a single snapshot.
    assert_eq!(
        code(admin.delete("items", &one).await),
        Code::FailedPrecondition
    );

    assert_eq!(search(&admin).await.unwrap(), 5);
    assert_eq!(admin.get_items("items", &two).await.unwrap().len(), 2);
    assert_eq!(admin.reload(Some("items")).await.unwrap().len(), 1);

    // Health needs no token.
    let channel = tonic::transport::Endpoint::from_shared(target.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let metrics = server.metrics().render();
    assert!(
        metrics.contains(
            "fathom_requests_total{code=\"UNAUTHENTICATED\",index=\"\",method=\"Reload\"} 2"
        ),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_and_token_files_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "superuser hunter2\n").unwrap();
    let specs = vec![("items".to_string(), prebuilt("v0"))];
    let catalog = Arc::new(Catalog::open(&specs, None, LoadOptions::default()).unwrap());
    let e = server::start(
        ServeConfig {
            tokens: Some(tokens),
            ..config(Limits::default(), false)
        },
        Arc::clone(&catalog),
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains(":1: unknown role"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");

    let missing = Path::new("/nonexistent/cert.pem").to_path_buf();
    let e = server::start(
        ServeConfig {
            tls: Some(TlsFiles {
                cert: missing.clone(),
                key: missing,
                client_ca: None,
            }),
            ..config(Limits::default(), false)
        },
        catalog,
    )
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("cert.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_every_client_would_refuse_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, params: CertificateParams| {
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        TlsFiles {
            cert: c,
            key: k,
            client_ca: None,
        }
    };
    // What `openssl req -x509 -subj /CN=localhost` makes: a CA certificate.
    let mut ca = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A leaf with a common name and no subjectAltName.
    let mut bare = CertificateParams::new(Vec::<String>::new()).unwrap();
    bare.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    for (files, needle) in [
        (write("ca", ca), "is a CA certificate"),
        (write("bare", bare), "no subjectAltName"),
    ] {
        let specs = vec![("items".to_string(), prebuilt("v0"))];
        let catalog = Catalog::open(&specs, None, LoadOptions::default()).unwrap();
        let e = server::start(
            ServeConfig {
                tls: Some(files),
                ..config(Limits::default(), false)
            },
            Arc::new(catalog),
        )
        .await
        .err()
        .expect("the server refused the certificate");
        let text = e.to_string();
        assert!(
            text.contains(needle) && text.contains("fathom tls init"),
            "{text}"
        );
    }
}
