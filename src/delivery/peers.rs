//! The sending VMs that are alive, so the HTTP contexts can spread wake-ups over them.
//!
//! With every VM sending, each sends what its own streams observed. Traffic that arrives on
//! one connection lands on one worker, which then sends every webhook while the others
//! idle: measured at `--concurrency 2`, one client connection got 5,500 webhooks/s and two
//! got 6,800/s. So each sending VM says it is alive in one shared key, and while its own
//! sender has deliveries waiting for an in-flight place, its HTTP contexts hand their
//! wake-ups to the live VMs in turn, their own included. Otherwise they keep them: a
//! wake-up that crosses threads costs both workers (measured with a webhook in every
//! response on every worker, handing every item on in turn cost 10 % more CPU per request
//! and twice the clients' p99). The ledger stays the truth: a wake-up handed to a VM that
//! died since is found by the sweep.

use crate::config::MAX_TICK_MS;
use crate::store::{self, Store, StoreError};

/// The key that lists the live senders: 12 bytes per sender, its tag and when it last said
/// it was alive (both little-endian).
pub const PEERS_KEY: &str = crate::shared_name!("peers");
const ENTRY: usize = 12;
/// How often a sender says it is alive, and refreshes its view of the others.
pub const BEAT_MS: u64 = 1_000;
/// A sender not heard from for this long is left out: its VM is gone or stuck.
pub const STALE_MS: u64 = 3 * BEAT_MS;
/// The furthest ahead of the clock a sender's time is written: by a sender at the slowest
/// `tickMs` (see [`stale_after_ms`]; older builds of this prefix wrote their plain time), and
/// a beat for the clock another thread read a moment after this one's. A time further ahead
/// was written before the wall clock stepped back.
pub const MAX_AHEAD_MS: u64 = 3 * MAX_TICK_MS - STALE_MS + BEAT_MS;
/// Senders listed at most: more VMs than this means more workers than any machine here.
pub const MAX_PEERS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u32,
    seen_ms: u64,
}

