//! fsck-lfs (also installed as fsck.lfs, so `fsck -t lfs` finds it): check an LFS image
//! and repair it.
//!
//! `fsck-lfs [-n | -p | -a | -y] [-f] [-v] [--json] IMAGE`, with fsck(8)'s exit bits:
//! 0 clean, 1 errors corrected, 4 errors left uncorrected, 8 operational error, 16 usage
//! error. Without -n/-p/-y it checks only (as -n): it never writes without being asked.
//! A crash is not an error: the log after the checkpoint is rolled forward (in memory under
//! -n) and judged; only damage makes the exit code non-zero.

use clap::Parser;
use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::fsck::{
    fsck, FsckOptions, FsckReport, Mode, EXIT_OK, EXIT_OPERATIONAL, EXIT_UNCORRECTED, EXIT_USAGE,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "fsck-lfs",
    version,
    about = "Check and repair an LFS log-structured filesystem image",
    after_help = "Exit status (fsck(8) bits): 0 no errors, 1 errors corrected, 4 errors left \
                  uncorrected, 8 operational error, 16 usage error."
)]
struct Cli {
    /// Image file or block device (not mounted).
    image: PathBuf,
    /// Check only; open the image read-only and write nothing.
    #[arg(short = 'n', long = "no")]
    no: bool,
    /// Repair everything that can be repaired.
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// Preen: repair what is safe without asking; stop on anything else.
    #[arg(short = 'p', long = "preen")]
    preen: bool,
    /// Same as -p.
    #[arg(short = 'a', hide = true)]
    auto: bool,
    /// Check even if the filesystem was unmounted cleanly.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Say what is checked.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print the report as JSON on stdout (findings, repairs, exit code).
    #[arg(long = "json")]
    json: bool,
    /// Progress file descriptor, as fsck(8) passes it (accepted and ignored).
    #[arg(short = 'C', hide = true, allow_hyphen_values = true)]
    progress_fd: Option<String>,
}

fn main() -> ExitCode {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    ExitCode::from(run(&cli) as u8)
}

fn run(cli: &Cli) -> i32 {
    let name = cli.image.display().to_string();
    let preen = cli.preen || cli.auto;
    let mode = match (cli.no, preen, cli.yes) {
        (_, false, false) => Mode::Check,
        (false, true, false) => Mode::Preen,
        (false, false, true) => Mode::Yes,
        _ => {
            eprintln!("fsck-lfs: only one of -n, -p/-a and -y may be given");
            return EXIT_USAGE;
        }
    };
    let opened = FileDevice::open(
        &cli.image,
        OpenOptions {
            read_only: mode == Mode::Check,
            direct: false,
            lock: true,
        },
    );
    let dev: Arc<dyn Device> = match opened {
        Ok(d) => Arc::new(d),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            eprintln!("fsck-lfs: {name} is in use (mounted?); unmount it first");
            return EXIT_OPERATIONAL;
        }
        Err(e) => {
            eprintln!("fsck-lfs: {e}");
            return EXIT_OPERATIONAL;
        }
    };
    if cli.verbose {
        eprintln!(
            "fsck-lfs: checking {name} ({})",
            match mode {
                Mode::Check => "check only",
                Mode::Preen => "preen",
                Mode::Yes => "repair",
            }
        );
    }
    let report = match fsck(
        dev,
        FsckOptions {
            mode,
            force: cli.force,
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fsck-lfs: {name}: {e}");
            return EXIT_OPERATIONAL;
        }
    };
    if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("fsck-lfs: {e}");
                return EXIT_OPERATIONAL;
            }
        }
    } else {
        print_report(&name, &report, mode, cli.verbose);
    }
    report.exit_code
}

fn print_report(name: &str, r: &FsckReport, mode: Mode, verbose: bool) {
    for f in &r.findings {
        let what = if f.is_damage() { "error" } else { "crash" };
        let done = if r.repaired.contains(f) {
            if f.is_damage() {
                " (repaired)"
            } else {
                " (recovered)"
            }
        } else {
            ""
        };
        println!("{name}: {what}: {f}{done}");
    }
    let u = &r.usage;
    let counts = format!(
        "{}/{} files, {}/{} segments in use, {} MiB live",
        u.inodes_used,
        u.inodes_total,
        u.segments_total - u.segments_clean,
        u.segments_total,
        u.live_bytes >> 20
    );
    let state = if !r.checked {
        "clean (not checked: unmounted cleanly; -f forces a check)".to_string()
    } else if r.remaining.is_empty() {
        if r.findings.iter().any(|f| f.is_damage()) {
            "repaired".to_string()
        } else {
            "clean".to_string()
        }
    } else {
        let n = r.remaining.len();
        let hint = match mode {
            Mode::Check => "; run fsck-lfs -y to repair",
            Mode::Preen => "; UNEXPECTED INCONSISTENCY: run fsck-lfs -y manually",
            Mode::Yes if r.exit_code & EXIT_UNCORRECTED != 0 => "; not repairable",
            Mode::Yes => "",
        };
        format!("{n} error(s) left{hint}")
    };
    println!("{name}: {state}, {counts}");
    if verbose {
        eprintln!(
            "fsck-lfs: {} findings, {} repaired, exit {}",
            r.findings.len(),
            r.repaired.len(),
            r.exit_code
        );
    }
}
