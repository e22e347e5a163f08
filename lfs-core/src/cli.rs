//! What every command-line tool of the workspace does before anything else.
//!
//! Rust starts programs with SIGPIPE ignored, so a tool whose reader went away (`lfs-inspect
//! IMG usage --all | head -1`) gets EPIPE from its next `println!`, which panics (exit 101, a
//! backtrace on stderr). Coreutils leave SIGPIPE at its default and simply end, quietly, and
//! so do we. Only for the tools: the mount daemon keeps SIGPIPE ignored, since it must never
//! die from a closed log pipe (it ignores write errors on its log instead).

/// End the process quietly (by SIGPIPE, as coreutils do) when standard output or error is a
/// pipe whose reader has gone.
pub fn exit_quietly_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
