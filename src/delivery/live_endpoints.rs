//! Which endpoints the live configurations deliver to, so that no sender drops as orphaned a
//! delivery that another live configuration has an endpoint for.
//!
//! After a configuration update Envoy keeps the root contexts it replaced until the old
//! listener has drained (`--drain-time-s`, 600 s by default), and the senders of both
//! configurations sweep the one ledger. A sender dropped any due delivery whose endpoint its
//! own configuration lacks, so the replaced senders dropped the retries of every endpoint the
//! update added (a review). Now each sender says when it is configured, and then every few
//! seconds, in one shared key, which endpoints its configuration has; a delivery is orphaned
//! only when no configuration heard from lately has its endpoint. A configuration Envoy loads
//! and throws away (its configuration check, a listener update it refused) says so once, and
//! keeps its endpoints' deliveries until it goes stale at most: it never stops another's
//! sending.

use crate::config::{Config, MAX_TICK_MS};
use crate::delivery::tick;
use crate::events::fnv1a64;
use crate::learn::{self, NAME_PREFIX};
use crate::record::{Out, Reader};
use crate::store::{self, Store};

pub const KEY: &str = crate::shared_name!("config/live");
/// How often a sender says which endpoints its configuration has.
pub const BEAT_MS: u64 = 5_000;
/// A configuration not heard from for this long keeps no delivery from being orphaned: its
/// root contexts are gone (the old listener drained) or stuck. Longer for one whose ticks
/// come further apart (see [`stale_after_ms`]).
pub const STALE_MS: u64 = 30_000;
/// The furthest ahead of the clock an entry's time is written: by a configuration at the
/// slowest `tickMs` (see [`stale_after_ms`]; older builds of this prefix wrote their plain
/// time), and a beat for the clock another thread read a moment after this one's. A time
/// further ahead was written before the wall clock stepped back.
pub const MAX_AHEAD_MS: u64 = 3 * (MAX_TICK_MS + BEAT_MS) - STALE_MS + BEAT_MS;
/// Configurations listed at most; more live at once than any deployment updates while an
/// entry lives (30 s, 195 s at most).
const MAX_CONFIGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Tells configurations apart by what is kept here.
    id: u64,
    /// When it was last heard from, put later by as much as its ticks let it go unheard
    /// beyond `STALE_MS` (see [`stale_after_ms`]): every build of this prefix takes an entry
    /// for gone `STALE_MS` after this, those from before the longer bound too, which rewrite
    /// the record at their beats with the keys they know (a review found a bound kept in a
    /// key of its own dropped by them, and the slow configuration taken for gone).
    seen_ms: u64,
    /// When it was first heard from.
    since_ms: u64,
    /// A hash of its configuration's text, as Envoy handed it over: two loads of one text
    /// are one configuration (a VM rebuilt after a crash), two texts are two.
    source: u64,
    /// The learning policy's fingerprint; `None` without learning.
    learns: Option<u64>,
    /// The configured endpoints (learned ones are told by `learns`).
    names: Vec<String>,
}

impl Entry {
    fn is_live(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.seen_ms) < STALE_MS
    }

    /// Heard from no later than `MAX_AHEAD_MS` past `now_ms`: a time further ahead was written
    /// before the wall clock stepped back, and held a configuration gone since live for as
    /// long as the step. One alive says so again at its next beat.
    fn held_at_most(mut self, now_ms: u64) -> Self {
        self.seen_ms = self.seen_ms.min(now_ms.saturating_add(MAX_AHEAD_MS));
        self.since_ms = self.since_ms.min(self.seen_ms);
        self
    }
}

/// How long a configuration ticking every `tick_ms` may go unheard before it is taken for
/// gone. It says so at its first tick `BEAT_MS` after the last time, so one whose ticks come
/// further apart than a few seconds is heard from less often; at a fixed `STALE_MS` one
/// ticking every minute was taken for gone between its ticks, and another configuration's
/// senders dropped its endpoints' retries as orphaned while its listener still drained.
pub fn stale_after_ms(tick_ms: u64) -> u64 {
    STALE_MS.max(tick_ms.saturating_add(BEAT_MS).saturating_mul(3))
}

/// How long a sender whose beat came late judges the others as of before (see
/// [`LiveEndpoints::judged_at`]): every live configuration, at the slowest `tickMs`, has
/// ticked since, and beaten (the step made its beat due).
pub const LAG_MS: u64 = MAX_TICK_MS + 2 * BEAT_MS;

/// One sender's side: when it next says what its configuration has.
#[derive(Debug, Default)]
pub struct LiveEndpoints {
    next_beat_ms: u64,
    /// Its configuration's `source` (see [`Entry`]).
    source: u64,
    /// When it last wrote its entry.
    wrote_ms: Option<u64>,
    /// Until when, and by how much, it judges the others as of earlier, after a late write.
    lag: Option<(u64, u64)>,
}

impl LiveEndpoints {
    /// For the configuration whose text hashes to `source`.
    pub fn of_source(source: u64) -> Self {
        LiveEndpoints {
            source,
            ..LiveEndpoints::default()
        }
    }

