//! lfs-inspect: look inside an LFS image, in the spirit of debugfs and dump.f2fs.
//!
//! `lfs-inspect IMAGE superblock | checkpoints | usage | segment N | inode N | block N`,
//! each with `--json` (a stable schema: field names as in docs/FORMAT.md). superblock and
//! checkpoints read the raw regions and work on a damaged image; the others mount the image
//! read-only (rolling the log forward in memory, writing nothing) and show the state a mount
//! would see. The image is not locked: inspecting a mounted image shows its last durable
//! state.

use clap::{Parser, Subcommand};
use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::format::checkpoint::Checkpoint;
use lfs_core::format::inode::DiskInode;
use lfs_core::format::summary::{BlockKind, SummaryEntry};
use lfs_core::format::superblock::Superblock;
use lfs_core::format::{BlockAddr, Ino, BLOCK_BYTES, BLOCK_SIZE};
use lfs_core::{Fs, MountOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "lfs-inspect",
    version,
    about = "Inspect an LFS filesystem image"
)]
struct Cli {
    /// Image file or block device.
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long = "json", global = true)]
    json: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// The superblock (primary and backup copies).
    Superblock,
    /// Both checkpoint regions, and which one a mount uses.
    Checkpoints,
    /// The segment usage table (segments in use; --all for every segment).
    Usage {
        #[arg(long)]
        all: bool,
    },
    /// The write units of one segment: each summary and its entries.
    Segment { segment: u64 },
    /// One inode: its map entry, fields and blocks.
    Inode { ino: u64 },
    /// One block, as hex.
    Block { addr: u64 },
}

type Out = Result<Value, String>;

