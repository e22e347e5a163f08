//! fsck-lfs and lfs-inspect as a user runs them: exit codes, flags, JSON.
#![allow(clippy::unwrap_used)]

use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::format::inode::{decode_inode_block, encode_inode_block};
use lfs_core::format::summary::{data_crc, Summary};
use lfs_core::format::superblock::Superblock;
use lfs_core::format::Ino;
use lfs_core::format::BLOCK_SIZE;
use lfs_core::fs::Creds;
use lfs_core::{mkfs, Fs, MkfsOptions, MountOptions};
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const FSCK: &str = env!("CARGO_BIN_EXE_fsck-lfs");
const INSPECT: &str = env!("CARGO_BIN_EXE_lfs-inspect");

/// An image holding /f (8 KiB) and /d/; returns (dir, image path, ino of /f).
fn image() -> (tempfile::TempDir, PathBuf, Ino) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    let dev: Arc<dyn Device> = Arc::new(FileDevice::create(&path, 32 << 20).unwrap());
    mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, MountOptions::default()).unwrap();
    let f = fs
        .create(Ino(1), b"f", 0o644, Creds::default())
        .unwrap()
        .ino;
    fs.write(f, 0, &[9u8; 8192]).unwrap();
    fs.mkdir(Ino(1), b"d", 0o755, Creds::default()).unwrap();
    fs.unmount().unwrap();
    (dir, path, f)
}

