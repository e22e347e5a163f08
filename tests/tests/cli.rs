//! Hostile input for every command-line tool: wrong flags, missing, unreadable, empty and
//! foreign images, a directory for an image, sizes too small and too large, mountpoints that
//! are missing, not empty, not a directory, or hold the image. Each must end with its
//! documented exit status and one clear line on stderr (usage errors may add the usage after
//! it), never a panic, and leave nothing mounted and nothing half-made behind.
//!
//! The binaries come from `cargo build --workspace` (scripts/test.sh builds them first).
#![allow(clippy::unwrap_used)]

use lfs_tests::bin;
use lfs_tests::mount::is_mounted;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A usage error: the first line says what is wrong; the usage may follow.
    Usage,
    /// Exactly one line, starting with the tool's name.
    Error,
}

struct Case {
    tool: &'static str,
    args: Vec<String>,
    code: i32,
    kind: Kind,
    /// Must appear in the first line of stderr.
    says: &'static str,
    /// Run as user nobody.
    as_nobody: bool,
}

fn case(tool: &'static str, args: &[&str], code: i32, kind: Kind, says: &'static str) -> Case {
    Case {
        tool,
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        kind,
        says,
        as_nobody: false,
    }
}

/// Run with a time limit; (exit status, stderr).
fn run(c: &Case) -> Result<(i32, String), String> {
    let mut cmd = if c.as_nobody {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        cmd.arg(bin(c.tool));
        cmd
    } else {
        Command::new(bin(c.tool))
    };
    let mut child = cmd
        .args(&c.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Ok((st.code().unwrap_or(-1), err));
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("hung (killed after 60 s)".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_tool_refuses_bad_input_with_one_clear_line() {
    use Kind::*;
    let d = tempfile::tempdir().unwrap();
    // Other users must reach the files (the unreadable-image cases run as nobody).
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    std::fs::create_dir(p("adir")).unwrap();
    std::fs::write(p("empty"), b"").unwrap();
    let garbage: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(p("garbage"), &garbage).unwrap();
    let st = Command::new(bin("mkfs-lfs"))
        .args(["-q", &p("good.img"), "64M"])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::set_permissions(p("good.img"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(p("mnt")).unwrap();
    std::fs::write(p("mnt/x"), b"x").unwrap();
    std::fs::create_dir(p("emptymnt")).unwrap();
    std::fs::create_dir(p("self")).unwrap();
    std::fs::copy(p("good.img"), p("self/good.img")).unwrap();
    let (good, new, missing) = (p("good.img"), p("new.img"), p("missing.img"));
    let (adir, empty, garbage) = (p("adir"), p("empty"), p("garbage"));
    let (mnt, emptymnt) = (p("mnt"), p("emptymnt"));
    let long_label = "a".repeat(300);
    let mut cases = vec![
        // mkfs-lfs: 0 or 1.
        case("mkfs-lfs", &[], 1, Usage, "required"),
        case("mkfs-lfs", &["--nope", &new], 1, Usage, "--nope"),
        case("mkfs-lfs", &[&new, "64M", "extra"], 1, Usage, "extra"),
        case("mkfs-lfs", &[&adir, "64M"], 1, Error, "is a directory"),
        case("mkfs-lfs", &[&new, "12Q"], 1, Error, "invalid size"),
        case("mkfs-lfs", &[&new, "0"], 1, Error, "too small"),
        case("mkfs-lfs", &[&new, "2M"], 1, Error, "too small"),
        case("mkfs-lfs", &[&new, "99999999T"], 1, Error, ""),
        case("mkfs-lfs", &["-s", "3M", &new, "64M"], 1, Error, "segment"),
        case(
            "mkfs-lfs",
            &["-L", &long_label, &new, "64M"],
            1,
            Error,
            "label",
        ),
        case(
            "mkfs-lfs",
            &["/nonexistent-dir/x.img", "64M"],
            1,
            Error,
            "No such file",
        ),
        case(
            "mkfs-lfs",
            &["/dev/null"],
            1,
            Error,
            "neither a regular file",
        ),
        case("mkfs-lfs", &[&good], 1, Error, "use -f"),
        case("mkfs-lfs", &[&missing], 1, Error, "does not exist"),
        // fsck-lfs: 8 operational error, 16 usage error.
        case("fsck-lfs", &[], 16, Usage, "required"),
        case("fsck-lfs", &["--bogus", &good], 16, Usage, "--bogus"),
        case("fsck-lfs", &["-n", "-y", &good], 16, Usage, ""),
        case("fsck-lfs", &[&missing], 8, Error, "No such file"),
        case("fsck-lfs", &[&adir], 8, Error, "is a directory"),
        case("fsck-lfs", &[&empty], 8, Error, "not an LFS"),
        case("fsck-lfs", &[&garbage], 8, Error, "not an LFS"),
        case(
            "fsck-lfs",
            &["/dev/null"],
            8,
            Error,
            "neither a regular file",
        ),
        // lfs-inspect: 1 error, 2 usage error.
        case("lfs-inspect", &[], 2, Usage, ""),
        case("lfs-inspect", &[&good, "bogus"], 2, Usage, "bogus"),
        case("lfs-inspect", &[&good, "inode", "abc"], 2, Usage, "abc"),
        case(
            "lfs-inspect",
            &[&missing, "superblock"],
            1,
            Error,
            "No such file",
        ),
        case(
            "lfs-inspect",
            &[&adir, "superblock"],
            1,
            Error,
            "is a directory",
        ),
        case(
            "lfs-inspect",
            &[&empty, "superblock"],
            1,
            Error,
            "not an LFS",
        ),
        case(
            "lfs-inspect",
            &[&garbage, "checkpoints"],
            1,
            Error,
            "superblock",
        ),
        case("lfs-inspect", &[&garbage, "usage"], 1, Error, "not an LFS"),
        case(
            "lfs-inspect",
            &[&good, "inode", "99999999999999"],
            1,
            Error,
            "beyond",
        ),
        case(
            "lfs-inspect",
            &[&good, "segment", "100000"],
            1,
            Error,
            "out of range",
        ),
        case(
            "lfs-inspect",
            &[&good, "block", &u64::MAX.to_string()],
            1,
            Error,
            "beyond",
        ),
        // lfs-cleaner: 1 failed, 2 usage error.
        case("lfs-cleaner", &[], 2, Usage, ""),
        case("lfs-cleaner", &["bogus"], 2, Usage, "bogus"),
        case("lfs-cleaner", &["status"], 2, Usage, "required"),
        case(
            "lfs-cleaner",
            &["--policy", "nope", "pass", &good],
            2,
            Usage,
            "nope",
        ),
        case(
            "lfs-cleaner",
            &["run", &good, "--until-clean", "200%"],
            2,
            Usage,
            "200%",
        ),
        case(
            "lfs-cleaner",
            &["pass", &good, "--segments", "0"],
            2,
            Usage,
            "0",
        ),
        case("lfs-cleaner", &["simulate", "--at", "100"], 2, Usage, "100"),
        case(
            "lfs-cleaner",
            &["status", &missing],
            1,
            Error,
            "No such file",
        ),
        case(
            "lfs-cleaner",
            &["status", &adir],
            1,
            Error,
            "not an lfs-fuse mountpoint",
        ),
        case("lfs-cleaner", &["status", &garbage], 1, Error, "not an LFS"),
        case("lfs-cleaner", &["status", &empty], 1, Error, "not an LFS"),
        case("lfs-cleaner", &["suspend", &good], 1, Error, "mountpoint"),
        case(
            "lfs-cleaner",
            &["simulate", "--quick", "--segments", "0"],
            1,
            Error,
            "--segments",
        ),
        // lfs-fuse: 1, and nothing mounted.
        case("lfs-fuse", &[], 1, Usage, "expected IMAGE and MOUNTPOINT"),
        case(
            "lfs-fuse",
            &[&good],
            1,
            Usage,
            "expected IMAGE and MOUNTPOINT",
        ),
        case("lfs-fuse", &[&missing, &emptymnt], 1, Error, "No such file"),
        case("lfs-fuse", &[&adir, &emptymnt], 1, Error, "is a directory"),
        case("lfs-fuse", &[&empty, &emptymnt], 1, Error, "not an LFS"),
        case("lfs-fuse", &[&garbage, &emptymnt], 1, Error, "not an LFS"),
        case("lfs-fuse", &[&good, &mnt], 1, Error, "not empty"),
        case("lfs-fuse", &[&good, &empty], 1, Error, "not a directory"),
        case("lfs-fuse", &[&good, &p("nomnt")], 1, Error, "No such file"),
        case(
            "lfs-fuse",
            &[&good, &emptymnt, "-o", "bogus"],
            1,
            Error,
            "bogus",
        ),
        case(
            "lfs-fuse",
            &[&good, &emptymnt, "-o", "gc_low=abc"],
            1,
            Error,
            "gc_low",
        ),
        case(
            "lfs-fuse",
            &[&good, &emptymnt, "-o", "workers=-1"],
            1,
            Error,
            "workers",
        ),
        case(
            "lfs-fuse",
            &[&good, &emptymnt, "-o", "checkpoint_interval=0"],
            1,
            Error,
            "checkpoint_interval",
        ),
        case(
            "lfs-fuse",
            &[&p("self/good.img"), &p("self"), "-o", "nonempty"],
            1,
            Error,
            "inside the mountpoint",
        ),
    ];
    // An image another user may not read (0600, ours).
    for (tool, args, code) in [
        ("fsck-lfs", vec![good.clone()], 8),
        ("lfs-inspect", vec![good.clone(), "superblock".into()], 1),
        ("lfs-cleaner", vec!["status".into(), good.clone()], 1),
        ("mkfs-lfs", vec![p("adir/theirs.img"), "64M".into()], 1),
    ] {
        cases.push(Case {
            tool,
            args,
            code,
            kind: Error,
            says: "Permission denied",
            as_nobody: true,
        });
    }
    let mut failures = Vec::new();
    for c in &cases {
        let name = format!("{} {}", c.tool, c.args.join(" "));
        let (code, err) = match run(c) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let first = lines.first().copied().unwrap_or("");
        let mut bad = Vec::new();
        if code != c.code {
            bad.push(format!("exit {code}, expected {}", c.code));
        }
        if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            bad.push("panicked".into());
        }
        if !first.contains(c.says) {
            bad.push(format!("first line does not say '{}'", c.says));
        }
        match c.kind {
            Error if lines.len() != 1 || !first.starts_with(&format!("{}: ", c.tool)) => {
                bad.push(format!("not one line naming {}", c.tool))
            }
            Usage if first.trim().is_empty() => bad.push("no message".into()),
            _ => {}
        }
        if !bad.is_empty() {
            failures.push(format!("{name}: {} -- stderr: {err:?}", bad.join("; ")));
        }
    }
    // Nothing mounted, nothing half-made.
    for m in [&mnt, &emptymnt, &p("self")] {
        if is_mounted(Path::new(m)) {
            let _ = Command::new("fusermount3").args(["-u", "-z", m]).status();
            failures.push(format!("{m} was left mounted"));
        }
    }
    assert!(
        !Path::new(&new).exists(),
        "a failed mkfs-lfs left {new} behind"
    );
    assert!(!Path::new(&p("adir/theirs.img")).exists());
    eprintln!("{} hostile command lines tried", cases.len());
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
