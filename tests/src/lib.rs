//! What the workspace's tests share: finding (and building) the workspace's binaries, the
//! FUSE mount harness (`mount`), and the engine fixtures (`engine`). lfs-core's own tests
//! keep theirs in `lfs-core/tests/common` (this crate depends on lfs-core, so lfs-core's
//! tests cannot depend on it).

pub mod engine;
pub mod mount;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace binary `name` (mkfs-lfs, lfs-fuse, fsck-lfs, lfs-inspect, lfs-cleaner…)
/// in the target directory `profile_dir` (target/debug or target/release, the one the
/// calling test runs from), built first if missing: cargo builds only a package's own
/// binaries for its tests, so `cargo test -p CRATE` on a clean target would otherwise find
/// none of the others.
pub fn workspace_bin(profile_dir: &Path, name: &str) -> PathBuf {
    let path = profile_dir.join(name);
    if path.exists() {
        return path;
    }
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !path.exists() {
        let package = match name {
            "fsck-lfs" | "lfs-inspect" => "lfs-tools",
            "lfs-bench" | "recovery-bench" | "cleaner-bench" => "lfs-tests",
            other => other,
        };
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["build", "-q", "-p", package, "--bin", name]);
        if profile_dir.file_name() == Some("release".as_ref()) {
            c.arg("--release");
        }
        let ok = c
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cargo build -p {package} --bin {name} failed");
    }
    path
}

/// The target directory of the running test executable (target/<profile>/deps/name-hash).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The workspace binary `name`, beside the running test's own target directory, built first
/// if missing.
pub fn bin(name: &str) -> PathBuf {
    workspace_bin(&profile_dir(), name)
}
