//! The control socket: how `lfs-cleaner` talks to the daemon of a live mount.
//!
//! A Unix stream socket, mode 0600, named after the canonical mountpoint (systemd-style
//! escaping: `/mnt/data` → `mnt-data.sock`) in `/run/lfs-fuse/` when that is writable
//! (root), else `$XDG_RUNTIME_DIR/lfs-fuse/`, else `/tmp/lfs-fuse-UID/`. One JSON request
//! per line, one JSON reply per line:
//!
//! ```text
//! {"cmd":"status"}                                  {"ok":true,"status":{…}}
//! {"cmd":"pass","policy":"greedy","segments":8}     {"ok":true,"report":{…}}
//! {"cmd":"suspend"} / {"cmd":"resume"}              {"ok":true}
//!                                                   {"ok":false,"error":"…"}
//! ```
//!
//! Requests are served one at a time; a socket file left by a daemon that died is replaced,
//! one still answered by a live daemon is not.

use crate::daemon::Handle;
use crate::status::Status;
use lfs_core::fs::CleanReport;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Pass {
        #[serde(default)]
        policy: Option<String>,
        #[serde(default)]
        segments: Option<usize>,
    },
    Suspend,
    Resume,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<PassReport>,
}

/// A pass as the socket carries it.
pub type PassReport = CleanReport;

/// The socket's file name for a mountpoint (canonical, absolute).
pub fn socket_name(mountpoint: &Path) -> String {
    let bytes = mountpoint.as_os_str().as_encoded_bytes();
    let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    let mut s = String::new();
    for &b in trimmed {
        match b {
            b'/' => s.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    // sun_path holds 108 bytes: long names become a checksum of the path.
    if s.len() > 80 {
        s = format!("h{:08x}", crc32fast::hash(bytes));
    }
    s + ".sock"
}

/// Directories a socket may live in, most preferred first.
pub fn socket_dirs() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/run/lfs-fuse")];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(Path::new(&x).join("lfs-fuse"));
    }
    // SAFETY: getuid cannot fail.
    v.push(PathBuf::from(format!("/tmp/lfs-fuse-{}", unsafe {
        libc::getuid()
    })));
    v
}

/// The socket of a live mount, if its daemon serves one.
pub fn find_socket(mountpoint: &Path) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(mountpoint).ok()?;
    let name = socket_name(&canon);
    socket_dirs()
        .into_iter()
        .map(|d| d.join(&name))
        .find(|p| UnixStream::connect(p).is_ok())
}

/// A running control server; `stop` removes the socket and joins the thread.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve `handle` for `mountpoint` (canonical), in the first usable directory.
    pub fn start(mountpoint: &Path, handle: Handle) -> std::io::Result<Server> {
        let name = socket_name(mountpoint);
        let mut last = None;
        for dir in socket_dirs() {
            match Server::bind(&dir, &name) {
                Ok(l) => return Server::spawn(dir.join(&name), l, handle),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no directory for the socket")))
    }

    fn bind(dir: &Path, name: &str) -> std::io::Result<UnixListener> {
        std::fs::create_dir_all(dir)?;
        let meta = std::fs::metadata(dir)?;
        if meta.permissions().mode() & 0o022 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        let path = dir.join(name);
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("{}: another daemon answers there", path.display()),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let l = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(l)
    }

    fn spawn(path: PathBuf, l: UnixListener, handle: Handle) -> std::io::Result<Server> {
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lfs-cleaner-ctl".into())
            .spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => serve_one(c, &handle),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "control socket accept failed");
                            std::thread::sleep(Duration::from_millis(500))
                        }
                    }
                }
            })?;
        tracing::info!(socket = %path.display(), "cleaner control socket");
        Ok(Server {
            path,
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answer the requests of one connection until it closes.
fn serve_one(c: UnixStream, h: &Handle) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = c.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(c).lines();
    while let Some(Ok(line)) = lines.next() {
        let reply = match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::err(format!("bad request: {e}")),
            Ok(Request::Status) => Reply {
                status: Some(h.status()),
                ..Reply::ok()
            },
            Ok(Request::Suspend) => {
                h.suspend();
                Reply::ok()
            }
            Ok(Request::Resume) => {
                h.resume();
                Reply::ok()
            }
            Ok(Request::Pass { policy, segments }) => {
                if policy
                    .as_deref()
                    .is_some_and(|p| crate::policy_by_name(p).is_none())
                {
                    Reply::err("unknown policy (greedy or cost-benefit)".into())
                } else {
                    match h.pass(policy.as_deref(), segments) {
                        Ok(r) => Reply {
                            report: Some(r),
                            ..Reply::ok()
                        },
                        Err(e) => Reply::err(format!("cleaning pass failed: {e}")),
                    }
                }
            }
        };
        let Ok(mut text) = serde_json::to_string(&reply) else {
            return;
        };
        text.push('\n');
        if w.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

impl Reply {
    fn ok() -> Reply {
        Reply {
            ok: true,
            error: None,
            status: None,
            report: None,
        }
    }
    fn err(e: String) -> Reply {
        Reply {
            ok: false,
            error: Some(e),
            ..Reply::ok()
        }
    }
}

/// The client side: one connection, requests in turn.
pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    pub fn connect(path: &Path) -> std::io::Result<Client> {
        let w = UnixStream::connect(path)?;
        Ok(Client {
            r: BufReader::new(w.try_clone()?),
            w,
        })
    }

    pub fn call(&mut self, req: &Request) -> Result<Reply, String> {
        let mut text = serde_json::to_string(req).map_err(|e| e.to_string())?;
        text.push('\n');
        self.w
            .write_all(text.as_bytes())
            .map_err(|e| format!("control socket: {e}"))?;
        let mut line = String::new();
        self.r
            .read_line(&mut line)
            .map_err(|e| format!("control socket: {e}"))?;
        if line.is_empty() {
            return Err("the daemon closed the control socket".into());
        }
        let reply: Reply =
            serde_json::from_str(&line).map_err(|e| format!("bad reply from the daemon: {e}"))?;
        if reply.ok {
            Ok(reply)
        } else {
            Err(reply.error.unwrap_or_else(|| "request failed".into()))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_like_systemd_and_stay_short() {
        assert_eq!(socket_name(Path::new("/mnt/data")), "mnt-data.sock");
        assert_eq!(socket_name(Path::new("/")), "-.sock");
        assert_eq!(socket_name(Path::new("/a b/c-d")), "a\\x20b-c\\x2dd.sock");
        let long = format!("/{}", "x".repeat(200));
        let n = socket_name(Path::new(&long));
        assert!(n.len() < 20 && n.ends_with(".sock"), "{n}");
    }

    #[test]
    fn requests_round_trip() {
        let r: Request = serde_json::from_str(r#"{"cmd":"pass","segments":3}"#).unwrap();
        assert_eq!(
            r,
            Request::Pass {
                policy: None,
                segments: Some(3)
            }
        );
        let s = serde_json::to_string(&Request::Suspend).unwrap();
        assert_eq!(s, r#"{"cmd":"suspend"}"#);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }
}
