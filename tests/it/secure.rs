//! `fathom serve --tls-cert --tls-key --tokens` as a real process, called by
//! `fathom query` with `--tls-ca` and `--token` / `FATHOM_TOKEN`; and the
//! warning for an address beyond loopback without TLS or tokens.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use fathom_engine::builder::{build, BuildOptions, Dataset};
use fathom_engine::synth;

use common::Reaped as Server;

/// Start `fathom serve` with `extra` flags; its stderr lines up to and
/// including the "listening" one, and the gRPC address.
fn serve(dir: &Path, extra: &[&str]) -> (Server, Vec<String>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("serve")
        .arg("--index")
        .arg(format!("items={}", dir.join("items.fathom").display()))
        .args(["--metrics-listen", "off", "--no-watch"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (server, lines) = common::until_listening(child);
    let last = lines.last().expect("the listening line");
    let grpc = common::field(last, "grpc=").expect("grpc address");
    (server, lines, grpc)
}

fn query(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fathom"));
    cmd.arg("query").args(args).env_remove("FATHOM_TOKEN");
    if let Some(t) = token {
        cmd.env("FATHOM_TOKEN", t);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fixture(dir: &Path) {
    let (n, dim) = (300, 8);
    let ds = Dataset {
        dim,
        vectors: synth::clustered(n, dim, 4, 3),
        ids: (0..n).map(|i| format!("item:{i}")).collect(),
        attributes: None,
    };
    let built = build(ds, Path::new("test"), &BuildOptions::default(), &|_, _| {}).unwrap();
    built.write(&dir.join("items.fathom"), "test").unwrap();

    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(
        dir.join("tokens"),
        "search tok-search-0123456\nadmin tok-admin-01234567\n",
    )
    .unwrap();
}

#[test]
fn query_over_tls_with_tokens() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (server, lines, grpc) = serve(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tokens",
            &p("tokens"),
        ],
    );
    let all = lines.join("\n");
    assert!(!all.contains("tok-"), "a token was logged:\n{all}");
    let target = format!("https://{grpc}");
    let ca = p("ca.pem");
    let base = ["--target", &target, "--tls-ca", &ca, "--timeout", "5s"];

    let list = |token| query(&[&base[..], &["list", "--json"]].concat(), token);
    let o = list(Some("tok-search-0123456"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"items\""));

    let o = list(None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("UNAUTHENTICATED"), "{}", stderr(&o));

    let get = |token| {
        query(
            &[&base[..], &["get", "--index", "items", "item:1", "item:2"]].concat(),
            token,
        )
    };
    let o = get(Some("tok-search-0123456"));
    assert!(stderr(&o).contains("PERMISSION_DENIED"), "{}", stderr(&o));
    let o = get(Some("tok-admin-01234567"));
    assert!(o.status.success(), "{}", stderr(&o));

    // The flag works as the variable does.
    let o = query(
        &[
            &base[..],
            &[
                "--token",
                "tok-search-0123456",
                "search",
                "--index",
                "items",
            ],
            &["--id", "item:3", "-k", "3"],
        ]
        .concat(),
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    drop(server);
}

#[test]
fn beyond_loopback_without_tls_or_tokens_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let (server, lines, _) = serve(dir.path(), &["--listen", "0.0.0.0:0"]);
    let all = lines.join("\n");
    assert!(all.contains("without TLS"), "{all}");
    assert!(all.contains("without tokens"), "{all}");
    drop(server);
    let (server, lines, _) = serve(dir.path(), &["--listen", "127.0.0.1:0"]);
    let all = lines.join("\n");
    assert!(!all.contains("WARN"), "{all}");
    drop(server);
}

/// `fathom tls init` writes a CA and a server certificate that `serve`
/// takes and clients trust with `--tls-ca`; it never replaces files.
#[test]
fn tls_init_makes_files_that_serve_and_query_accept() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let o = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(["tls", "init"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(pki.join("server.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by others");
    let again = Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(["tls", "init"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to replace"));
    let ca = pki.join("ca.pem");
    let cert = pki.join("server.pem");
    let key = pki.join("server.key");
    fixture(dir.path());
    let (_server, _, grpc) = serve(
        dir.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let target = format!("https://{grpc}");
    let args = [
        "--target",
        &target,
        "--tls-ca",
        ca.to_str().unwrap(),
        "list",
    ];
    let o = query(&args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    // Plaintext to the TLS port says what the server expects.
    let plain = format!("http://{grpc}");
    let o = query(&["--target", &plain, "--timeout", "5s", "list"], None);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("https://"), "{}", stderr(&o));
}