fn main() -> ExitCode {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    let cli = Cli::parse();
    let dev = match FileDevice::open(
        &cli.image,
        OpenOptions {
            read_only: true,
            direct: false,
            lock: false,
        },
    ) {
        Ok(d) => Arc::new(d) as Arc<dyn Device>,
        Err(e) => {
            // Device errors name the file.
            eprintln!("lfs-inspect: {e}");
            return ExitCode::FAILURE;
        }
    };
    if dev.len_bytes() < BLOCK_BYTES {
        eprintln!(
            "lfs-inspect: {}: not an LFS filesystem (only {} bytes)",
            cli.image.display(),
            dev.len_bytes()
        );
        return ExitCode::FAILURE;
    }
    let out = match &cli.what {
        What::Superblock => superblock(&dev),
        What::Checkpoints => checkpoints(&dev),
        What::Usage { all } => mounted(&dev).and_then(|fs| usage(&fs, *all)),
        What::Segment { segment } => mounted(&dev).and_then(|fs| segment_units(&fs, *segment)),
        What::Inode { ino } => mounted(&dev).and_then(|fs| inode(&fs, *ino)),
        What::Block { addr } => block(&dev, *addr),
    };
    match out {
        Ok(v) => {
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_text(&v, 0);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lfs-inspect: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(dev: &Arc<dyn Device>, addr: BlockAddr, blocks: u64) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; blocks as usize * BLOCK_SIZE];
    dev.read_at(&mut b, addr.byte_offset())
        .map_err(|e| format!("cannot read block {addr}: {e}"))?;
    Ok(b)
}

fn sb_json(sb: &Superblock) -> Value {
    let uuid: String = sb.uuid.iter().map(|b| format!("{b:02x}")).collect();
    json!({
        "block_size": BLOCK_SIZE,
        "segment_blocks": sb.seg_blocks,
        "total_blocks": sb.total_blocks,
        "segment_base": sb.seg_base,
        "segments": sb.nsegs,
        "checkpoint_a": sb.cp_a,
        "checkpoint_b": sb.cp_b,
        "checkpoint_blocks": sb.cp_blocks,
        "imap_blocks": sb.imap_blocks,
        "usage_blocks": sb.usage_blocks,
        "reserved_segments": sb.reserved_segs,
        "max_inodes": sb.max_inodes,
        "created_ns": sb.created_ns,
        "uuid": uuid,
        "label": sb.label,
    })
}

/// The superblock: primary, and whether the backup matches it.
fn superblock(dev: &Arc<dyn Device>) -> Out {
    let primary = Superblock::decode(&read(dev, BlockAddr(0), 1)?);
    let last = BlockAddr(dev.len_bytes() / BLOCK_BYTES - 1);
    let backup_at = primary.as_ref().map_or(last, |s| s.backup_addr());
    let backup = Superblock::decode(&read(dev, backup_at, 1)?);
    let sb = match (&primary, &backup) {
        (Ok(s), _) | (Err(_), Ok(s)) => s.clone(),
        (Err(p), Err(b)) => return Err(format!("no valid superblock (primary: {p}; backup: {b})")),
    };
    let mut v = sb_json(&sb);
    v["primary"] = json!(primary
        .as_ref()
        .map_or_else(|e| e.to_string(), |_| "valid".into()));
    v["backup"] = json!(match &backup {
        Ok(b) if *b == sb => "valid".to_string(),
        Ok(_) => "differs from the primary".to_string(),
        Err(e) => e.to_string(),
    });
    v["backup_block"] = json!(backup_at);
    Ok(v)
}

fn any_superblock(dev: &Arc<dyn Device>) -> Result<Superblock, String> {
    if let Ok(sb) = Superblock::decode(&read(dev, BlockAddr(0), 1)?) {
        return Ok(sb);
    }
    let last = BlockAddr(dev.len_bytes() / BLOCK_BYTES - 1);
    Superblock::decode(&read(dev, last, 1)?).map_err(|e| format!("no valid superblock: {e}"))
}

fn cp_json(which: char, at: BlockAddr, cp: &Result<Checkpoint, String>) -> Value {
    match cp {
        Ok(c) => json!({
            "region": which.to_string(),
            "block": at,
            "valid": true,
            "generation": c.generation,
            "timestamp_ns": c.timestamp_ns,
            "clean_unmount": c.clean_unmount,
            "head_segment": c.head_segment,
            "head_offset": c.head_offset,
            "next_seq": c.next_seq,
            "log_id": format!("{:016x}", c.log_id),
            "imap_blocks": c.imap_addrs,
            "usage_blocks": c.usage_addrs,
        }),
        Err(e) => json!({"region": which.to_string(), "block": at, "valid": false, "error": e}),
    }
}

fn checkpoints(dev: &Arc<dyn Device>) -> Out {
    let sb = any_superblock(dev)?;
    let region = |at: BlockAddr| -> Result<Checkpoint, String> {
        let b = read(dev, at, sb.cp_blocks as u64)?;
        Checkpoint::decode(&b, &sb).map_err(|e| e.to_string())
    };
    let (a, b) = (region(sb.cp_a), region(sb.cp_b));
    let used = match (&a, &b) {
        (Ok(x), Ok(y)) if y.generation > x.generation => "B",
        (Ok(_), _) => "A",
        (Err(_), Ok(_)) => "B",
        _ => "none",
    };
    Ok(json!({
        "in_use": used,
        "regions": [cp_json('A', sb.cp_a, &a), cp_json('B', sb.cp_b, &b)],
    }))
}

fn mounted(dev: &Arc<dyn Device>) -> Result<Fs, String> {
    Fs::mount(
        dev.clone(),
        MountOptions {
            read_only: true,
            cache_blocks: 256,
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot mount read-only: {e}"))
}

fn usage(fs: &Fs, all: bool) -> Out {
    let segs: Vec<Value> = fs
        .usage_table()
        .into_iter()
        .filter(|(_, s)| all || s.state != lfs_core::SegState::Clean)
        .map(|(seg, s)| {
            json!({
                "segment": seg,
                "state": format!("{:?}", s.state).to_lowercase(),
                "live_bytes": s.live_bytes,
                "write_time_ns": s.write_time_ns,
            })
        })
        .collect();
    let st = fs.stats();
    Ok(json!({
        "segments": fs.superblock().nsegs,
        "clean": st.clean_segments,
        "live_bytes": st.live_bytes,
        "segment_bytes": fs.superblock().seg_bytes(),
        "table": segs,
    }))
}

fn entry_json(addr: BlockAddr, e: &SummaryEntry) -> Value {
    json!({
        "block": addr,
        "kind": kind_name(e.kind),
        "height": e.height,
        "version": e.version,
        "ino": e.ino,
        "index": e.index,
    })
}

fn kind_name(k: BlockKind) -> &'static str {
    match k {
        BlockKind::Data => "data",
        BlockKind::Indirect => "indirect",
        BlockKind::InodeBlock => "inode",
        BlockKind::Imap => "imap",
        BlockKind::Usage => "usage",
        BlockKind::Xattr => "xattr",
    }
}

fn segment_units(fs: &Fs, seg: u64) -> Out {
    let sb = fs.superblock().clone();
    if seg >= sb.nsegs {
        return Err(format!("segment {seg} out of range (0..{})", sb.nsegs));
    }
    let seg = lfs_core::format::SegNo(seg);
    let scan = fs.scan_segment(seg);
    let start = sb.seg_addr(seg);
    let units: Vec<Value> = scan
        .units
        .iter()
        .map(|u| {
            let s = &u.summary;
            let first = start + u.offset as u64 + 1;
            json!({
                "offset": u.offset,
                "seq": s.seq,
                "log_id": format!("{:016x}", s.log_id),
                "flags": s.flags,
                "blocks": s.entries.len(),
                "next_segment": s.next_segment,
                "timestamp_ns": s.timestamp_ns,
                "entries": s.entries.iter().enumerate()
                    .map(|(i, e)| entry_json(first + i as u64, e)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let state = fs
        .usage_table()
        .get(seg.index())
        .map(|(_, s)| (format!("{:?}", s.state).to_lowercase(), s.live_bytes));
    Ok(json!({
        "segment": seg,
        "first_block": start,
        "state": state.as_ref().map(|s| s.0.clone()),
        "live_bytes": state.map(|s| s.1),
        "units": units,
        "end": scan.end.map(|(off, why)| json!({"offset": off, "verdict": why.to_string()})),
    }))
}

fn inode_json(d: &DiskInode) -> Value {
    json!({
        "ino": d.ino,
        "version": d.version,
        "mode": format!("{:o}", d.mode),
        "kind": d.kind().map(|k| format!("{k:?}").to_lowercase()),
        "nlink": d.nlink,
        "uid": d.uid,
        "gid": d.gid,
        "flags": d.flags,
        "size": d.size,
        "blocks_512": d.blocks,
        "atime": format!("{}.{:09}", d.atime.sec, d.atime.nsec),
        "mtime": format!("{}.{:09}", d.mtime.sec, d.mtime.nsec),
        "ctime": format!("{}.{:09}", d.ctime.sec, d.ctime.nsec),
        "crtime": format!("{}.{:09}", d.crtime.sec, d.crtime.nsec),
        "rdev": d.rdev,
        "xattr_block": d.xattr,
        "direct": d.direct,
        "indirect": d.indirect,
        "parent": d.parent,
    })
}

fn inode(fs: &Fs, ino: u64) -> Out {
    let ino = Ino(ino);
    let e = fs
        .imap_entry(ino)
        .ok_or_else(|| format!("inode {ino} is beyond the inode map"))?;
    let mut v = json!({
        "ino": ino,
        "map": {
            "allocated": e.allocated(),
            "block": e.addr,
            "slot": e.slot,
            "version": e.version,
            "flags": e.flags,
        },
    });
    if e.allocated() {
        let info = fs.inode_info(ino).map_err(|e| e.to_string())?;
        v["inode"] = inode_json(&info.inode);
        v["blocks"] = json!(info
            .blocks
            .iter()
            .map(|(a, e)| entry_json(*a, e))
            .collect::<Vec<_>>());
    }
    Ok(v)
}

fn block(dev: &Arc<dyn Device>, addr: u64) -> Out {
    if addr >= dev.len_bytes() / BLOCK_BYTES {
        return Err(format!("block {addr} is beyond the device"));
    }
    let b = read(dev, BlockAddr(addr), 1)?;
    let lines: Vec<String> = b
        .chunks(32)
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&x| x != 0))
        .map(|(i, c)| {
            let hex: String = c.iter().map(|x| format!("{x:02x}")).collect();
            format!("{:04x}: {hex}", i * 32)
        })
        .collect();
    Ok(json!({"block": addr, "hex": lines, "zero_lines_omitted": true}))
}

/// Text form of a JSON view: `key: value`, nested objects indented, arrays of objects as
/// one line each.
fn print_text(v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match x {
                    Value::Object(_) => {
                        println!("{pad}{k}:");
                        print_text(x, indent + 1);
                    }
                    Value::Array(a) if a.iter().any(|y| y.is_object() || y.is_string()) => {
                        println!("{pad}{k}: ({} items)", a.len());
                        for y in a {
                            match y {
                                Value::Object(_) => {
                                    print_line(y, indent + 1);
                                    if let Some(Value::Array(es)) = y.get("entries") {
                                        for e in es {
                                            print_line(e, indent + 2);
                                        }
                                    }
                                }
                                other => println!("{pad}  {}", plain(other)),
                            }
                        }
                    }
                    other => println!("{pad}{k}: {}", plain(other)),
                }
            }
        }
        other => println!("{pad}{}", plain(other)),
    }
}

fn print_line(v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    if let Value::Object(m) = v {
        let parts: Vec<String> = m
            .iter()
            .filter(|(k, x)| *k != "entries" && !x.is_null())
            .map(|(k, x)| format!("{k}={}", plain(x)))
            .collect();
        println!("{pad}{}", parts.join(" "));
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
