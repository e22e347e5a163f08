//! lfs-cleaner: status and control of the cleaner, on a live mount (through the daemon's
//! control socket) or on an unmounted image (offline, in this process); and the Sprite
//! cleaning simulator.

use clap::{Parser, Subcommand};
use lfs_cleaner::control::{find_socket, Client, PassReport, Request};
use lfs_cleaner::sim::{self, Access, SegmentAge, SimConfig};
use lfs_cleaner::status::{size, Status};
use lfs_cleaner::{policy_by_name, run_pass, CostBenefit, Greedy, Picker, Policy};
use lfs_core::device::{Device, FileDevice, OpenOptions};
use lfs_core::{Fs, MountOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "lfs-cleaner",
    version,
    about = "Status and control of the LFS cleaner, on a mountpoint (live) or an image (offline)",
    after_help = "TARGET is a mountpoint of lfs-fuse (the mount's cleaner daemon is asked \
                  through its control socket) or an unmounted image or device (cleaned here).\n\
                  Exit status: 0 done, 1 failed, 2 usage error."
)]
struct Cli {
    /// Policy for passes run by this command: cost-benefit or greedy (default: the daemon's,
    /// offline cost-benefit).
    #[arg(long, global = true, value_parser = parse_policy)]
    policy: Option<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Space (live / reclaimable / free), segment utilizations, the cleaner's work and write cost.
    Status { target: PathBuf },
    /// Run one cleaning pass now (even if the daemon is suspended).
    Pass {
        target: PathBuf,
        /// Most segments to take (default: the daemon's segments per pass, offline 8).
        #[arg(long, value_parser = positive)]
        segments: Option<usize>,
    },
    /// Clean until at least this many segments are clean ("50" or "25%").
    Run {
        target: PathBuf,
        #[arg(long = "until-clean", value_name = "N|P%", value_parser = parse_goal)]
        until: Goal,
        #[arg(long, value_parser = positive)]
        segments: Option<usize>,
        /// No progress bar even on a terminal.
        #[arg(long)]
        quiet: bool,
    },
    /// Stop the daemon's background passes (a writer out of space still cleans).
    Suspend { mountpoint: PathBuf },
    /// Let the daemon clean again.
    Resume { mountpoint: PathBuf },
    /// The Sprite LFS cleaning simulator, with the same policy code.
    Simulate {
        /// Smaller disk and shorter runs (seconds instead of minutes).
        #[arg(long)]
        quick: bool,
        /// Also compare the two meanings of a segment's age for cost-benefit.
        #[arg(long)]
        age: bool,
        /// Write the curves as SVG here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Utilizations to simulate, in percent (default 10..=90 by 5 and the table's 75..90).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..100))]
        at: Vec<u32>,
        #[arg(long, default_value_t = 500)]
        segments: usize,
        #[arg(long, default_value_t = 256)]
        segment_blocks: usize,
        /// Model a write-back buffer of this many blocks (the engine's is 2048).
        #[arg(long, default_value_t = 0)]
        buffer_blocks: usize,
        /// Buffer a write only with room for the whole buffer above the reserve, as the
        /// engine does (the paper's model lets the buffer borrow room).
        #[arg(long)]
        admission: bool,
        /// Model the engine's metadata for files of this many blocks (tree nodes, inode
        /// blocks, summaries, checkpoints); 0: none, the paper's model.
        #[arg(long, default_value_t = 0)]
        file_blocks: usize,
        /// With --file-blocks: blocks each cleaning pass's checkpoints write.
        #[arg(long, default_value_t = 3)]
        checkpoint_blocks: usize,
        /// With --file-blocks, a what-if: passes record their moves instead of rewriting
        /// tree nodes and inodes (the engine does not; see docs/CLEANER.md).
        #[arg(long)]
        deferred_nodes: bool,
        /// A what-if for format version 2: the cleaner writes into a segment of its own
        /// (a log head for the cleaner's output), never beside new writes.
        #[arg(long)]
        cleaner_head: bool,
        /// Clean when this few segments are clean, until this many are (the daemon's low
        /// and high watermarks).
        #[arg(long, default_value_t = 2)]
        low: usize,
        #[arg(long, default_value_t = 10)]
        high: usize,
    },
}

/// How many segments `run --until-clean` wants clean.
#[derive(Debug, Clone, Copy)]
enum Goal {
    Segments(u64),
    Percent(u64),
}

fn parse_goal(s: &str) -> Result<Goal, String> {
    match s.strip_suffix('%') {
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|p| *p <= 100)
            .map(Goal::Percent)
            .ok_or_else(|| format!("{s}: not a percentage from 0% to 100%")),
        None => s
            .parse::<u64>()
            .map(Goal::Segments)
            .map_err(|_| format!("{s}: not a number of segments or a percentage")),
    }
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{s}: not a number above 0"))
}

