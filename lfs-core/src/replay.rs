//! Which flush groups a format version 2 roll-forward applies (docs/FORMAT-V2.md §9), as a
//! pure decision over the units the streams' readers found valid. The streams are read
//! independently (each from its head, each unit checked against its own stream's sequence),
//! so a crash can leave any subset of a group's units, spread over several streams; a group
//! is applied only when every sequence number from its first to its last was read, the last
//! carrying ROOT with that range, and groups are applied contiguously from the checkpoint's
//! `next_seq` — the first missing or incomplete group ends the roll-forward, since a later
//! group may depend on it. Not used by the engine yet (issue 20, step 3).

use crate::format::v2::summary::{FLAG_CONT, FLAG_ROOT};
use std::collections::BTreeMap;

/// What a stream reader found: one valid unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub stream: u8,
    pub seq: u64,
    pub flags: u16,
    /// For a ROOT unit: the group's range as its root block states it.
    pub group: Option<(u64, u64)>,
}

/// Why the roll-forward stops where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Nothing was written after the last group applied.
    End,
    /// Sequence number `seq` was never read: the group holding it is incomplete (or, if
    /// later units exist, one was lost) — everything from here is discarded.
    Missing { seq: u64 },
    /// Units that cannot form a group: a ROOT whose range is not the one the units make,
    /// a unit without CONT before the root, or two units with one number.
    Inconsistent { seq: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Groups to apply, in order: `(first seq, last seq)`.
    pub groups: Vec<(u64, u64)>,
    /// The sequence number after the last group applied (the next unit's, and where the
    /// recovery's RECOVERED entry says the log was cut).
    pub next_seq: u64,
    pub stop: Stop,
    /// Units read but not applied (at or past the cut).
    pub discarded: usize,
}

pub fn plan(next_seq: u64, found: &[Found]) -> Plan {
    let mut by_seq: BTreeMap<u64, Found> = BTreeMap::new();
    // The lowest number read twice: no group can be formed through it.
    let mut duplicate: Option<u64> = None;
    for f in found.iter().filter(|f| f.seq >= next_seq) {
        if by_seq.insert(f.seq, *f).is_some() {
            duplicate = Some(duplicate.map_or(f.seq, |d| d.min(f.seq)));
        }
    }
    let mut groups = Vec::new();
    let mut s = next_seq;
    let stop = loop {
        if !by_seq.contains_key(&s) {
            break if by_seq.range(s..).next().is_some() {
                Stop::Missing { seq: s }
            } else {
                Stop::End
            };
        }
        // Walk the group: CONT units, then the ROOT one.
        let mut k = s;
        let outcome = loop {
            if duplicate == Some(k) {
                break Err(Stop::Inconsistent { seq: k });
            }
            let Some(u) = by_seq.get(&k) else {
                break Err(Stop::Missing { seq: k });
            };
            if u.flags & FLAG_ROOT != 0 {
                break if u.group == Some((s, k)) && u.flags & FLAG_CONT == 0 {
                    Ok(k)
                } else {
                    Err(Stop::Inconsistent { seq: k })
                };
            }
            if u.flags & FLAG_CONT == 0 {
                break Err(Stop::Inconsistent { seq: k });
            }
            k += 1;
        };
        match outcome {
            Ok(last) => {
                groups.push((s, last));
                s = last + 1;
            }
            Err(stop) => break stop,
        }
    };
    let discarded = by_seq.range(s..).count();
    Plan {
        groups,
        next_seq: s,
        stop,
        discarded,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cont(stream: u8, seq: u64) -> Found {
        Found {
            stream,
            seq,
            flags: FLAG_CONT,
            group: None,
        }
    }
    fn root(stream: u8, first: u64, last: u64) -> Found {
        Found {
            stream,
            seq: last,
            flags: FLAG_ROOT,
            group: Some((first, last)),
        }
    }

    #[test]
    fn groups_over_several_streams_apply_in_order() {
        // Group 10..=12 over streams 1, 2, 0; group 13..=13; group 14..=15.
        let found = [
            cont(1, 10),
            cont(2, 11),
            root(0, 10, 12),
            root(0, 13, 13),
            cont(3, 14),
            root(0, 14, 15),
        ];
        let p = plan(10, &found);
        assert_eq!(p.groups, vec![(10, 12), (13, 13), (14, 15)]);
        assert_eq!((p.next_seq, p.stop, p.discarded), (16, Stop::End, 0));
        // The readers' order does not matter.
        let mut rev = found;
        rev.reverse();
        assert_eq!(plan(10, &rev), p);
    }

    #[test]
    fn a_lost_unit_cuts_the_log_there_even_with_complete_groups_after_it() {
        // 11 never reached the disk; the group after it is whole but may depend on it.
        let found = [cont(1, 10), root(0, 10, 12), root(0, 13, 13)];
        let p = plan(10, &found);
        assert_eq!(p.groups, vec![]);
        assert_eq!(p.stop, Stop::Missing { seq: 11 });
        assert_eq!((p.next_seq, p.discarded), (10, 3));
        // A whole group lost (written without a flush, say): the next one is not applied.
        let found = [root(0, 10, 10), root(2, 12, 12)];
        let p = plan(10, &found);
        assert_eq!(p.groups, vec![(10, 10)]);
        assert_eq!((p.stop, p.discarded), (Stop::Missing { seq: 11 }, 1));
        // A group whose last unit is missing, nothing after it: the group is dropped.
        let p = plan(10, &[cont(0, 10), cont(1, 11)]);
        assert_eq!((p.groups.len(), p.stop), (0, Stop::Missing { seq: 12 }));
    }

    #[test]
    fn stale_and_inconsistent_units_are_not_applied() {
        // Units before the checkpoint's next_seq are another era's: ignored.
        let p = plan(20, &[root(0, 5, 5), root(0, 20, 20)]);
        assert_eq!((p.groups, p.stop), (vec![(20, 20)], Stop::End));
        // A root claiming a range the units do not make.
        let p = plan(10, &[cont(0, 10), root(1, 9, 11)]);
        assert_eq!(p.stop, Stop::Inconsistent { seq: 11 });
        // A unit without CONT before the root, and a ROOT with CONT.
        let bare = Found {
            stream: 0,
            seq: 10,
            flags: 0,
            group: None,
        };
        assert_eq!(
            plan(10, &[bare, root(0, 10, 11)]).stop,
            Stop::Inconsistent { seq: 10 }
        );
        let mut both = root(0, 10, 10);
        both.flags |= FLAG_CONT;
        assert_eq!(plan(10, &[both]).stop, Stop::Inconsistent { seq: 10 });
        // Two units with one number (another stream's stale unit that matched its checks).
        let p = plan(
            10,
            &[root(0, 10, 10), cont(1, 11), cont(2, 11), root(0, 11, 12)],
        );
        assert_eq!(p.groups, vec![(10, 10)]);
        assert_eq!(p.stop, Stop::Inconsistent { seq: 11 });
        // Nothing at all after the checkpoint.
        assert_eq!(plan(10, &[]).stop, Stop::End);
    }
}
