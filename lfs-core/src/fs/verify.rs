//! Consistency checks the engine can run on itself: recompute the segment usage table from
//! scratch (every allocated inode, its block tree, its xattr block, the imap blocks) and
//! compare it with the table kept incrementally; and check that no block is claimed twice.
//! fsck-lfs builds on this.

use super::Inner;
use crate::error::Result;
use crate::format::inode::INODE_SIZE;
use crate::format::BLOCK_BYTES;
use std::collections::HashMap;

impl Inner {
    /// Findings, empty when consistent. Writes a checkpoint first so that every block is at
    /// its final address (nothing dirty, nothing half-accounted).
    pub(crate) fn verify(&mut self) -> Result<Vec<String>> {
        if self.st.log.is_some() {
            self.checkpoint()?;
        }
        let sb = self.st.sb.clone();
        let mut live = vec![0u64; sb.nsegs as usize];
        let mut owner: HashMap<u64, String> = HashMap::new();
        let mut findings = Vec::new();
        let mut claim = |addr: u64,
                         bytes: u64,
                         what: String,
                         findings: &mut Vec<String>,
                         live: &mut Vec<u64>| {
            match sb.seg_of(addr) {
                None => findings.push(format!("{what}: block {addr} is outside the log")),
                Some(seg) => {
                    live[seg as usize] += bytes;
                    // Inode blocks are shared by up to fifteen inodes; other blocks by one owner.
                    if bytes == BLOCK_BYTES {
                        if let Some(prev) = owner.insert(addr, what.clone()) {
                            findings.push(format!("block {addr} claimed by {prev} and by {what}"));
                        }
                    }
                }
            }
        };
        for (i, &a) in self.cp.imap_addrs.iter().enumerate() {
            if a != 0 {
                claim(
                    a,
                    BLOCK_BYTES,
                    format!("imap block {i}"),
                    &mut findings,
                    &mut live,
                );
            }
        }
        let inos: Vec<(u64, u64)> = self
            .imap
            .iter_allocated()
            .map(|(ino, e)| (ino, e.addr))
            .collect();
        for (ino, addr) in inos {
            claim(
                addr,
                INODE_SIZE as u64,
                format!("inode {ino}"),
                &mut findings,
                &mut live,
            );
            self.load(ino)?;
            let Inner { inodes, st, .. } = self;
            let Some(i) = inodes.get_mut(&ino) else {
                continue;
            };
            if i.d.xattr != 0 {
                claim(
                    i.d.xattr,
                    BLOCK_BYTES,
                    format!("xattrs of inode {ino}"),
                    &mut findings,
                    &mut live,
                );
            }
            let mut blocks = Vec::new();
            i.bmap.for_each_block(st, &mut |a, e| blocks.push((a, e)))?;
            for (a, e) in blocks {
                claim(
                    a,
                    BLOCK_BYTES,
                    format!("inode {ino} {:?} {} (height {})", e.kind, e.index, e.height),
                    &mut findings,
                    &mut live,
                );
            }
        }
        for (seg, &want) in live.iter().enumerate() {
            let have = self.st.usage.get(seg as u64).map_or(0, |s| s.live_bytes);
            if have != want {
                findings.push(format!(
                    "segment {seg}: usage table says {have} live bytes, recomputed {want}"
                ));
            }
        }
        if self.st.usage.underflows > 0 {
            findings.push(format!(
                "segment usage went negative {} times",
                self.st.usage.underflows
            ));
        }
        Ok(findings)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::device::{Device, MemDevice};
    use crate::fs::{Creds, Fs, MountOptions};
    use crate::{mkfs, MkfsOptions};
    use std::sync::Arc;

    #[test]
    fn verify_finds_a_skewed_usage_count() {
        let dev: Arc<dyn Device> = Arc::new(MemDevice::new(64 << 20));
        mkfs(dev.clone(), &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev, MountOptions::default()).unwrap();
        let a = fs.create(1, b"f", 0o644, Creds::default()).unwrap();
        fs.write(a.ino, 0, &[1u8; 10000]).unwrap();
        assert_eq!(fs.verify().unwrap(), Vec::<String>::new());
        let seg = {
            let mut g = fs.lock();
            let seg = g.st.log.as_ref().unwrap().current_segment();
            g.st.usage.add_live(seg, 4096);
            seg
        };
        let findings = fs.verify().unwrap();
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].starts_with(&format!("segment {seg}: usage table says")),
            "{findings:?}"
        );
    }
}