    /// The time at which to judge, at `now_ms`, which configurations are stale. The wall
    /// clock stepping forward (NTP, a machine resumed from suspend) leaves every other
    /// configuration unheard for the step, though none had a tick to say otherwise: judged by
    /// the clock, the first sender to tick after it took them for gone and dropped their
    /// endpoints' deliveries as orphaned (a review). A sender sees the step as its own write
    /// coming later than its ticks let it (see [`LiveEndpoints::write`]; a stalled VM looks
    /// the same, and is judged alike). Between its writes it cannot tell a step from time
    /// gone by, so it judges `2 * BEAT_MS` after its last at most: every live configuration,
    /// unheard since its last beat then, is still live (a slow `tickMs` leaves a sender's
    /// wake-ups and replies between its ticks judging earlier, never its sweep).
    pub fn judged_at(&self, now_ms: u64) -> u64 {
        self.latest_after_write(now_ms, 2 * BEAT_MS)
            .unwrap_or_else(|| now_ms.saturating_sub(self.lag_at(now_ms)))
    }

    /// When `now_ms` is more than `within_ms` after its last write: that write's time (as
    /// judged then) plus `within_ms`, the latest it could judge by.
    fn latest_after_write(&self, now_ms: u64, within_ms: u64) -> Option<u64> {
        let wrote = self.wrote_ms?;
        (now_ms > wrote.saturating_add(within_ms)).then(|| {
            wrote
                .saturating_sub(self.lag_at(wrote))
                .saturating_add(within_ms)
        })
    }

    /// How far behind `at_ms` it judges: not before the late write either (the clock stepped
    /// back since), or it would judge as of the step earlier for as long as the step back.
    fn lag_at(&self, at_ms: u64) -> u64 {
        match self.lag {
            Some((until, by)) if (until.saturating_sub(LAG_MS)..until).contains(&at_ms) => by,
            _ => 0,
        }
    }

    /// Say, when configured, that `config`'s endpoints are live. The configurations gone
    /// stale are left for the next beat to forget: Envoy configures each configuration once in
    /// a VM it then throws away (its configuration check), and the endpoints no live
    /// configuration has any more, told that root context, were forgotten by nobody (a review:
    /// a removed endpoint's open circuit stayed counted).
    pub fn announce(&mut self, store: &dyn Store, config: &Config, now_ms: u64) {
        let _ = self.write(store, config, now_ms, false);
    }

    /// Say, at most every `BEAT_MS`, that `config`'s endpoints are live; forget the
    /// configurations gone stale. The endpoints no live configuration has any more, that
    /// only those listed (a removed endpoint's open circuit would otherwise stay counted in
    /// `circuits_open` for good once its deliveries had all ended: a review). A next beat
    /// further ahead than `BEAT_MS` was set before the wall clock stepped back: it is due now
    /// (`tick::every_due`), rather than the sender going unheard for the step; another's time
    /// further ahead than `MAX_AHEAD_MS` is held there, so a configuration gone across the step
    /// goes stale that long after it at most.
    pub fn beat(&mut self, store: &dyn Store, config: &Config, now_ms: u64) -> Vec<String> {
        if !tick::every_due(self.next_beat_ms, now_ms, BEAT_MS) {
            return Vec::new();
        }
        self.write(store, config, now_ms, true)
    }

    /// Write `config`'s entry; with `forget`, take out the stale ones and return the
    /// endpoints only they listed. A write later than `tickMs` + `2 * BEAT_MS` after the last
    /// (due `BEAT_MS` on, at its first tick after, and a late tick's slack) finds the clock
    /// stepped forward: it judges as of the latest it should have come, and for `LAG_MS`
    /// after as of that much earlier, while the others beat again. A live configuration says
    /// so meanwhile; one gone goes stale `LAG_MS` later at most. Steps add up while it lags.
    fn write(
        &mut self,
        store: &dyn Store,
        config: &Config,
        now_ms: u64,
        forget: bool,
    ) -> Vec<String> {
        let due_in = config.tick_ms.saturating_add(2 * BEAT_MS);
        let judged = match self.latest_after_write(now_ms, due_in) {
            Some(judged) => {
                self.lag = Some((now_ms.saturating_add(LAG_MS), now_ms.saturating_sub(judged)));
                judged
            }
            None => now_ms.saturating_sub(self.lag_at(now_ms)),
        };
        self.wrote_ms = Some(now_ms);
        self.next_beat_ms = now_ms.saturating_add(BEAT_MS);
        let mine = entry_of(config, self.source, now_ms);
        let gone = store::update(store, KEY, |current| {
            let (mut entries, stale): (Vec<Entry>, Vec<Entry>) = decode(current)
                .into_iter()
                .map(|e| e.held_at_most(now_ms))
                .partition(|e| e.is_live(judged));
            let mut mine = mine.clone();
            if let Some(at) = entries.iter().position(|e| e.id == mine.id) {
                mine.since_ms = entries.remove(at).since_ms;
            }
            let mut gone: Vec<String> = Vec::new();
            for e in stale.into_iter().filter(|e| e.id != mine.id) {
                if !forget {
                    entries.push(e);
                    continue;
                }
                for name in e.names {
                    let listed = |e: &Entry| e.names.contains(&name);
                    if !mine.names.contains(&name)
                        && !entries.iter().any(listed)
                        && !gone.contains(&name)
                    {
                        gone.push(name);
                    }
                }
            }
            entries.truncate(MAX_CONFIGS - 1);
            entries.push(mine);
            Some((encode(&entries), gone))
        });
        gone.ok().flatten().unwrap_or_default()
    }
}