fn run(bin: &str, args: &[&str], image: &Path) -> Output {
    Command::new(bin).args(args).arg(image).output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Give inode `ino` a wrong link count, re-sealing the unit that holds it (as a bug would).
fn break_link_count(path: &Path, ino: Ino) {
    let dev: Arc<dyn Device> = Arc::new(
        FileDevice::open(
            path,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let e = {
        let fs = Fs::mount(
            dev,
            MountOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        fs.imap_entry(ino).unwrap()
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = vec![0u8; BLOCK_SIZE];
    file.read_exact_at(&mut b, 0).unwrap();
    let sb = Superblock::decode(&b).unwrap();
    file.read_exact_at(&mut b, e.addr.byte_offset()).unwrap();
    let mut slots = decode_inode_block(&b).unwrap();
    slots[e.slot as usize].nlink = 5;
    file.write_all_at(&encode_inode_block(&slots), e.addr.byte_offset())
        .unwrap();
    let start = sb.seg_addr(sb.seg_of(e.addr).unwrap());
    let mut off = 0;
    loop {
        file.read_exact_at(&mut b, (start + off).byte_offset())
            .unwrap();
        let mut s = Summary::decode(&b).unwrap();
        let n = s.entries.len() as u64;
        if e.addr > start + off && e.addr <= start + off + n {
            let mut p = vec![0u8; n as usize * BLOCK_SIZE];
            file.read_exact_at(&mut p, (start + off + 1).byte_offset())
                .unwrap();
            s.data_crc = data_crc(p.chunks(BLOCK_SIZE));
            file.write_all_at(&s.encode(), (start + off).byte_offset())
                .unwrap();
            return;
        }
        off += 1 + n;
    }
}

#[test]
fn fsck_exit_codes_follow_fsck8() {
    let (_d, img, f) = image();
    let o = run(FSCK, &[], &img);
    assert_eq!(code(&o), 0, "{o:?}");
    assert!(stdout(&o).contains("clean"), "{o:?}");
    assert_eq!(code(&run(FSCK, &["-f"], &img)), 0);

    break_link_count(&img, f);
    let before = std::fs::read(&img).unwrap();
    let o = run(FSCK, &["-n", "-f"], &img);
    assert_eq!(code(&o), 4, "{o:?}");
    assert!(
        stdout(&o).contains(&format!("inode {f}: link count 5, counted 1")),
        "{o:?}"
    );
    assert_eq!(std::fs::read(&img).unwrap(), before, "-n wrote");
    let o = run(FSCK, &["-y", "-f"], &img);
    assert_eq!(code(&o), 1, "{o:?}");
    assert!(stdout(&o).contains("(repaired)"), "{o:?}");
    assert_eq!(code(&run(FSCK, &["-n", "-f"], &img)), 0);
}

#[test]
fn fsck_json_report() {
    let (_d, img, f) = image();
    break_link_count(&img, f);
    let o = run(FSCK, &["-n", "-f", "--json"], &img);
    assert_eq!(code(&o), 4);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["findings"][0]["finding"], "link_count");
    assert_eq!(v["findings"][0]["ino"], f.get());
    assert_eq!(v["findings"][0]["stored"], 5);
    assert_eq!(v["findings"][0]["counted"], 1);
}

#[test]
fn fsck_usage_and_operational_errors() {
    let (_d, img, _) = image();
    assert_eq!(code(&run(FSCK, &["-n", "-y"], &img)), 16);
    assert_eq!(code(&run(FSCK, &["--no-such-flag"], &img)), 16);
    assert_eq!(code(&run(FSCK, &["-V"], &img)), 0);
    let missing = img.with_file_name("missing.img");
    assert_eq!(code(&run(FSCK, &[], &missing)), 8);
    // An image in use (a mount holds the lock) is refused, even for -n.
    let _held = FileDevice::open(
        &img,
        OpenOptions {
            lock: true,
            ..Default::default()
        },
    )
    .unwrap();
    let o = run(FSCK, &["-n"], &img);
    assert_eq!(code(&o), 8);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use"),
        "{o:?}"
    );
}

#[test]
fn inspector_views_in_json() {
    let (_d, img, f) = image();
    let json = |args: &[&str]| -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = Command::new(INSPECT).arg(&img).args(&a).output().unwrap();
        assert!(o.status.success(), "{args:?}: {o:?}");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let sb = json(&["superblock"]);
    assert_eq!(
        (sb["primary"].as_str(), sb["backup"].as_str()),
        (Some("valid"), Some("valid"))
    );
    let cps = json(&["checkpoints"]);
    let used = cps["in_use"].as_str().unwrap().to_string();
    let r = cps["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == used.as_str())
        .unwrap();
    assert_eq!(r["clean_unmount"], true);
    let ino = json(&["inode", &f.to_string()]);
    assert_eq!(ino["inode"]["kind"], "regular");
    assert_eq!(ino["inode"]["size"], 8192);
    let blocks = ino["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 2);
    let b0 = blocks[0]["block"].as_u64().unwrap();
    // The segment holding the file's first block describes it.
    let usage = json(&["usage"]);
    assert!(usage["table"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["live_bytes"].as_u64() > Some(8192)));
    let seg = (b0 - sb["segment_base"].as_u64().unwrap()) / sb["segment_blocks"].as_u64().unwrap();
    let s = json(&["segment", &seg.to_string()]);
    let described = s["units"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|u| u["entries"].as_array().unwrap().clone())
        .any(|e| e["block"] == b0 && e["ino"] == f.get() && e["kind"] == "data" && e["index"] == 0);
    assert!(described, "{s}");
    let blk = json(&["block", &b0.to_string()]);
    assert!(
        blk["hex"][0].as_str().unwrap().starts_with("0000: 0909"),
        "{blk}"
    );
    // Text output works too, and errors are errors.
    let o = Command::new(INSPECT)
        .arg(&img)
        .args(["inode", "99999999"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// `lfs-inspect … | head -1` and `fsck-lfs … | head -1`: a reader that goes away ends the
/// tool quietly (SIGPIPE, as coreutils), never with a panic and a backtrace.
#[test]
fn tools_end_quietly_when_their_reader_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    // 4 096 segments of 64 KiB: `usage --all` prints far more than a pipe holds.
    let dev: Arc<dyn Device> = Arc::new(FileDevice::create(&path, 256 << 20).unwrap());
    mkfs(
        dev,
        &MkfsOptions {
            seg_bytes: 64 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    for cmd in [
        format!("{INSPECT} {} usage --all", path.display()),
        format!("{INSPECT} --json {} usage --all", path.display()),
    ] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "{cmd} | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}"
            ))
            .output()
            .unwrap();
        let status: i32 = stdout(&out).trim().parse().unwrap();
        // 141: killed by SIGPIPE, what `seq 1 1000000 | head -1` gives; 0 if it finished.
        assert!(status == 141 || status == 0, "{cmd}: exit {status}");
        assert!(
            out.stderr.is_empty(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
