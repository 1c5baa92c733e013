//! Shared by the process-level tests.

use std::ops::{Deref, DerefMut};
use std::process::Child;

/// A child process killed and reaped when dropped: a test that fails halfway
/// must not leave a server running.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Wait (60 s at most) for `child`'s stderr to say "listening": the lines
/// up to and including that one. Its stderr is read on to the end on a
/// thread of its own, so the child never blocks on a full pipe.
pub fn until_listening(mut child: Child) -> (Reaped, Vec<String>) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr is piped");
    let child = Reaped(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("the process never listened");
        lines.push(line);
        if lines.last().is_some_and(|l| l.contains("listening")) {
            return (child, lines);
        }
    }
}

/// The value of `key` (as `grpc=`) in a log line.
pub fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .map(str::to_string)
}

/// The ids of the hits `fathom search … --json` printed, nearest first.
pub fn hit_ids(stdout: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).unwrap();
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

/// `fathom ARGS`, which must succeed: its stdout.
pub fn ok(args: &[&str]) -> Vec<u8> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// `fathom serve ARGS` on a free port, without metrics or a watcher: the
/// process and its gRPC address.
pub fn serve(args: &[&str]) -> (Reaped, String) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_fathom"))
        .arg("serve")
        .args(args)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--no-watch",
        ])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (server, lines) = until_listening(child);
    let addr = lines
        .iter()
        .rev()
        .find_map(|l| field(l, "grpc="))
        .expect("the address");
    (server, addr)
}

/// A runtime for blocking on a client's calls, and a client of `target`.
pub fn connect(target: &str) -> (tokio::runtime::Runtime, fathom_server::client::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(fathom_server::client::Client::connect(
            target,
            std::time::Duration::from_secs(5),
        ))
        .unwrap();
    (rt, client)
}