/// Whether a configuration other than `config`, heard from lately, delivers to `endpoint`:
/// then a delivery for it is not `config`'s to drop. A learned endpoint whose provider is
/// still registered is kept by any configuration whose learning policy differs from
/// `config`'s: the registrations are shared, but each policy builds its own endpoints from
/// them (one may allow a host the other refuses). Listing the learned endpoints themselves
/// would make the record as large as `learn.maxLearned`. One whose registration is gone is
/// kept by none (a review found two policies keeping it for each other for good).
pub fn kept_elsewhere(store: &dyn Store, config: &Config, endpoint: &str, now_ms: u64) -> bool {
    let learned = endpoint.starts_with(NAME_PREFIX);
    if learned && !learn::is_registered(store, endpoint) {
        return false;
    }
    let mine = config.learn_fingerprint();
    let entries = match store.get(KEY) {
        Ok(current) => decode(current.as_ref().map(|(v, _)| v.as_slice())),
        // Unreadable: keep the delivery rather than drop what may be another's.
        Err(_) => return true,
    };
    entries.iter().any(|e| {
        e.is_live(now_ms)
            && if learned {
                e.learns.is_some() && e.learns != mine
            } else {
                e.names.iter().any(|n| n == endpoint)
            }
    })
}

/// Whether the configuration whose text hashes to `source` has been live since
/// `ESTABLISHED_MS` before `now_ms` and still is: one loaded again (a VM rebuilt after a
/// crash), not one an update brings.
pub fn established(store: &dyn Store, source: u64, now_ms: u64) -> bool {
    let Ok(current) = store.get(KEY) else {
        return false;
    };
    decode(current.as_ref().map(|(v, _)| v.as_slice()))
        .iter()
        .any(|e| {
            e.source == source
                && e.is_live(now_ms)
                && e.since_ms.saturating_add(ESTABLISHED_MS) <= now_ms
        })
}

/// When the configuration whose text hashes to `source` was first heard from, if it is live:
/// the later, the more recent the update that brought it.
pub fn first_heard(store: &dyn Store, source: u64, now_ms: u64) -> Option<u64> {
    let current = store.get(KEY).ok()?;
    decode(current.as_ref().map(|(v, _)| v.as_slice()))
        .iter()
        .filter(|e| e.source == source && e.is_live(now_ms))
        .map(|e| e.since_ms)
        .min()
}

/// How long a configuration has been live before loading it again is not an update: longer
/// than Envoy takes to load one configuration on every worker.
const ESTABLISHED_MS: u64 = 10_000;

fn entry_of(config: &Config, source: u64, now_ms: u64) -> Entry {
    let names: Vec<String> = config.endpoints.iter().map(|e| e.name.clone()).collect();
    let learns = config.learn_fingerprint();
    let policy = learns.unwrap_or(0).to_le_bytes();
    let source_bytes = source.to_le_bytes();
    let mut parts: Vec<&[u8]> = vec![if learns.is_some() { &policy } else { b"" }, &source_bytes];
    for name in &names {
        parts.push(name.as_bytes());
        parts.push(b"\0");
    }
    Entry {
        id: fnv1a64(&parts),
        seen_ms: now_ms.saturating_add(stale_after_ms(config.tick_ms).saturating_sub(STALE_MS)),
        since_ms: now_ms,
        source,
        learns,
        names,
    }
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Out::default();
    out.begin_array();
    for e in entries {
        out.begin_object();
        out.key("id");
        out.uint(e.id);
        out.key("at");
        out.uint(e.seen_ms);
        out.key("since");
        out.uint(e.since_ms);
        out.key("src");
        out.uint(e.source);
        if let Some(policy) = e.learns {
            out.key("learn");
            out.uint(policy);
        }
        out.key("names");
        out.begin_array();
        for name in &e.names {
            out.string(name);
        }
        out.end_array();
        out.end_object();
    }
    out.end_array();
    out.into_bytes()
}

