//! `fathom build` stopped by SIGINT or SIGTERM while it writes its snapshot
//! removes its temporary file (`.NAME.tmp-PID`), exits non-zero (128 + the
//! signal) and leaves no output behind. Before, the signal's default action
//! left the temporary file for the next build to clean up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fathom(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fathom"))
        .args(args)
        .output()
        .unwrap()
}

fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".out.fathom.tmp-"))
        .collect()
}

#[test]
fn a_build_interrupted_while_writing_removes_its_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // About 170 MB to write (bf16 vectors plus their f32 copy), behind a
    // graph built in a second or two: the write is long enough to catch.
    let synth = fathom(&[
        "synth",
        "--out-dir",
        d,
        "--n",
        "30000",
        "--dim",
        "960",
        "--queries",
        "1",
        "--gt-k",
        "1",
        "--clusters",
        "50",
    ]);
    assert!(synth.status.success(), "{synth:?}");
    let input = data.join("base.fvecs");
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let out_dir = dir.path().join(format!("out-{signal}"));
        std::fs::create_dir(&out_dir).unwrap();
        let output = out_dir.join("out.fathom");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fathom"))
            .args(["build", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args([
                "--storage",
                "bf16",
                "--m",
                "4",
                "--ef-construction",
                "8",
                "--threads",
                "2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let temp = loop {
            if let Some(t) = temps(&out_dir).pop() {
                break t;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the build ended before its temporary file was seen"
            );
            assert!(start.elapsed() < Duration::from_secs(120));
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(temp, format!(".out.fathom.tmp-{}", child.id()));
        let kill = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {stderr}");
        assert!(temps(&out_dir).is_empty(), "SIG{signal} left {temp}");
        assert!(!output.exists(), "SIG{signal} left an output");
        assert!(stderr.contains("removed the partial"), "{stderr}");
    }
}
