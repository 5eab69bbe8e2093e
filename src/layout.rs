//! Which of the pre-created shared-data keys exist already. Shared data can only CAS a key
//! that exists, so every key is created at configure time; but it outlives VMs, and checking
//! each of a million keys again in every worker's VM, on every configuration update, froze
//! Envoy's threads for seconds. One marker says how far earlier VMs got.

use crate::extract::persisted;

/// The marker's key.
pub const KEY: &str = crate::shared_name!("laid-out");

/// How many ledger slots, dedupe-memory buckets and persisted-query buckets have their keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaidOut {
    pub slots: u32,
    pub buckets: u32,
    pub persisted: u32,
}

impl LaidOut {
    /// What a configuration needs: its ledger's slots, its dedupe memory's buckets, and every
    /// persisted-query bucket (a fixed table, laid out whatever the configuration).
    pub fn needed(slots: u32, buckets: u32) -> LaidOut {
        LaidOut {
            slots,
            buckets,
            persisted: u32::try_from(persisted::BUCKETS).unwrap_or(u32::MAX),
        }
    }

    /// The marker as stored; anything unreadable is nothing laid out, so keys are checked.
    pub fn decode(bytes: Option<&[u8]>) -> LaidOut {
        let text = bytes
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("");
        let mut parts = text.split(' ').map(str::parse::<u32>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(slots)), Some(Ok(buckets)), Some(Ok(persisted)), None) => LaidOut {
                slots,
                buckets,
                persisted,
            },
            _ => LaidOut::default(),
        }
    }

    pub fn encode(self) -> Vec<u8> {
        format!("{} {} {}", self.slots, self.buckets, self.persisted).into_bytes()
    }

    /// Whether the keys `needed` calls for all exist.
    pub fn covers(self, needed: LaidOut) -> bool {
        self.slots >= needed.slots
            && self.buckets >= needed.buckets
            && self.persisted >= needed.persisted
    }

    /// Both layouts' keys.
    pub fn union(self, other: LaidOut) -> LaidOut {
        LaidOut {
            slots: self.slots.max(other.slots),
            buckets: self.buckets.max(other.buckets),
            persisted: self.persisted.max(other.persisted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_reads_back_and_tells_what_is_missing() {
        let done = LaidOut {
            slots: 10_000,
            buckets: 4_096,
            persisted: 256,
        };
        assert_eq!(LaidOut::decode(Some(&done.encode())), done);
        assert!(done.covers(LaidOut {
            slots: 512,
            buckets: 4_096,
            persisted: 256,
        }));
        let larger = LaidOut {
            slots: 20_000,
            buckets: 16,
            persisted: 0,
        };
        assert!(!done.covers(larger));
        assert_eq!(
            done.union(larger),
            LaidOut {
                slots: 20_000,
                buckets: 4_096,
                persisted: 256,
            }
        );
        assert!(done.covers(LaidOut::needed(10_000, 4_096)));
        assert!(!done.covers(LaidOut::needed(10_001, 4_096)));
    }

    #[test]
    fn an_unreadable_marker_is_nothing_laid_out() {
        for bytes in [
            &b""[..],
            b"12",
            // The two counts of the builds before the format prefix.
            b"10000 4096",
            b"1 2 3 4",
            b"a b",
            b"1 2 x",
            b"-1 4",
            b"\xff",
        ] {
            assert_eq!(
                LaidOut::decode(Some(bytes)),
                LaidOut::default(),
                "{bytes:?}"
            );
        }
        assert_eq!(LaidOut::decode(None), LaidOut::default());
    }
}