/// The entries; none when the record is absent or unreadable (the next beats rewrite it).
fn decode(bytes: Option<&[u8]>) -> Vec<Entry> {
    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
        return Vec::new();
    };
    Reader::document(bytes, |r| {
        r.list(|r| {
            let mut e = Entry {
                id: 0,
                seen_ms: 0,
                since_ms: u64::MAX,
                source: 0,
                learns: None,
                names: Vec::new(),
            };
            r.object(|r, key| {
                match key {
                    "id" => e.id = r.uint()?,
                    "at" => e.seen_ms = r.uint()?,
                    "since" => e.since_ms = r.uint()?,
                    "src" => e.source = r.uint()?,
                    "learn" => e.learns = Some(r.uint()?),
                    "names" => e.names = r.list(Reader::string)?,
                    _ => r.skip()?,
                }
                Some(())
            })?;
            e.since_ms = e.since_ms.min(e.seen_ms);
            Some(e)
        })
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::Registry;
    use crate::store::MemStore;

    fn config(names: &[&str], learns: Option<&str>) -> Config {
        let endpoints: Vec<String> = names
            .iter()
            .map(|n| format!(r#"{{"name": "{n}", "url": "http://h/{n}", "cluster": "c"}}"#))
            .collect();
        let learn = match learns {
            Some(host) => format!(
                r#", "learn": {{"enabled": true, "cluster": "e", "allowHosts": ["{host}"]}}"#
            ),
            None => String::new(),
        };
        let json = format!(r#"{{"endpoints": [{}]{learn}}}"#, endpoints.join(","));
        Config::from_json(json.as_bytes(), &|_| None).unwrap()
    }

    #[test]
    fn an_endpoint_of_a_configuration_heard_from_lately_is_kept() {
        let store = MemStore::new();
        let (old, new) = (config(&["crm"], None), config(&["crm", "ops"], None));
        let mut beats = LiveEndpoints::default();
        beats.beat(&store, &new, 1_000);
        assert!(kept_elsewhere(&store, &old, "ops", 1_000));
        assert!(kept_elsewhere(&store, &old, "ops", 1_000 + STALE_MS - 1));
        // The new configuration's senders are gone: nobody keeps it.
        assert!(!kept_elsewhere(&store, &old, "ops", 1_000 + STALE_MS));
        assert!(!kept_elsewhere(&store, &old, "gone", 1_000));
    }

    /// The endpoints only configurations gone stale listed are told once, at the beat that
    /// forgets them; one another live configuration (or this one) has is not.
    #[test]
    fn a_beat_tells_the_endpoints_no_live_configuration_has_any_more() {
        let store = MemStore::new();
        let (old, other, new) = (
            config(&["crm", "ops", "erp"], None),
            config(&["erp"], None),
            config(&["crm"], None),
        );
        let mut beats_old = LiveEndpoints::of_source(1);
        let mut beats_other = LiveEndpoints::of_source(3);
        let mut beats_new = LiveEndpoints::of_source(2);
        assert!(beats_old.beat(&store, &old, 0).is_empty());
        assert!(beats_new.beat(&store, &new, 0).is_empty());
        beats_other.beat(&store, &other, STALE_MS - 1);
        // The new one beats on; the old one, unheard since 0, goes stale at `STALE_MS`.
        for now in (BEAT_MS..STALE_MS).step_by(BEAT_MS as usize) {
            assert!(beats_new.beat(&store, &new, now).is_empty());
        }
        assert_eq!(beats_new.beat(&store, &new, STALE_MS), ["ops"]);
        assert!(beats_new.beat(&store, &new, STALE_MS + BEAT_MS).is_empty());
    }

    fn ticking_every_minute(names: &[&str]) -> Config {
        let mut c = config(names, None);
        c.tick_ms = 60_000;
        c
    }

    /// A review: a configuration ticking every minute beats at its ticks, so at a fixed
    /// `STALE_MS` it was taken for gone between them and another configuration's senders
    /// dropped its endpoints' retries as orphaned.
    #[test]
    fn a_configuration_ticking_slowly_is_kept_between_its_ticks() {
        let store = MemStore::new();
        let old = config(&["crm"], None);
        let slow = ticking_every_minute(&["ops"]);
        let mut beats = LiveEndpoints::default();
        beats.beat(&store, &slow, 0);
        // Its next ticks, a minute apart: heard from at each, never taken for gone.
        for tick in 1..=3u64 {
            assert!(kept_elsewhere(&store, &old, "ops", tick * 60_000 - 1));
            beats.beat(&store, &slow, tick * 60_000);
        }
        // Silent for three of its periods (and beats) on: gone.
        let last = 3 * 60_000;
        let stale = stale_after_ms(60_000);
        assert_eq!(stale, 3 * (60_000 + BEAT_MS));
        assert!(kept_elsewhere(&store, &old, "ops", last + stale - 1));
        assert!(!kept_elsewhere(&store, &old, "ops", last + stale));
        // The default tick keeps the fixed bound.
        assert_eq!(stale_after_ms(100), STALE_MS);
    }

    /// What a build of this prefix from before the per-entry bound does to the record at its
    /// beat: entries unheard for `STALE_MS` go, and the rest are written back with the keys
    /// it knows.
    fn older_build_rewrites(store: &MemStore, now_ms: u64) {
        let current = store.get(KEY).unwrap().map(|(v, _)| v);
        let kept: Vec<Entry> = decode(current.as_deref())
            .into_iter()
            .filter(|e| now_ms.saturating_sub(e.seen_ms) < STALE_MS)
            .collect();
        store.set(KEY, &encode(&kept), None).unwrap();
    }

    /// A review: during a module update a build of the same prefix from before the bound
    /// drains beside this one and rewrites the record at each of its beats; it dropped the
    /// slow configuration's bound (or the entry), and this one's senders then took that
    /// configuration for gone 30 s after its beat and dropped its endpoints' retries.
    #[test]
    fn a_slow_configuration_stays_live_through_an_older_builds_rewrites() {
        let store = MemStore::new();
        let old = config(&["crm"], None);
        let slow = ticking_every_minute(&["ops"]);
        LiveEndpoints::default().beat(&store, &slow, 0);
        for now in (5_000..60_000).step_by(5_000) {
            older_build_rewrites(&store, now);
            assert!(kept_elsewhere(&store, &old, "ops", now), "at {now}");
        }
        assert!(kept_elsewhere(&store, &old, "ops", 59_999));
    }

    #[test]
    fn beats_come_at_most_every_beat_ms_and_forget_stale_configurations() {
        let store = MemStore::new();
        let (a, b) = (config(&["a"], None), config(&["b"], None));
        let (mut beats_a, mut beats_b) = (LiveEndpoints::default(), LiveEndpoints::default());
        beats_a.beat(&store, &a, 0);
        beats_b.beat(&store, &b, 0);
        assert_eq!(
            decode(store.get(KEY).unwrap().map(|v| v.0).as_deref()).len(),
            2
        );
        // A's next beat within BEAT_MS writes nothing; after it, A is heard again.
        let before = store.get(KEY).unwrap();
        beats_a.beat(&store, &a, BEAT_MS - 1);
        assert_eq!(
            store.get(KEY).unwrap(),
            before,
            "a beat within BEAT_MS wrote"
        );
        // A beats on; B, unheard since 0, goes stale at `STALE_MS`.
        for now in (BEAT_MS..=STALE_MS).step_by(BEAT_MS as usize) {
            beats_a.beat(&store, &a, now);
        }
        let entries = decode(store.get(KEY).unwrap().map(|v| v.0).as_deref());
        assert_eq!(entries.len(), 1, "b went stale: {entries:?}");
        assert_eq!(entries[0].names, ["a"]);
        assert_eq!(entries[0].seen_ms, STALE_MS);
    }

    /// The host's clock is the wall clock: stepped back (NTP, a resumed machine) after a
    /// beat, it put the next beat ahead by the step, and for that long the sender neither said
    /// what its configuration has nor learned of the endpoints no live configuration has any
    /// more (their open circuits stayed counted in `circuits_open`).
    #[test]
    fn beats_go_on_after_the_clock_steps_back() {
        let store = MemStore::new();
        let (a, old) = (config(&["a"], None), config(&["a", "ops"], None));
        let hour = 3_600_000;
        let mut beats = LiveEndpoints::of_source(1);
        beats.beat(&store, &a, hour);
        // The clock stepped back an hour; another configuration beats once and goes away.
        let now = 1_000;
        LiveEndpoints::of_source(2).beat(&store, &old, now);
        // The next beat is due now, not in an hour...
        beats.beat(&store, &a, now);
        let entries = decode(store.get(KEY).unwrap().map(|v| v.0).as_deref());
        let mine = entries.iter().find(|e| e.source == 1).unwrap();
        assert_eq!(mine.seen_ms, now);
        // ... the ones after it come a `BEAT_MS` apart again...
        let before = store.get(KEY).unwrap();
        assert!(beats.beat(&store, &a, now + BEAT_MS - 1).is_empty());
        assert_eq!(store.get(KEY).unwrap(), before);
        // ... and the endpoint only the one gone had is told once that one is stale.
        for at in (now + BEAT_MS..now + STALE_MS).step_by(BEAT_MS as usize) {
            assert!(beats.beat(&store, &a, at).is_empty(), "at {at}");
        }
        assert_eq!(beats.beat(&store, &a, now + STALE_MS), ["ops"]);
    }

    /// A review: a configuration whose senders went before the wall clock stepped back kept
    /// its time ahead by the step, so its endpoints' deliveries stayed in the ledger (neither
    /// sent nor dropped as orphaned) and its open circuits counted, for as long as the step
    /// (an hour for an hour's), not 30 s.
    #[test]
    fn a_configuration_gone_before_the_clock_stepped_back_goes_stale() {
        let store = MemStore::new();
        let (a, old) = (config(&["a"], None), config(&["a", "ops"], None));
        let hour = 3_600_000;
        let mut beats = LiveEndpoints::of_source(1);
        beats.beat(&store, &a, hour);
        LiveEndpoints::of_source(2).beat(&store, &old, hour);
        // The clock steps back an hour; the old configuration's senders are gone.
        let back = 1_000;
        beats.beat(&store, &a, back);
        assert!(kept_elsewhere(&store, &a, "ops", back));
        // Held as if heard from at the step, as far ahead as any sender writes its time.
        let gone_at = back + MAX_AHEAD_MS + STALE_MS;
        let mut told = Vec::new();
        for now in (back + BEAT_MS..=gone_at).step_by(BEAT_MS as usize) {
            assert!(kept_elsewhere(&store, &a, "ops", now - 1), "at {now}");
            told.extend(beats.beat(&store, &a, now));
        }
        assert!(!kept_elsewhere(&store, &a, "ops", gone_at));
        assert_eq!(told, ["ops"]);
    }

    /// Beat every `BEAT_MS` from `from` to `to`, both included; what the beats told, and when.
    fn beat_through(
        beats: &mut LiveEndpoints,
        store: &MemStore,
        config: &Config,
        from: u64,
        to: u64,
    ) -> Vec<(u64, String)> {
        let mut told = Vec::new();
        for now in (from..=to).step_by(BEAT_MS as usize) {
            told.extend(beats.beat(store, config, now).into_iter().map(|e| (now, e)));
        }
        told
    }

    /// A review: the wall clock stepping forward (NTP, a machine resumed from suspend) left
    /// every other configuration unheard for the step, and the first sender to beat after it
    /// took them for gone, though none had had a tick to say otherwise: their endpoints'
    /// deliveries were dropped as orphaned and their open circuits forgotten.
    #[test]
    fn a_forward_clock_step_leaves_the_others_live_while_they_beat_again() {
        let store = MemStore::new();
        let (a, b) = (config(&["a"], None), config(&["a", "ops"], None));
        let slow = ticking_every_minute(&["erp"]);
        let (mut beats_a, mut beats_b, mut beats_slow) = (
            LiveEndpoints::of_source(1),
            LiveEndpoints::of_source(2),
            LiveEndpoints::of_source(3),
        );
        beats_slow.beat(&store, &slow, 0);
        for now in (0..=55_000).step_by(BEAT_MS as usize) {
            beats_a.beat(&store, &a, now);
            beats_b.beat(&store, &b, now);
        }
        // The clock steps forward an hour; `a` ticks first, then `b`, then the slow one.
        let at = 55_000 + 3_600_000;
        assert!(beats_a.beat(&store, &a, at).is_empty());
        for name in ["ops", "erp"] {
            assert!(kept_elsewhere(&store, &a, name, beats_a.judged_at(at)));
        }
        assert!(beats_a.judged_at(at) < at);
        let mut told = Vec::new();
        for now in (at..=at + 2 * LAG_MS).step_by(BEAT_MS as usize) {
            if now == at + 60_000 {
                told.extend(beats_slow.beat(&store, &slow, now - 1_000));
            }
            told.extend(beats_a.beat(&store, &a, now));
            told.extend(beats_b.beat(&store, &b, now + 100));
        }
        // Once the lag is over, `a` judges by the clock again, and they are live by it.
        assert!(told.is_empty(), "{told:?}");
        assert_eq!(beats_a.judged_at(at + 2 * LAG_MS), at + 2 * LAG_MS);
        for name in ["ops", "erp"] {
            assert!(kept_elsewhere(&store, &a, name, at + 2 * LAG_MS));
        }
    }

    /// What the lag keeps is kept `LAG_MS` at most: a configuration gone before the step (the
    /// slowest, whose bound would keep it longest) is taken for gone then.
    #[test]
    fn a_configuration_gone_across_a_forward_clock_step_goes_stale_lag_ms_later_at_most() {
        let store = MemStore::new();
        let a = config(&["a"], None);
        let slow = ticking_every_minute(&["a", "ops"]);
        let mut beats = LiveEndpoints::of_source(1);
        LiveEndpoints::of_source(2).beat(&store, &slow, 0);
        beat_through(&mut beats, &store, &a, 0, 10_000);
        // The clock steps forward an hour: without the step, the slow one would be live.
        let at = 10_000 + 3_600_000;
        let told = beat_through(&mut beats, &store, &a, at, at + LAG_MS);
        assert_eq!(told, [(at + LAG_MS, "ops".to_string())]);
        assert!(!kept_elsewhere(
            &store,
            &a,
            "ops",
            beats.judged_at(at + LAG_MS)
        ));
        // Steps come again and again: each judges later, and one gone goes stale all the same.
        let fast = config(&["a", "erp"], None);
        let mut beats = LiveEndpoints::of_source(1);
        LiveEndpoints::of_source(3).beat(&store, &fast, 0);
        let mut told = Vec::new();
        for step in 0..=10u64 {
            told.extend(beats.beat(&store, &a, step * 60_000));
        }
        assert_eq!(told, ["erp"]);
        // A clock stepped back after the step ends the lag rather than lasting as long.
        let mut beats = LiveEndpoints::of_source(1);
        beats.beat(&store, &a, 3_600_000);
        beats.beat(&store, &a, 2 * 3_600_000);
        assert!(beats.judged_at(2 * 3_600_000 + 1) < 2 * 3_600_000);
        beats.beat(&store, &a, 3_600_000 + 1_000);
        assert_eq!(beats.judged_at(3_600_000 + 1_000), 3_600_000 + 1_000);
    }

    /// Between its ticks a sender cannot tell a step from time gone by: one ticking every
    /// minute, woken (or replied to) after a 40 s step, took a configuration ticking every
    /// 5 s, which had no tick since the step, for gone.
    #[test]
    fn a_slow_sender_between_its_ticks_takes_no_live_configuration_for_gone() {
        let store = MemStore::new();
        let slow = ticking_every_minute(&["a"]);
        let mut other = config(&["ops"], None);
        other.tick_ms = 5_000;
        let mut beats = LiveEndpoints::of_source(1);
        beats.beat(&store, &slow, 0);
        let mut beats_other = LiveEndpoints::of_source(2);
        beat_through(&mut beats_other, &store, &other, 0, 20_000);
        // The clock steps 40 s forward at 21 s; a wake-up comes a second later.
        let at = 22_000 + 40_000;
        assert!(
            !kept_elsewhere(&store, &slow, "ops", at),
            "stale by the clock"
        );
        assert!(kept_elsewhere(&store, &slow, "ops", beats.judged_at(at)));
    }

    /// A sender whose ticks come as its `tickMs` says, the slowest included, judges by the
    /// clock: a configuration gone is stale `STALE_MS` after it was last heard from.
    #[test]
    fn a_sender_ticking_as_configured_judges_by_the_clock() {
        for tick_ms in [100, 1_000, MAX_TICK_MS] {
            let store = MemStore::new();
            let mut a = config(&["a"], None);
            a.tick_ms = tick_ms;
            let mut beats = LiveEndpoints::of_source(1);
            let gone_at = 30 * 60_000;
            let mut told = Vec::new();
            for now in (0..=gone_at + 2 * STALE_MS).step_by(tick_ms as usize) {
                if now <= gone_at {
                    LiveEndpoints::of_source(2).beat(&store, &config(&["ops"], None), now);
                }
                told.extend(beats.beat(&store, &a, now).into_iter().map(|e| (now, e)));
                assert_eq!(beats.judged_at(now), now, "tick {tick_ms} at {now}");
                // Between its ticks, a slow one judges `2 * BEAT_MS` after its beat at most.
                let at = now + tick_ms - 1;
                let latest = at.min(now + 2 * BEAT_MS);
                assert_eq!(beats.judged_at(at), latest, "tick {tick_ms} at {at}");
            }
            let stale = (gone_at + STALE_MS).div_ceil(BEAT_MS.max(tick_ms)) * BEAT_MS.max(tick_ms);
            assert_eq!(told, [(stale, "ops".to_string())], "tick {tick_ms}");
        }
    }

    /// Another's time is held no further ahead than the slowest configuration writes its own
    /// for a clock read a beat later: a looser bound kept one gone before the clock stepped
    /// back live longer than it has to.
    #[test]
    fn another_time_is_held_as_far_ahead_as_the_slowest_configuration_writes_it() {
        let store = MemStore::new();
        let t = 100_000;
        LiveEndpoints::of_source(2).beat(&store, &ticking_every_minute(&["ops"]), t + BEAT_MS);
        LiveEndpoints::of_source(3).beat(&store, &ticking_every_minute(&["erp"]), t + BEAT_MS + 1);
        LiveEndpoints::of_source(1).beat(&store, &config(&["a"], None), t);
        let ahead = stale_after_ms(crate::config::MAX_TICK_MS) - STALE_MS + BEAT_MS;
        let entries = decode(store.get(KEY).unwrap().map(|v| v.0).as_deref());
        let seen = |source| entries.iter().find(|e| e.source == source).unwrap().seen_ms;
        // As written, at the furthest ahead any configuration writes...
        assert_eq!(seen(2), t + ahead);
        // ... and one a millisecond further, held there.
        assert_eq!(seen(3), t + ahead);
    }

    /// After a forward step a sender judges the others as of before it until they have
    /// ticked again: the slowest one's first tick after the step may come a beat late.
    #[test]
    fn the_slowest_configuration_ticking_late_after_a_forward_clock_step_is_kept() {
        let store = MemStore::new();
        let a = config(&["a"], None);
        let slow = ticking_every_minute(&["ops"]);
        let (mut beats, mut beats_slow) =
            (LiveEndpoints::of_source(1), LiveEndpoints::of_source(2));
        beat_through(&mut beats, &store, &a, 0, 55_000);
        beats_slow.beat(&store, &slow, 55_000);
        // The clock steps forward an hour; the slow one's next tick comes a beat late.
        let at = 55_000 + 3_600_000;
        let late = at + slow.tick_ms + BEAT_MS;
        let mut told = beat_through(&mut beats, &store, &a, at, late - 1);
        told.extend(
            beats_slow
                .beat(&store, &slow, late)
                .into_iter()
                .map(|e| (late, e)),
        );
        told.extend(beat_through(
            &mut beats,
            &store,
            &a,
            late + 1,
            at + 2 * LAG_MS,
        ));
        assert!(told.is_empty(), "{told:?}");
        assert!(kept_elsewhere(
            &store,
            &a,
            "ops",
            beats.judged_at(at + 2 * LAG_MS)
        ));
    }

    /// A write as late as its ticks let it come (`tickMs` + `2 * BEAT_MS` after the last) is no
    /// clock step: taken for one, each such write after a step made the lag last on.
    #[test]
    fn a_write_as_late_as_its_ticks_let_it_come_ends_the_lag_on_time() {
        let store = MemStore::new();
        let a = config(&["a"], None);
        let due_in = a.tick_ms + 2 * BEAT_MS;
        let mut beats = LiveEndpoints::of_source(1);
        beat_through(&mut beats, &store, &a, 0, 10_000);
        let at = 10_000 + 3_600_000;
        beats.beat(&store, &a, at);
        assert!(beats.judged_at(at) < at);
        let mut now = at;
        while now + due_in < at + LAG_MS {
            now += due_in;
            beats.beat(&store, &a, now);
            assert!(beats.judged_at(now) < now, "at {now}");
        }
        // The lag is over before the next write is due: by the clock, up to then.
        assert!(now + 2 * BEAT_MS >= at + LAG_MS);
        for t in [at + LAG_MS, now + 2 * BEAT_MS] {
            assert_eq!(beats.judged_at(t), t, "at {t}");
        }
        let next = now + due_in;
        beats.beat(&store, &a, next);
        assert_eq!(beats.judged_at(next), next);
    }

    /// Between its writes a sender judges by the clock, up to `2 * BEAT_MS` after the last:
    /// never later than the clock.
    #[test]
    fn between_its_writes_a_sender_judges_no_later_than_the_clock() {
        let store = MemStore::new();
        let mut beats = LiveEndpoints::of_source(1);
        beats.beat(&store, &ticking_every_minute(&["a"]), 1_000);
        for t in [1_000, 8_500, 1_000 + 2 * BEAT_MS - 1, 1_000 + 2 * BEAT_MS] {
            assert_eq!(beats.judged_at(t), t, "at {t}");
        }
        assert_eq!(beats.judged_at(50_000), 1_000 + 2 * BEAT_MS);
    }

    /// The bound keeps the slowest configuration live between its beats, as `STALE_MS` does.
    #[test]
    fn the_slowest_configuration_stays_live_under_the_bound() {
        let slowest = ticking_every_minute(&["ops"]);
        assert_eq!(slowest.tick_ms, crate::config::MAX_TICK_MS);
        let store = MemStore::new();
        let a = config(&["a"], None);
        let mut beats = LiveEndpoints::of_source(1);
        LiveEndpoints::of_source(2).beat(&store, &slowest, 10_000);
        let last = 10_000 + stale_after_ms(slowest.tick_ms);
        // Read a moment before it wrote (another thread's clock read), and up to its bound.
        for now in [9_000, 10_000, last - 1] {
            beats.beat(&store, &a, now);
            assert!(kept_elsewhere(&store, &a, "ops", now), "at {now}");
        }
        assert!(!kept_elsewhere(&store, &a, "ops", last));
    }

    #[test]
    fn learned_endpoints_are_kept_by_configurations_that_learn_by_another_policy() {
        let store = MemStore::new();
        let registered = br#"[{"p":7,"u":"https://b.example/x"}]"#;
        store.set(Registry::key(), registered, None).unwrap();
        let plain = config(&["crm"], None);
        let (narrow, wide) = (
            config(&["crm"], Some("a.example")),
            config(&["crm"], Some("*.example")),
        );
        LiveEndpoints::default().beat(&store, &wide, 0);
        assert!(kept_elsewhere(&store, &plain, "learned-7", 0));
        // A review: the wider policy may build an endpoint the narrower one refuses.
        assert!(kept_elsewhere(&store, &narrow, "learned-7", 0));
        // The same policy builds the same endpoints from the shared mappings: not kept for it.
        assert!(!kept_elsewhere(&store, &wide, "learned-7", 0));
        // No registration for the provider any more: no policy builds it.
        assert!(!kept_elsewhere(&store, &narrow, "learned-8", 0));
        let store = MemStore::new();
        store.set(Registry::key(), registered, None).unwrap();
        LiveEndpoints::default().beat(&store, &plain, 0);
        assert!(!kept_elsewhere(&store, &plain, "learned-7", 0));
    }

    /// A configuration that does not learn builds no learned endpoint, so it keeps none for a
    /// learning one whose own policy refuses it.
    #[test]
    fn a_configuration_without_learning_keeps_no_learned_endpoint() {
        let store = MemStore::new();
        let registered = br#"[{"p":7,"u":"https://b.example/x"}]"#;
        store.set(Registry::key(), registered, None).unwrap();
        LiveEndpoints::default().beat(&store, &config(&["crm"], None), 0);
        let narrow = config(&["crm"], Some("a.example"));
        assert!(!kept_elsewhere(&store, &narrow, "learned-7", 0));
    }

    /// A configuration loaded again (a VM rebuilt after a crash) is told from one an update
    /// brings by how long it has been live.
    #[test]
    fn a_configuration_live_for_a_while_is_established() {
        let store = MemStore::new();
        let (old, new) = (config(&["crm"], None), config(&["crm", "ops"], None));
        let (mut beats_old, mut beats_new) =
            (LiveEndpoints::of_source(1), LiveEndpoints::of_source(2));
        beats_old.beat(&store, &old, 0);
        assert!(!established(&store, 1, ESTABLISHED_MS - 1));
        beats_old.beat(&store, &old, ESTABLISHED_MS);
        beats_new.beat(&store, &new, ESTABLISHED_MS);
        assert!(established(&store, 1, ESTABLISHED_MS));
        assert!(!established(&store, 2, ESTABLISHED_MS));
        assert_eq!(first_heard(&store, 1, ESTABLISHED_MS), Some(0));
        assert_eq!(first_heard(&store, 2, ESTABLISHED_MS), Some(ESTABLISHED_MS));
        // Another root context of the old one announcing keeps when it was first heard from.
        LiveEndpoints::of_source(1).beat(&store, &old, ESTABLISHED_MS + 1);
        assert!(established(&store, 1, ESTABLISHED_MS + 1));
        // Another text that delivers as the old one does is another configuration (a review:
        // an update changing only what observers use was taken for the old one loaded again).
        LiveEndpoints::of_source(3).beat(&store, &old, ESTABLISHED_MS + 1);
        assert!(!established(&store, 3, ESTABLISHED_MS + 1));
        assert_eq!(
            first_heard(&store, 3, ESTABLISHED_MS + 1),
            Some(ESTABLISHED_MS + 1)
        );
        // Gone quiet: no longer live.
        assert!(!established(&store, 1, ESTABLISHED_MS + 1 + STALE_MS));
    }

    /// The record stays bounded however many configurations beat at once, and the one
    /// writing is always in it.
    #[test]
    fn the_record_lists_max_configs_at_most() {
        let store = MemStore::new();
        for source in 0..(MAX_CONFIGS as u64 + 5) {
            LiveEndpoints::of_source(source).beat(&store, &config(&["crm"], None), 0);
        }
        let entries = decode(store.get(KEY).unwrap().map(|v| v.0).as_deref());
        assert_eq!(entries.len(), MAX_CONFIGS);
        assert_eq!(entries.last().unwrap().source, MAX_CONFIGS as u64 + 4);
    }

    #[test]
    fn an_unreadable_record_keeps_nothing_and_is_rewritten() {
        let store = MemStore::new();
        store.set(KEY, b"[{\"id\":", None).unwrap();
        let c = config(&["crm"], None);
        assert!(!kept_elsewhere(&store, &c, "ops", 0));
        LiveEndpoints::default().beat(&store, &c, 0);
        assert_eq!(
            decode(store.get(KEY).unwrap().map(|v| v.0).as_deref()).len(),
            1
        );
    }

    /// The stored format, every key included (the pinned flow fixture has no `learn`).
    #[test]
    fn entries_keep_their_stored_format() {
        let entry = Entry {
            id: 1,
            seen_ms: 3,
            since_ms: 2,
            source: 4,
            learns: Some(5),
            names: vec!["crm".into(), "q\"".into()],
        };
        let stored = r#"[{"id":1,"at":3,"since":2,"src":4,"learn":5,"names":["crm","q\""]}]"#;
        assert_eq!(
            String::from_utf8(encode(std::slice::from_ref(&entry))).unwrap(),
            stored
        );
        assert_eq!(decode(Some(stored.as_bytes())), [entry]);
    }

    /// Shared data the host refuses to read or write.
    struct Refusing;

    impl Store for Refusing {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, store::Cas)>, store::StoreError> {
            Err(store::StoreError::Host)
        }

        fn set(&self, _: &str, _: &[u8], _: Option<store::Cas>) -> Result<(), store::StoreError> {
            Err(store::StoreError::Host)
        }
    }

    /// Not knowing which configurations are live is no reason to drop a delivery that may be
    /// another's.
    #[test]
    fn a_record_the_host_cannot_read_keeps_every_delivery() {
        assert!(kept_elsewhere(&Refusing, &config(&["crm"], None), "ops", 0));
    }
}
