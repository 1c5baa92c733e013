//! `fathom tls init DIR`: a private CA and a server certificate signed by
//! it, for `serve --tls-cert/--tls-key` and clients' `--tls-ca`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(clap::Subcommand)]
enum TlsCommand {
    /// Write ca.pem, server.pem and server.key to DIR (ca.key too, to sign
    /// more certificates later).
    Init(InitArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    /// The folder to write to (made if missing; existing files are kept).
    dir: PathBuf,
    /// Names and addresses the server is reached by (repeatable).
    #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    names: Vec<String>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let TlsCommand::Init(a) = a.command;
    init(&a.dir, &a.names)?;
    println!(
        "wrote {dir}/ca.pem, {dir}/ca.key, {dir}/server.pem and {dir}/server.key for {names}\n\n  \
         fathom serve --tls-cert {dir}/server.pem --tls-key {dir}/server.key ...\n  \
         fathom query --tls-ca {dir}/ca.pem --target https://{first}:50051 list",
        dir = a.dir.display(),
        names = a.names.join(", "),
        first = a.names[0],
    );
    Ok(ExitCode::SUCCESS)
}

fn init(dir: &Path, names: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = ["ca.pem", "ca.key", "server.pem", "server.key"].map(|f| dir.join(f));
    if let Some(f) = files.iter().find(|f| f.exists()) {
        bail!("{} exists; refusing to replace it", f.display());
    }
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "fathom private CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name.push(DnType::CommonName, &names[0]);
    let cert = leaf.signed_by(&key, &issuer)?;
    write_private(&files[1], &issuer.key().serialize_pem())?;
    write_private(&files[3], &key.serialize_pem())?;
    std::fs::write(&files[0], ca_cert.pem())?;
    std::fs::write(&files[2], cert.pem())?;
    Ok(())
}

/// Keys are readable by their owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
