//! mkfs-lfs: format an image file or block device with LFS.
//!
//! `mkfs-lfs [options] IMAGE [SIZE]`, in the conventions of mkfs.ext4 / mkfs.f2fs: a missing
//! image is created when SIZE is given; an existing filesystem (ours or another's) is not
//! overwritten without -f; -n prints the layout and writes nothing. Exit 0 on success, 1 on
//! any failure (usage errors included, as mke2fs does).

use clap::Parser;
use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::format::superblock::{Superblock, DEFAULT_BYTES_PER_INODE};
use lfs_core::format::BLOCK_SIZE;
use lfs_core::fs::MkfsOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "mkfs-lfs",
    version,
    about = "Create an LFS log-structured filesystem on an image file or block device"
)]
struct Cli {
    /// Image file or block device to format.
    image: PathBuf,
    /// Size of the image (K, M, G, T suffixes, powers of two). Creates or extends the file.
    size: Option<String>,
    /// Volume label (up to 64 bytes).
    #[arg(short = 'L', long = "label", default_value = "")]
    label: String,
    /// Block size in bytes (only 4096 is supported).
    #[arg(short = 'b', long = "block-size", default_value = "4096")]
    block_size: String,
    /// Segment size (power of two, 64K..64M).
    #[arg(short = 's', long = "segment-size", default_value = "1M")]
    segment_size: String,
    /// Bytes of capacity per inode (sets the maximum number of files).
    #[arg(short = 'i', long = "bytes-per-inode", default_value_t = DEFAULT_BYTES_PER_INODE.to_string())]
    bytes_per_inode: String,
    /// Overwrite an existing filesystem.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Print nothing but errors.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Dry run: print the layout, write nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
}

/// "64M" → 67108864. Suffixes K M G T (powers of two), optional "iB"/"B".
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(format!(
                        "invalid size '{s}': unknown suffix '{c}' (use K, M, G or T)"
                    ))
                }
            };
            (&t[..t.len() - 1], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{s}'"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// Known signatures of other filesystems and ours: (name, offset, bytes).
const SIGNATURES: &[(&str, u64, &[u8])] = &[
    ("lfs", 0, b"LFSB"),
    ("ext2/3/4", 1080, &[0x53, 0xEF]),
    ("xfs", 0, b"XFSB"),
    ("btrfs", 0x10040, b"_BHRfS_M"),
    ("f2fs", 1024, &[0x10, 0x20, 0xF5, 0xF2]),
    ("nilfs2", 1030, &[0x34, 0x34]),
    ("swap", 4086, b"SWAPSPACE2"),
    ("iso9660", 0x8001, b"CD001"),
    ("LUKS", 0, b"LUKS\xba\xbe"),
];

fn existing_filesystem(dev: &dyn Device) -> Option<&'static str> {
    for (name, off, sig) in SIGNATURES {
        let mut b = vec![0u8; sig.len()];
        if off + sig.len() as u64 <= dev.len_bytes()
            && dev.read_at(&mut b, *off).is_ok()
            && b == *sig
        {
            return Some(name);
        }
    }
    // FAT: "FAT" in the boot sector's type field.
    let mut b = vec![0u8; 512];
    if dev.len_bytes() >= 512
        && dev.read_at(&mut b, 0).is_ok()
        && b[510] == 0x55
        && b[511] == 0xAA
        && (&b[54..57] == b"FAT" || &b[82..85] == b"FAT")
    {
        return Some("vfat");
    }
    None
}

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_layout(sb: &Superblock, path: &Path) {
    let bs = BLOCK_SIZE as u64;
    let usable = (sb.nsegs - sb.reserved_segs as u64) * sb.seg_bytes();
    println!("LFS filesystem on {}", path.display());
    println!(
        "  label:             {}",
        if sb.label.is_empty() {
            "(none)"
        } else {
            &sb.label
        }
    );
    println!("  uuid:              {}", uuid_string(&sb.uuid));
    println!("  block size:        {} bytes", BLOCK_SIZE);
    println!(
        "  segment size:      {} ({} blocks)",
        human(sb.seg_bytes()),
        sb.seg_blocks
    );
    println!(
        "  segments:          {} ({} reserved for the cleaner)",
        sb.nsegs, sb.reserved_segs
    );
    println!(
        "  checkpoint A:      blocks {}..{}",
        sb.cp_a,
        sb.cp_a + (sb.cp_blocks as u64 - 1)
    );
    println!(
        "  checkpoint B:      blocks {}..{}",
        sb.cp_b,
        sb.cp_b + (sb.cp_blocks as u64 - 1)
    );
    println!(
        "  superblocks:       block 0 and block {}",
        sb.backup_addr()
    );
    println!(
        "  device size:       {} ({} blocks)",
        human(sb.total_blocks * bs),
        sb.total_blocks
    );
    println!("  usable capacity:   {}", human(usable));
    println!("  maximum files:     {}", sb.max_inodes - 2);
}

fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..].concat()
    )
}

fn run(cli: Cli) -> Result<(), String> {
    if parse_size(&cli.block_size)? != BLOCK_SIZE as u64 {
        return Err(format!(
            "block size {} is not supported (only 4096)",
            cli.block_size
        ));
    }
    let seg_bytes = parse_size(&cli.segment_size)?;
    let bytes_per_inode = parse_size(&cli.bytes_per_inode)?;
    let size = cli.size.as_deref().map(parse_size).transpose()?;
    if cli.label.len() > 64 {
        return Err("label longer than 64 bytes".into());
    }
    let opts = MkfsOptions {
        seg_bytes,
        bytes_per_inode,
        label: cli.label.clone(),
        uuid: None,
    };
    let meta = std::fs::metadata(&cli.image);
    if let Ok(m) = &meta {
        if m.is_dir() {
            return Err(format!("{} is a directory", cli.image.display()));
        }
    }
    let exists = meta.is_ok();
    let is_blockdev = meta
        .as_ref()
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    if !exists && size.is_none() {
        return Err(format!(
            "{} does not exist; give a SIZE to create it",
            cli.image.display()
        ));
    }
    if let (true, Some(s)) = (is_blockdev, size) {
        // As mke2fs does: a filesystem may use the first SIZE bytes of a device, never more.
        let have = FileDevice::open(
            &cli.image,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?
        .len_bytes();
        if s > have {
            return Err(format!(
                "SIZE {} is larger than the device {} ({})",
                human(s),
                cli.image.display(),
                human(have)
            ));
        }
    }
    // Dry run: compute the layout from what the device is or would be.
    let dev_len = match (size, &meta) {
        (Some(s), _) => s,
        (None, Ok(_)) => FileDevice::open(
            &cli.image,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?
        .len_bytes(),
        (None, Err(e)) => return Err(format!("{}: {e}", cli.image.display())),
    };
    let sb = lfs_core::fs::plan(dev_len, &opts).map_err(|e| strip(&e.to_string()))?;
    if exists {
        let probe = FileDevice::open(
            &cli.image,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        if let Some(fs) = existing_filesystem(&probe) {
            if !cli.force {
                return Err(format!(
                    "{} contains an existing {fs} filesystem; use -f to overwrite it",
                    cli.image.display()
                ));
            }
        }
    }
    if cli.dry_run {
        if !cli.quiet {
            print_layout(&sb, &cli.image);
            println!("dry run (-n): nothing was written");
        }
        return Ok(());
    }
    if !(is_blockdev || (exists && size.is_none())) {
        // Create the image, or extend it to SIZE, before opening it like any device.
        FileDevice::create(&cli.image, size.unwrap_or(dev_len)).map_err(|e| e.to_string())?;
    }
    let dev = FileDevice::open(
        &cli.image,
        OpenOptions {
            read_only: false,
            direct: false,
            lock: true,
        },
    )
    .map_err(|e| e.to_string())?;
    if let Some(s) = size {
        if dev.len_bytes() > s && !cli.quiet {
            eprintln!(
                "note: {} is larger than SIZE; formatting the first {}",
                cli.image.display(),
                human(s)
            );
        }
    }
    let dev: Arc<dyn Device> = Arc::new(Limited {
        inner: dev,
        len: dev_len,
    });
    let sb = lfs_core::mkfs(dev, &opts).map_err(|e| strip(&e.to_string()))?;
    if !cli.quiet {
        print_layout(&sb, &cli.image);
    }
    Ok(())
}

/// Present the device as exactly `len` bytes (an image larger than SIZE is formatted to SIZE).
struct Limited {
    inner: FileDevice,
    len: u64,
}

impl Device for Limited {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn len_bytes(&self) -> u64 {
        self.len.min(self.inner.len_bytes())
    }
}

/// Error texts from the library carry a "filesystem damaged: layout:" prefix; users need
/// the reason only.
fn strip(s: &str) -> String {
    s.trim_start_matches("filesystem damaged: ")
        .trim_start_matches("layout: ")
        .to_string()
}

fn main() -> ExitCode {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkfs-lfs: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