fn parse_policy(s: &str) -> Result<String, String> {
    policy_by_name(s)
        .map(|p| p.name().to_string())
        .ok_or_else(|| format!("{s}: not greedy or cost-benefit"))
}

fn main() -> ExitCode {
    lfs_core::cli::exit_quietly_on_closed_pipe();
    tracing_init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lfs-cleaner: {e}");
            ExitCode::from(1)
        }
    }
}

fn tracing_init() {
    // Warnings from the engine (a pass that freed nothing) reach the terminal.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .without_time()
        .try_init();
}

/// A live mount's daemon or an image opened here.
enum Target {
    Live(Client),
    Offline(Box<Fs>),
}

impl Target {
    fn open(path: &Path, write: bool) -> Result<Target, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let sock = find_socket(path).ok_or_else(|| {
                format!(
                    "{}: no cleaner daemon answers for this directory (not an lfs-fuse \
                     mountpoint, or mounted read-only)",
                    path.display()
                )
            })?;
            return Client::connect(&sock)
                .map(Target::Live)
                .map_err(|e| format!("{}: {e}", sock.display()));
        }
        let dev = FileDevice::open(
            path,
            OpenOptions {
                read_only: !write,
                direct: false,
                lock: true,
            },
        )
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                format!(
                    "{}: in use (mounted?): give the mountpoint instead",
                    path.display()
                )
            } else {
                e.to_string() // names the image
            }
        })?;
        let dev: Arc<dyn Device> = Arc::new(dev);
        let picker = Picker {
            policy: Box::new(CostBenefit),
        };
        let fs = Fs::mount(
            dev,
            MountOptions {
                read_only: !write,
                cleaner: Some(Arc::new(picker)),
                ..Default::default()
            },
        )
        .map_err(|e| format!("cannot mount {}: {e}", path.display()))?;
        Ok(Target::Offline(Box::new(fs)))
    }

    fn status(&mut self) -> Result<Status, String> {
        match self {
            Target::Live(c) => c
                .call(&Request::Status)?
                .status
                .ok_or_else(|| "the daemon sent no status".into()),
            Target::Offline(fs) => {
                let mut s = Status::gather(fs);
                s.mode = "offline".into();
                s.state = "off".into();
                s.policy = "cost-benefit".into();
                s.segments_per_pass = 8;
                Ok(s)
            }
        }
    }

    fn pass(
        &mut self,
        policy: Option<&str>,
        segments: Option<usize>,
    ) -> Result<PassReport, String> {
        match self {
            Target::Live(c) => c
                .call(&Request::Pass {
                    policy: policy.map(str::to_string),
                    segments,
                })?
                .report
                .ok_or_else(|| "the daemon sent no report".into()),
            Target::Offline(fs) => {
                let p = policy
                    .and_then(policy_by_name)
                    .unwrap_or_else(|| Box::new(CostBenefit));
                // Offline nothing is being written: no segment is too young.
                run_pass(fs, p.as_ref(), segments.unwrap_or(8), Duration::ZERO)
                    .map_err(|e| format!("cleaning pass failed: {e}"))
            }
        }
    }

    fn close(self) -> Result<(), String> {
        match self {
            Target::Live(_) => Ok(()),
            Target::Offline(fs) => fs
                .unmount()
                .map_err(|e| format!("final checkpoint failed: {e}")),
        }
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn run(cli: &Cli) -> Result<(), String> {
    let policy = cli.policy.as_deref();
    match &cli.cmd {
        Cmd::Status { target } => {
            let mut t = Target::open(target, false)?;
            let s = t.status()?;
            t.close()?;
            if cli.json {
                print_json(&s)
            } else {
                print!("{}", s.render());
                Ok(())
            }
        }
        Cmd::Pass { target, segments } => {
            let mut t = Target::open(target, true)?;
            let r = t.pass(policy, *segments)?;
            t.close()?;
            if cli.json {
                return print_json(&r);
            }
            println!(
                "cleaned {} segments ({} freed): {} live moved, {} blocks read, {} written",
                r.segments.len(),
                r.freed,
                size(r.live_bytes),
                r.blocks_read,
                r.blocks_written
            );
            if r.segments.is_empty() {
                println!("nothing to clean: every dirty segment is fully live");
            }
            Ok(())
        }
        Cmd::Run {
            target,
            until,
            segments,
            quiet,
        } => run_until(cli, target, *until, *segments, *quiet),
        Cmd::Suspend { mountpoint } | Cmd::Resume { mountpoint } => {
            let suspend = matches!(cli.cmd, Cmd::Suspend { .. });
            let Target::Live(mut c) = Target::open(mountpoint, false)? else {
                return Err(format!(
                    "{}: suspend and resume act on a mount's daemon; give its mountpoint",
                    mountpoint.display()
                ));
            };
            c.call(if suspend {
                &Request::Suspend
            } else {
                &Request::Resume
            })?;
            if cli.json {
                print_json(&serde_json::json!({"ok": true}))
            } else {
                println!("cleaner {}", if suspend { "suspended" } else { "resumed" });
                Ok(())
            }
        }
        Cmd::Simulate {
            quick,
            age,
            svg,
            at,
            segments,
            segment_blocks,
            buffer_blocks,
            admission,
            file_blocks,
            checkpoint_blocks,
            deferred_nodes,
            cleaner_head,
            low,
            high,
        } => {
            let base = SimConfig {
                segments: *segments,
                seg_blocks: *segment_blocks,
                buffer_blocks: *buffer_blocks,
                admission: *admission,
                cleaner_head: *cleaner_head,
                metadata: (*file_blocks > 0).then_some(sim::Metadata {
                    file_blocks: *file_blocks,
                    checkpoint_blocks: *checkpoint_blocks,
                    deferred_nodes: *deferred_nodes,
                }),
                reserve: *low,
                clean_target: *high,
                ..SimConfig::paper(0.5, Access::Uniform)
            };
            simulate(cli, *quick, *age, svg.as_deref(), at, &base)
        }
    }
}

fn run_until(
    cli: &Cli,
    target: &Path,
    until: Goal,
    segments: Option<usize>,
    quiet: bool,
) -> Result<(), String> {
    let mut t = Target::open(target, true)?;
    let first = t.status()?;
    let goal = match until {
        Goal::Percent(p) => first.segments * p / 100,
        Goal::Segments(n) => n,
    };
    let bar = !quiet && !cli.json && std::io::stderr().is_terminal();
    let start = first.clean_segments;
    let mut now = first;
    let mut passes = Vec::new();
    let mut stuck = 0;
    let mut best = start;
    while now.clean_segments < goal {
        let r = t.pass(cli.policy.as_deref(), segments)?;
        now = t.status()?;
        if bar {
            let done = now.clean_segments.saturating_sub(start);
            let want = goal.saturating_sub(start).max(1);
            let w = (done * 30 / want).min(30) as usize;
            eprint!(
                "\r[{}{}] {}/{} clean segments, {} passes",
                "#".repeat(w),
                " ".repeat(30 - w),
                now.clean_segments,
                goal,
                passes.len() + 1
            );
        }
        let empty = r.segments.is_empty();
        passes.push(r);
        // Progress is clean segments gained, not segments freed: cleaning nearly full
        // segments frees them but fills as many new ones.
        if empty || now.clean_segments <= best {
            stuck += 1;
            if empty || stuck >= 3 {
                if bar {
                    eprintln!();
                }
                t.close()?;
                return Err(format!(
                    "stopped at {} clean segments, short of {goal}: {}",
                    now.clean_segments,
                    if empty {
                        "every dirty segment is fully live (delete data to make room)"
                    } else {
                        "three passes in a row gained no clean segment (the rest is live data \
                         and the log's own tables)"
                    }
                ));
            }
        } else {
            stuck = 0;
            best = now.clean_segments;
        }
    }
    if bar {
        eprintln!();
    }
    t.close()?;
    if cli.json {
        return print_json(&serde_json::json!({
            "goal": goal,
            "clean_segments": now.clean_segments,
            "passes": passes,
            "status": now,
        }));
    }
    println!(
        "{} clean segments (goal {goal}) after {} passes; {} segments cleaned",
        now.clean_segments,
        passes.len(),
        passes.iter().map(|p| p.freed).sum::<u64>()
    );
    Ok(())
}

#[derive(serde::Serialize)]
struct SimRow {
    utilization: f64,
    access: String,
    policy: String,
    age: &'static str,
    write_cost: f64,
    cleaned_utilization: f64,
}

fn simulate(
    cli: &Cli,
    quick: bool,
    age: bool,
    svg: Option<&Path>,
    at: &[u32],
    template: &SimConfig,
) -> Result<(), String> {
    if template.seg_blocks == 0
        || template.reserve == 0
        || template.clean_target <= template.reserve
        || template.segments < template.clean_target + 2
    {
        return Err(format!(
            "cannot simulate {} segments of {} blocks cleaning from {} to {} clean: need \
             blocks, 0 < --low < --high, and --segments above --high + 1",
            template.segments, template.seg_blocks, template.reserve, template.clean_target
        ));
    }
    let mut us: Vec<f64> = if at.is_empty() {
        (2..=18).map(|i| i as f64 * 0.05).collect()
    } else {
        at.iter().map(|&p| p as f64 / 100.0).collect()
    };
    us.sort_by(f64::total_cmp);
    us.dedup();
    let base = |u: f64, access: Access| {
        let mut c = SimConfig {
            utilization: u,
            access,
            ..template.clone()
        };
        if quick {
            c.segments = c.segments.min(150);
            c.warmup_capacities = 5.0;
            c.measure_capacities = 10.0;
        }
        c
    };
    let mut runs: Vec<(&str, &dyn Policy, Access, SegmentAge)> = vec![
        ("greedy", &Greedy, Access::Uniform, SegmentAge::Written),
        (
            "greedy",
            &Greedy,
            Access::PAPER_HOT_COLD,
            SegmentAge::Written,
        ),
        (
            "cost-benefit",
            &CostBenefit,
            Access::Uniform,
            SegmentAge::Written,
        ),
        (
            "cost-benefit",
            &CostBenefit,
            Access::PAPER_HOT_COLD,
            SegmentAge::Written,
        ),
    ];
    if age {
        runs.push((
            "cost-benefit",
            &CostBenefit,
            Access::PAPER_HOT_COLD,
            SegmentAge::YoungestBlock,
        ));
    }
    let mut rows = Vec::new();
    for &(name, p, access, a) in &runs {
        for &u in &us {
            let cfg = SimConfig {
                age: a,
                ..base(u, access)
            };
            match sim::simulate(p, &cfg) {
                Ok(r) => rows.push(SimRow {
                    utilization: u,
                    access: access.name(),
                    policy: name.into(),
                    age: match a {
                        SegmentAge::Written => "segment written",
                        SegmentAge::YoungestBlock => "youngest block",
                    },
                    write_cost: r.write_cost,
                    cleaned_utilization: r.cleaned_utilization,
                }),
                Err(e) => eprintln!("lfs-cleaner: skipped: {e}"),
            }
        }
    }
    if rows.is_empty() {
        return Err("nothing could be simulated with these settings (see above)".into());
    }
    if let Some(path) = svg {
        let pick = |policy: &str, hot: bool, age: &str| -> Vec<(f64, f64)> {
            rows.iter()
                .filter(|r| {
                    r.policy == policy && r.access.starts_with("hot") == hot && r.age == age
                })
                .map(|r| (r.utilization, r.write_cost))
                .collect()
        };
        let mut curves = vec![
            sim::Curve {
                label: "greedy, uniform".into(),
                colour: "#888888",
                dashed: true,
                points: pick("greedy", false, "segment written"),
                marks_only: false,
            },
            sim::Curve {
                label: "greedy, hot-and-cold".into(),
                colour: "#d62728",
                dashed: false,
                points: pick("greedy", true, "segment written"),
                marks_only: false,
            },
            sim::Curve {
                label: "cost-benefit, hot-and-cold".into(),
                colour: "#1f77b4",
                dashed: false,
                points: pick("cost-benefit", true, "segment written"),
                marks_only: false,
            },
        ];
        if age {
            curves.push(sim::Curve {
                label: "c-b, age = youngest block".into(),
                colour: "#2ca02c",
                dashed: true,
                points: pick("cost-benefit", true, "youngest block"),
                marks_only: false,
            });
        }
        curves.push(sim::Curve {
            label: "reference: greedy".into(),
            colour: "#d62728",
            dashed: false,
            points: sim::HOT_COLD_REFERENCE.iter().map(|r| (r.0, r.1)).collect(),
            marks_only: true,
        });
        curves.push(sim::Curve {
            label: "reference: cost-benefit".into(),
            colour: "#1f77b4",
            dashed: false,
            points: sim::HOT_COLD_REFERENCE.iter().map(|r| (r.0, r.2)).collect(),
            marks_only: true,
        });
        std::fs::write(
            path,
            sim::svg("Write cost against disk utilization (simulated)", &curves),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if cli.json {
        return print_json(&rows);
    }
    println!(
        "{:>5}  {:<20} {:<13} {:<16} {:>10} {:>14}",
        "util", "access", "policy", "age", "write cost", "cleaned u"
    );
    for r in &rows {
        let reference = sim::HOT_COLD_REFERENCE
            .iter()
            .find(|x| (x.0 - r.utilization).abs() < 1e-9 && r.access.starts_with("hot"))
            .map(|x| if r.policy == "greedy" { x.1 } else { x.2 });
        println!(
            "{:>4.0}%  {:<20} {:<13} {:<16} {:>10.2} {:>13.1}%{}",
            r.utilization * 100.0,
            r.access,
            r.policy,
            r.age,
            r.write_cost,
            r.cleaned_utilization * 100.0,
            reference.map_or(String::new(), |x| format!("   (reference {x:.2})"))
        );
    }
    Ok(())
}
