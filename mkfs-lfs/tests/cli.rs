//! mkfs-lfs as a user runs it: exit codes, messages, what it creates and refuses.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn mkfs(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_mkfs-lfs"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn creates_refuses_forces_and_dry_runs() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("a.img");
    let p = img.to_str().unwrap();
    let (code, out, _) = mkfs(&[p, "64M", "-L", "data"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("segments:") && out.contains("usable capacity:"),
        "{out}"
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    let (code, _, err) = mkfs(&[p, "64M"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("existing lfs filesystem") && err.contains("-f"),
        "{err}"
    );
    let (code, _, _) = mkfs(&["-f", "-q", p]);
    assert_eq!(code, 0);
    let dry = d.path().join("dry.img");
    let (code, out, _) = mkfs(&["-n", dry.to_str().unwrap(), "1G"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing was written"));
    assert!(!dry.exists(), "dry run created the image");
}

#[test]
fn refuses_foreign_filesystems_and_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let ext = d.path().join("ext.img");
    let mut bytes = vec![0u8; 32 << 20];
    bytes[1080] = 0x53;
    bytes[1081] = 0xEF;
    std::fs::write(&ext, &bytes).unwrap();
    let (code, _, err) = mkfs(&[ext.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("ext2/3/4"), "{err}");
    let small = d.path().join("small.img");
    let (code, _, err) = mkfs(&[small.to_str().unwrap(), "2M"]);
    assert_eq!(code, 1);
    assert!(err.contains("image too small"), "{err}");
    assert!(!small.exists(), "a failed mkfs left an image behind");
    for bad in [
        vec!["--nope", "x"],
        vec![d.path().to_str().unwrap(), "64M"],
        vec!["-s", "3M", "x.img", "64M"],
        vec!["-b", "512", "x.img", "64M"],
        vec![small.to_str().unwrap()],
        vec!["x.img", "12Q"],
    ] {
        let (code, _, err) = mkfs(&bad);
        assert_eq!(code, 1, "{bad:?}: {err}");
        assert!(
            !err.is_empty() && !err.contains("panicked"),
            "{bad:?}: {err}"
        );
    }
    let (code, out, _) = mkfs(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.contains("mkfs-lfs"));
}