fn decode(bytes: Option<&[u8]>) -> Vec<Entry> {
    bytes
        .unwrap_or_default()
        .chunks_exact(ENTRY)
        .filter_map(|c| {
            let (tag, seen) = c.split_at(4);
            Some(Entry {
                tag: u32::from_le_bytes(tag.try_into().ok()?),
                seen_ms: u64::from_le_bytes(seen.try_into().ok()?),
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|e| {
            e.tag
                .to_le_bytes()
                .into_iter()
                .chain(e.seen_ms.to_le_bytes())
        })
        .collect()
}

/// How long a sender ticking every `tick_ms` may go unheard before it is taken for gone.
/// It says so at its first tick a `BEAT_MS` after the last time: at a fixed `STALE_MS`, one
/// ticking every 10 s was taken for gone between its ticks, and the backlogged VMs handed it
/// none of their wake-ups. Three ticks leave room for one that comes a little early.
pub fn stale_after_ms(tick_ms: u64) -> u64 {
    STALE_MS.max(tick_ms.saturating_mul(3))
}

/// Say that sender `tag`, ticking every `tick_ms`, is alive at `now_ms`, dropping the
/// senders gone stale; returns the tags of every live sender, `tag` included, in the order
/// they first appeared.
///
/// Its time is written later by what its ticks add beyond `STALE_MS`: every build of this
/// prefix takes an entry for gone `STALE_MS` after its time, so older ones, which write the
/// others' times back as they found them, keep a slow sender listed too.
///
/// A sender whose time is further ahead than `MAX_AHEAD_MS` is taken for gone too: the
/// wall clock stepped back since it beat, and one that died meanwhile stayed listed for as
/// long as the step. One alive lists itself again at its next beat.
pub fn beat<S: Store + ?Sized>(
    store: &S,
    tag: u32,
    now_ms: u64,
    tick_ms: u64,
) -> Result<Vec<u32>, StoreError> {
    let live = |e: &Entry| {
        e.tag == tag
            || (now_ms.saturating_sub(e.seen_ms) < STALE_MS
                && e.seen_ms.saturating_sub(now_ms) <= MAX_AHEAD_MS)
    };
    let seen_ms = now_ms.saturating_add(stale_after_ms(tick_ms) - STALE_MS);
    let written = store::update(store, PEERS_KEY, |cur| {
        let mut entries: Vec<Entry> = decode(cur).into_iter().filter(live).collect();
        if let Some(e) = entries.iter_mut().find(|e| e.tag == tag) {
            e.seen_ms = seen_ms;
        } else if entries.len() < MAX_PEERS {
            entries.push(Entry { tag, seen_ms });
        }
        let tags = entries.iter().map(|e| e.tag).collect();
        Some((encode(&entries), tags))
    })?;
    Ok(written.unwrap_or_default())
}

/// Where an HTTP context's wake-ups go: its own VM's queue, or, while that VM's sender is
/// backlogged, the live senders' queues in turn. Without peers it is the own queue always.
#[derive(Debug, Clone)]
pub struct Rotation {
    own: u32,
    queues: Vec<u32>,
    next: usize,
}

impl Rotation {
    pub fn new(own: u32) -> Self {
        Rotation {
            own,
            queues: vec![own],
            next: 0,
        }
    }

    /// The live senders' queues, as looked up from `beat`'s tags (the VM's own among them
    /// or not: it is always kept).
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = u32>) {
        let mut queues = vec![self.own];
        for q in peers {
            if !queues.contains(&q) {
                queues.push(q);
            }
        }
        self.queues = queues;
        self.next %= self.queues.len();
    }

    /// The queue for the next item, and whether it is another VM's.
    pub fn next_queue(&mut self, backlogged: bool) -> (u32, bool) {
        if !backlogged {
            return (self.own, false);
        }
        let queue = self.queues.get(self.next).copied().unwrap_or(self.own);
        self.next = (self.next + 1) % self.queues.len().max(1);
        (queue, queue != self.own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    /// A tick period at which `STALE_MS` holds.
    const FAST: u64 = 100;

    #[test]
    fn every_live_sender_is_listed_in_the_order_it_came() {
        let store = MemStore::new();
        assert_eq!(beat(&store, 7, 1_000, FAST).unwrap(), vec![7]);
        assert_eq!(beat(&store, 9, 1_100, FAST).unwrap(), vec![7, 9]);
        assert_eq!(beat(&store, 7, 1_900, FAST).unwrap(), vec![7, 9]);
    }

    #[test]
    fn a_sender_not_heard_from_goes_stale_and_is_dropped() {
        let store = MemStore::new();
        beat(&store, 7, 0, FAST).unwrap();
        beat(&store, 9, 1_000, FAST).unwrap();
        // 7 last beat at 0: still live just before STALE_MS, gone at it.
        assert_eq!(beat(&store, 9, STALE_MS - 1, FAST).unwrap(), vec![7, 9]);
        assert_eq!(beat(&store, 9, STALE_MS, FAST).unwrap(), vec![9]);
        // And it is gone from the stored list, not only from the answer.
        assert_eq!(
            decode(store.get(PEERS_KEY).unwrap().map(|(v, _)| v).as_deref()).len(),
            1
        );
        // A sender that comes back is listed again.
        assert_eq!(beat(&store, 7, STALE_MS + 1, FAST).unwrap(), vec![9, 7]);
    }

    /// A sender says it is alive at its ticks: one ticking every 10 s was taken for gone
    /// between them, and the backlogged VMs handed it no wake-ups.
    #[test]
    fn a_sender_ticking_slowly_stays_listed_between_its_ticks() {
        let store = MemStore::new();
        let tick = 10_000;
        beat(&store, 7, 0, tick).unwrap();
        // Just before three of its ticks have gone by unheard, it is still listed...
        let stale = stale_after_ms(tick);
        assert_eq!(stale, 3 * tick);
        assert_eq!(beat(&store, 9, stale - 1, FAST).unwrap(), vec![7, 9]);
        // ... and it goes at the third.
        assert_eq!(beat(&store, 9, stale, FAST).unwrap(), vec![9]);
        // Senders ticking faster than a beat keep the bound of `STALE_MS`.
        assert_eq!(stale_after_ms(100), STALE_MS);
        assert_eq!(stale_after_ms(1_000), STALE_MS);
    }

    /// Older builds of this prefix take a sender for gone `STALE_MS` after its time and
    /// write the others' times back as they found them: the slow sender's later time keeps
    /// it listed through their beats.
    #[test]
    fn a_slow_sender_stays_listed_through_an_older_builds_beats() {
        let store = MemStore::new();
        let tick = 10_000;
        beat(&store, 7, 0, tick).unwrap();
        let older_build = |now_ms: u64| {
            store::update(&store, PEERS_KEY, |cur| {
                let entries: Vec<Entry> = decode(cur)
                    .into_iter()
                    .filter(|e| e.tag == 9 || now_ms.saturating_sub(e.seen_ms) < STALE_MS)
                    .collect();
                Some((
                    encode(&entries),
                    entries.iter().map(|e| e.tag).collect::<Vec<_>>(),
                ))
            })
            .unwrap()
            .unwrap_or_default()
        };
        for now in [5_000, 15_000, 3 * tick - 1] {
            assert!(older_build(now).contains(&7), "at {now}");
        }
        assert!(!older_build(3 * tick).contains(&7));
    }

    /// The host's clock is the wall clock: stepped back (NTP, a resumed machine), it left
    /// every sender's time ahead by the step, and one that died then stayed listed (handed
    /// backlogged wake-ups, left to the sweep) until the step had passed, an hour for an
    /// hour's step. No sender of any build writes its time further ahead than the slowest
    /// tick lets it (`MAX_AHEAD_MS`): one further ahead is taken for gone.
    #[test]
    fn a_sender_that_died_before_the_clock_stepped_back_goes_stale() {
        let hour = 3_600_000;
        let store = MemStore::new();
        beat(&store, 7, hour, FAST).unwrap();
        beat(&store, 9, hour, FAST).unwrap();
        // The clock stepped back an hour; 7 died meanwhile.
        assert_eq!(beat(&store, 9, 1_000, FAST).unwrap(), vec![9]);
        // One alive comes back at its next beat.
        assert_eq!(beat(&store, 7, 1_100, FAST).unwrap(), vec![9, 7]);
        // A step back within the bound holds a dead sender that long and `STALE_MS` at most.
        let store = MemStore::new();
        beat(&store, 7, hour, FAST).unwrap();
        let back = hour - MAX_AHEAD_MS;
        assert_eq!(beat(&store, 9, back, FAST).unwrap(), vec![7, 9]);
        assert_eq!(beat(&store, 9, back + 1, FAST).unwrap(), vec![7, 9]);
        assert_eq!(beat(&store, 9, hour + STALE_MS, FAST).unwrap(), vec![9]);
    }

    /// The bound keeps the slowest sender listed, as this build and the older ones of this
    /// prefix write it (the latter its plain time), just as `STALE_MS` does.
    #[test]
    fn the_slowest_sender_stays_listed_under_the_bound() {
        let slowest = 60_000;
        assert!(stale_after_ms(slowest) - STALE_MS + BEAT_MS <= MAX_AHEAD_MS);
        let store = MemStore::new();
        beat(&store, 7, 10_000, slowest).unwrap();
        // Read a moment before it wrote (another thread's clock read), and through its
        // three ticks.
        for now in [9_000, 10_000, 10_000 + 3 * slowest - 1] {
            assert!(beat(&store, 9, now, FAST).unwrap().contains(&7), "at {now}");
        }
        assert!(!beat(&store, 9, 10_000 + 3 * slowest, FAST)
            .unwrap()
            .contains(&7));
    }

    /// A time further ahead than the slowest sender writes its own, for a clock read a beat
    /// later, was written before the clock stepped back: a looser bound kept a sender that
    /// died across the step listed longer than it has to.
    #[test]
    fn a_sender_further_ahead_than_the_slowest_writes_is_taken_for_gone() {
        let slowest = crate::config::MAX_TICK_MS;
        let store = MemStore::new();
        let t = 100_000;
        beat(&store, 7, t + BEAT_MS, slowest).unwrap();
        beat(&store, 8, t + BEAT_MS + 1, slowest).unwrap();
        assert_eq!(beat(&store, 9, t, FAST).unwrap(), vec![7, 9]);
    }

    #[test]
    fn the_list_is_bounded() {
        let store = MemStore::new();
        for tag in 0..(MAX_PEERS as u32 + 10) {
            beat(&store, tag, 5, FAST).unwrap();
        }
        let tags = beat(&store, 1, 6, FAST).unwrap();
        assert_eq!(tags.len(), MAX_PEERS);
        // One more does not fit, and is not listed, but its beat is no error.
        assert!(!beat(&store, 100_000, 7, FAST).unwrap().contains(&100_000));
    }

    #[test]
    fn garbage_in_the_key_is_read_as_no_senders() {
        let store = MemStore::new();
        store.set(PEERS_KEY, b"not a list", None).unwrap();
        assert_eq!(beat(&store, 3, 10, FAST).unwrap(), vec![3]);
    }

    #[test]
    fn a_backlogged_vm_hands_wake_ups_to_each_live_queue_in_turn() {
        let mut r = Rotation::new(10);
        assert_eq!(r.next_queue(true), (10, false));
        assert_eq!(r.next_queue(true), (10, false));
        r.set_peers([11, 10, 12]);
        let got: Vec<_> = (0..6).map(|_| r.next_queue(true)).collect();
        let own_first = [(10, false), (11, true), (12, true)];
        // Wherever the turn stood, three in a row cover every queue once.
        let mut firsts = got[..3].to_vec();
        firsts.sort_unstable();
        assert_eq!(firsts, own_first);
        assert_eq!(got[..3], got[3..]);
    }

    /// The peers are looked up again at every beat: the same peers keep the turn where it
    /// stood, rather than sending it back to the own queue (which would take more than its
    /// share of the wake-ups).
    #[test]
    fn refreshing_the_same_peers_keeps_the_turn() {
        let mut r = Rotation::new(10);
        r.set_peers([11, 12]);
        assert_eq!(r.next_queue(true), (10, false));
        assert_eq!(r.next_queue(true), (11, true));
        r.set_peers([10, 11, 12]);
        assert_eq!(r.next_queue(true), (12, true));
        assert_eq!(r.next_queue(true), (10, false));
    }

    #[test]
    fn losing_peers_falls_back_to_the_own_queue() {
        let mut r = Rotation::new(10);
        r.set_peers([11, 12]);
        r.next_queue(true);
        r.next_queue(true);
        r.set_peers([]);
        for _ in 0..3 {
            assert_eq!(r.next_queue(true), (10, false));
        }
    }

    #[test]
    fn a_vm_that_keeps_up_keeps_its_wake_ups() {
        let mut r = Rotation::new(10);
        r.set_peers([11, 12]);
        for _ in 0..5 {
            assert_eq!(r.next_queue(false), (10, false));
        }
    }
}
