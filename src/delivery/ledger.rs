//! The ledger of pending deliveries: a fixed array of slots in a `Store`.
//!
//! Shared data has no delete, no listing and no atomic create, so the ledger is a bounded
//! array created once at start (`keys`), and every change is a CAS on one slot. A slot holds
//! one (notification, endpoint) pair: a newer event for the same pair replaces the one
//! waiting there, or queues behind the attempt on the wire, so a receiver never gets an older
//! state after a newer one.
//!
//! Keys (each under the format prefix, `shared_name!`): `q/m/<i>` the slot's record with the body of the event it delivers (one key, so
//! one CAS takes a free slot and fills it), `q/scan` the shared cursor that spreads retry scans across the VMs that tick, and `q/hw`
//! the most slots any configuration ever had, so a smaller `maxPending` after an update still
//! sweeps (and so delivers) what waits in the slots above it, and a sender loaded before a
//! larger configuration sweeps as far as that one once it finds the cursor past its own end.

use crate::config::MAX_PENDING_LIMIT;
use crate::events::{endpoint_key, fnv1a64, EndpointKey, Generation};
use crate::record::{Out, Reader};
use crate::store::{self, Store, StoreError};

/// A free slot's record.
const FREE: &[u8] = b"-";
/// Ends a used slot's record and starts the body, which follows byte for byte. The record
/// is compact JSON, in which a raw newline cannot occur.
const BODY_SEPARATOR: u8 = b'\n';
/// Attempts remembered per delivery for the dead-letter report.
pub const MAX_HISTORY: usize = 20;
/// Slots probed, at random, to find a free one before the ledger counts as full: with 64
/// probes an event is dropped only when about 93 % of the slots or more are taken.
const ALLOC_PROBES: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Due at `Slot::at_ms`.
    Waiting,
    /// On the wire; `Slot::at_ms` is when the claim lapses if nobody reports back.
    InFlight,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub at_ms: u64,
    pub outcome: String,
    pub duration_ms: u64,
}

/// A newer event that waits for the attempt on the wire to finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    pub webhook_id: String,
    pub body: String,
    pub generation: Generation,
    /// Not due before then: a SUCCESS placed to wait for its result keeps its wait when it
    /// queues behind an attempt (0: due when promoted).
    pub at_ms: u64,
    /// As `Slot::taken_in_ms`, kept for when it takes the slot.
    pub taken_in_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub state: State,
    pub at_ms: u64,
    /// When the delivery's retry window opened: its first attempt, or the first time an open
    /// circuit held it, whichever came first. `None` until then: time spent waiting for a
    /// free in-flight place on an endpoint that answers is not the endpoint failing.
    pub window_from_ms: Option<u64>,
    /// How much longer than the schedule's own delays it had to wait, for `Retry-After`
    /// answers or for free in-flight places once its window was open: the window grows by
    /// that much.
    pub extended_ms: u64,
    /// Since when it has waited for a free in-flight place (its endpoint answers, slowly).
    pub waiting_since_ms: Option<u64>,
    /// Of `extended_ms`, what pauses its receiver asked for (`Retry-After`) have added while
    /// it was held: bounded, so a receiver that never stops asking cannot keep it.
    pub paused_ms: u64,
    pub endpoint: String,
    pub notification: u64,
    pub webhook_id: String,
    /// Attempts made for this event.
    pub attempts: u32,
    pub history: Vec<AttemptRecord>,
    pub successor: Option<Successor>,
    /// Refused only because its endpoint had no free lease: the sender that held it back
    /// may send it as soon as a lease frees, before `at_ms`.
    pub held: bool,
    /// Of the event this slot delivers: a slot never takes an event older than its own.
    pub generation: Generation,
    /// A later event of the notification was taken in by another worker while this one was
    /// on the wire: a failed attempt ends it rather than retry (`Ledger::withdraw`).
    pub superseded: bool,
    /// When the filter took this event in, for `delivery_delay_ms`. `None` in a record an
    /// older build wrote: that delivery goes unmeasured.
    pub taken_in_ms: Option<u64>,
    /// The webhook body.
    pub body: Vec<u8>,
}

impl Slot {
    /// A fresh event, due now.
    pub fn new(
        endpoint: &str,
        notification: u64,
        webhook_id: &str,
        body: Vec<u8>,
        now_ms: u64,
    ) -> Self {
        Slot {
            state: State::Waiting,
            at_ms: now_ms,
            window_from_ms: None,
            extended_ms: 0,
            waiting_since_ms: None,
            paused_ms: 0,
            endpoint: endpoint.to_string(),
            notification,
            webhook_id: webhook_id.to_string(),
            attempts: 0,
            history: Vec::new(),
            successor: None,
            held: false,
            generation: Generation::FIRST,
            superseded: false,
            taken_in_ms: Some(now_ms),
            body,
        }
    }

    #[must_use]
    pub fn of_generation(self, generation: Generation) -> Self {
        Slot { generation, ..self }
    }

    pub fn is_due(&self, now_ms: u64) -> bool {
        self.state == State::Waiting && self.at_ms <= now_ms
    }

    /// Due, or held back only for a lease that a sender now has.
    pub fn is_sendable(&self, now_ms: u64, lease_freed: bool) -> bool {
        self.is_due(now_ms) || (lease_freed && self.held && self.state == State::Waiting)
    }

    pub fn push_history(&mut self, record: AttemptRecord) {
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(1.min(self.history.len() - 1));
        }
        self.history.push(record);
    }
}

// The stored form: short keys, and the optional ones left out when empty.

impl State {
    fn tag(self) -> &'static str {
        match self {
            State::Waiting => "w",
            State::InFlight => "f",
        }
    }

    fn read(r: &mut Reader) -> Option<State> {
        match r.string()?.as_str() {
            "w" => Some(State::Waiting),
            "f" => Some(State::InFlight),
            _ => None,
        }
    }
}

impl AttemptRecord {
    fn write(&self, out: &mut Out) {
        out.begin_object();
        out.key("t");
        out.uint(self.at_ms);
        out.key("o");
        out.string(&self.outcome);
        out.key("d");
        out.uint(self.duration_ms);
        out.end_object();
    }

    fn read(r: &mut Reader) -> Option<AttemptRecord> {
        let (mut at_ms, mut outcome, mut duration_ms) = (None, None, None);
        r.object(|r, key| {
            match key {
                "t" => at_ms = Some(r.uint()?),
                "o" => outcome = Some(r.string()?),
                "d" => duration_ms = Some(r.uint()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(AttemptRecord {
            at_ms: at_ms?,
            outcome: outcome?,
            duration_ms: duration_ms?,
        })
    }
}

impl Successor {
    /// What the slot holds once the delivery `ahead` of this event ends: this event, due at
    /// `at_ms`, untried, taken in when it was.
    pub fn into_slot(self, ahead: &Slot, at_ms: u64) -> Slot {
        let body = self.body.into_bytes();
        let mut slot = Slot::new(
            &ahead.endpoint,
            ahead.notification,
            &self.webhook_id,
            body,
            at_ms,
        )
        .of_generation(self.generation);
        slot.taken_in_ms = self.taken_in_ms;
        slot
    }

    fn write(&self, out: &mut Out) {
        out.begin_object();
        out.key("id");
        out.string(&self.webhook_id);
        out.key("b");
        out.string(&self.body);
        out.key("g");
        out.uint(self.generation.0.into());
        if self.at_ms > 0 {
            out.key("at");
            out.uint(self.at_ms);
        }
        write_taken_in(out, self.taken_in_ms);
        out.end_object();
    }

    fn read(r: &mut Reader) -> Option<Successor> {
        let (mut webhook_id, mut body, mut generation, mut at_ms) = (None, None, None, 0);
        let mut taken_in_ms = None;
        r.object(|r, key| {
            match key {
                "id" => webhook_id = Some(r.string()?),
                "b" => body = Some(r.string()?),
                "g" => generation = Some(Generation(r.uint32()?)),
                "at" => at_ms = r.uint()?,
                TAKEN_IN => taken_in_ms = Some(r.uint()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        Some(Successor {
            webhook_id: webhook_id?,
            body: body?,
            generation: generation?,
            at_ms,
            taken_in_ms,
        })
    }
}

/// The key of `taken_in_ms`, in a slot's record and its successor's. Added to a format that
/// older builds of the same prefix read: they skip it, and a record they write back loses
/// it, which costs one delivery's sample of a histogram (`shared_name!`).
const TAKEN_IN: &str = "ti";

fn write_taken_in(out: &mut Out, taken_in_ms: Option<u64>) {
    if let Some(ms) = taken_in_ms {
        out.key(TAKEN_IN);
        out.uint(ms);
    }
}

impl Slot {
    fn write(&self, out: &mut Out) {
        out.begin_object();
        out.key("s");
        out.string(self.state.tag());
        out.key("at");
        out.uint(self.at_ms);
        if let Some(from) = self.window_from_ms {
            out.key("c");
            out.uint(from);
        }
        if self.extended_ms > 0 {
            out.key("x");
            out.uint(self.extended_ms);
        }
        if let Some(since) = self.waiting_since_ms {
            out.key("w");
            out.uint(since);
        }
        if self.paused_ms > 0 {
            out.key("pz");
            out.uint(self.paused_ms);
        }
        out.key("ep");
        out.string(&self.endpoint);
        out.key("n");
        out.uint(self.notification);
        out.key("id");
        out.string(&self.webhook_id);
        out.key("a");
        out.uint(self.attempts.into());
        if !self.history.is_empty() {
            out.key("h");
            out.begin_array();
            for a in &self.history {
                a.write(out);
            }
            out.end_array();
        }
        if let Some(next) = &self.successor {
            out.key("nx");
            next.write(out);
        }
        if self.held {
            out.key("hd");
            out.boolean(true);
        }
        out.key("g");
        out.uint(self.generation.0.into());
        if self.superseded {
            out.key("sp");
            out.boolean(true);
        }
        write_taken_in(out, self.taken_in_ms);
        out.end_object();
    }

    fn read(r: &mut Reader) -> Option<Slot> {
        let (mut state, mut at_ms, mut endpoint, mut notification) = (None, None, None, None);
        let (mut webhook_id, mut attempts) = (None, None);
        let (mut history, mut successor, mut held, mut generation) = (None, None, None, None);
        let (mut superseded, mut window_from_ms, mut extended_ms) = (None, None, None);
        let (mut waiting_since_ms, mut paused_ms, mut taken_in_ms) = (None, None, None);
        r.object(|r, key| {
            match key {
                "s" => state = Some(State::read(r)?),
                "at" => at_ms = Some(r.uint()?),
                "c" => window_from_ms = Some(r.uint()?),
                "x" => extended_ms = Some(r.uint()?),
                "w" => waiting_since_ms = Some(r.uint()?),
                "pz" => paused_ms = Some(r.uint()?),
                "ep" => endpoint = Some(r.string()?),
                "n" => notification = Some(r.uint()?),
                "id" => webhook_id = Some(r.string()?),
                "a" => attempts = Some(r.uint32()?),
                "h" => history = r.optional(|r| r.list(AttemptRecord::read))?,
                "nx" => successor = r.optional(Successor::read)?,
                "hd" => held = r.optional(Reader::boolean)?,
                "g" => generation = Some(Generation(r.uint32()?)),
                "sp" => superseded = r.optional(Reader::boolean)?,
                TAKEN_IN => taken_in_ms = Some(r.uint()?),
                _ => r.skip()?,
            }
            Some(())
        })?;
        let history: Vec<AttemptRecord> = history.unwrap_or_default();
        Some(Slot {
            state: state?,
            at_ms: at_ms?,
            // None until the window opens, at the first attempt or hold.
            window_from_ms,
            extended_ms: extended_ms.unwrap_or(0),
            waiting_since_ms,
            paused_ms: paused_ms.unwrap_or(0),
            endpoint: endpoint?,
            notification: notification?,
            webhook_id: webhook_id?,
            attempts: attempts?,
            history,
            successor,
            held: held.unwrap_or(false),
            generation: generation?,
            superseded: superseded.unwrap_or(false),
            taken_in_ms,
            body: Vec::new(),
        })
    }
}

/// What a slot's record holds.
// A record lives briefly, one per ledger update; boxing the slot would add an allocation to
// every decode for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Free,
    Used(Slot),
    /// Not a record this version can read (another version's): left alone, never reused.
    Unreadable,
}

impl Record {
    pub fn decode(bytes: Option<&[u8]>) -> Record {
        let bytes = match bytes {
            None | Some(FREE) | Some([]) => return Record::Free,
            Some(b) => b,
        };
        let Some(split) = bytes.iter().position(|b| *b == BODY_SEPARATOR) else {
            return Record::Unreadable;
        };
        let (record, body) = bytes.split_at(split);
        match Reader::document(record, Slot::read) {
            Some(mut slot) => {
                slot.body = body.get(1..).unwrap_or_default().to_vec();
                Record::Used(slot)
            }
            None => Record::Unreadable,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Free => FREE.to_vec(),
            Record::Used(slot) => {
                let mut out = Out::default();
                slot.write(&mut out);
                let mut bytes = out.into_bytes();
                bytes.reserve_exact(1 + slot.body.len());
                bytes.push(BODY_SEPARATOR);
                bytes.extend_from_slice(&slot.body);
                bytes
            }
            // Never written: an unreadable record is left as it was.
            Record::Unreadable => Vec::new(),
        }
    }
}

/// How an event entered the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// In a free slot.
    New(u32),
    /// In place of an older event for the same pair that had not gone out yet.
    Replaced(u32),
    /// Behind the older event's attempt on the wire.
    Queued(u32),
    /// Behind the attempt on the wire, in place of an event that was queued there and so
    /// never goes out.
    Requeued(u32),
    /// Not placed: the slot already holds a later event of the pair (another worker took it
    /// in at the same time and placed it first).
    Outdated(u32),
}

/// For logs.
impl std::fmt::Display for Placed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placed::New(i) => write!(f, "new in slot {i}"),
            Placed::Replaced(i) => write!(f, "replaced the waiting event in slot {i}"),
            Placed::Queued(i) => write!(f, "queued behind the attempt in slot {i}"),
            Placed::Requeued(i) => {
                write!(
                    f,
                    "replaced the event queued behind the attempt in slot {i}"
                )
            }
            Placed::Outdated(i) => write!(f, "dropped for the later event in slot {i}"),
        }
    }
}

impl Placed {
    pub fn slot(self) -> u32 {
        match self {
            Placed::New(i)
            | Placed::Replaced(i)
            | Placed::Queued(i)
            | Placed::Requeued(i)
            | Placed::Outdated(i) => i,
        }
    }

    /// The slot that now holds the event; `None` when it was not placed.
    pub fn held_slot(self) -> Option<u32> {
        match self {
            Placed::Outdated(_) => None,
            placed => Some(placed.slot()),
        }
    }
}

/// What `Ledger::withdraw` took back: the `webhook-id` of a delivery that had not gone out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Withdrawn {
    /// Its slot is free.
    Freed(String),
    /// The newer event queued behind it holds its slot now, and is to be sent.
    Replaced(String),
}

/// Where a fuller body reached a delivery (`Ledger::fill_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilledIn {
    /// Untried, and no longer waiting for it: send it now.
    DueNow,
    /// Its next attempt carries it (a retry, or an event queued behind an attempt).
    Waiting,
    /// Only the attempt after the one on the wire would: that one carries what it had.
    OnTheWire,
}

/// A notification's event (by its generation) as delivered to one endpoint, by its key as
/// the dedupe memory records it: an endpoint the configuration in force no longer has (an
/// update removed it while the replaced one drains) is still told apart.
#[derive(Debug, Clone, Copy)]
pub struct EventFor {
    pub endpoint: EndpointKey,
    pub notification: u64,
    pub generation: Generation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerError {
    /// No free slot: the event is dropped (and counted).
    Full,
    Store(StoreError),
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        LedgerError::Store(e)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Ledger {
    /// Slots new deliveries may take.
    slots: u32,
    /// Slots swept for due deliveries: at least `slots`.
    scan: u32,
}

pub fn meta_key(slot: u32) -> String {
    format!(crate::shared_name!("q/m/{}"), slot)
}

const SCAN_KEY: &str = crate::shared_name!("q/scan");
const HIGH_WATER_KEY: &str = crate::shared_name!("q/hw");

/// splitmix64: spreads probes over the ledger from a seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Ledger {
    pub fn new(slots: u32) -> Self {
        let slots = slots.max(1);
        Ledger { slots, scan: slots }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Slots a sweep covers: this configuration's, or more after a larger one.
    pub fn swept(&self) -> u32 {
        self.scan
    }

    /// Keys to create (as free) before traffic flows, with their initial value.
    pub fn keys(&self) -> impl Iterator<Item = (String, &'static [u8])> {
        [
            (SCAN_KEY, b"0".as_slice()),
            (HIGH_WATER_KEY, b"0".as_slice()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain((0..self.slots).map(|i| (meta_key(i), FREE)))
    }

    /// Record this configuration's size in the high-water mark, and sweep up to the mark:
    /// slots a larger earlier configuration filled are still delivered. Every configuration
    /// records it, one that only observes too: the senders read it again once a pass.
    pub fn sweeping_high_water<S: Store + ?Sized>(self, store: &S) -> Self {
        let slots = self.slots;
        let mark = store::update(store, HIGH_WATER_KEY, |cur| {
            let old = cur.and_then(read_mark).unwrap_or(0);
            (old < slots).then(|| (slots.to_string().into_bytes(), slots))
        });
        let scan = match mark {
            Ok(Some(new)) => new,
            _ => high_water(store).unwrap_or(slots),
        };
        Ledger {
            slots,
            scan: scan.max(slots),
        }
    }

    pub fn read<S: Store + ?Sized>(&self, store: &S, slot: u32) -> Result<Record, StoreError> {
        let value = store.get(&meta_key(slot))?;
        Ok(Record::decode(value.as_ref().map(|(v, _)| v.as_slice())))
    }

    /// Change one slot's record under CAS. `f` returns the new record and a result, or
    /// `None` to leave it.
    pub fn update<S: Store + ?Sized, T>(
        &self,
        store: &S,
        slot: u32,
        mut f: impl FnMut(Record) -> Option<(Record, T)>,
    ) -> Result<Option<T>, StoreError> {
        store::update(store, &meta_key(slot), |cur| {
            let (rec, out) = f(Record::decode(cur))?;
            Some((rec.encode(), out))
        })
    }

    /// Take back the delivery `slot` holds if `which` picks it: when it waits, out of the
    /// ledger, or, when a newer event is queued behind it (an attempt given back unsent for
    /// want of a place), replaced by that event, due as it was; marked `superseded` when it
    /// is on the wire, so that a failed attempt ends it instead of retrying an older state
    /// after a newer one (an attempt with an event queued behind it ends so anyway).
    pub fn withdraw<S: Store + ?Sized>(
        &self,
        store: &S,
        slot: u32,
        which: impl Fn(&Slot) -> bool,
    ) -> Result<Option<Withdrawn>, StoreError> {
        let taken = self.update(store, slot, |rec| match rec {
            Record::Used(s) if !which(&s) => None,
            Record::Used(mut s) if s.state == State::Waiting => match s.successor.take() {
                None => Some((Record::Free, Some(Withdrawn::Freed(s.webhook_id)))),
                Some(next) => {
                    let at = next.at_ms;
                    let fresh = next.into_slot(&s, at);
                    let out = Withdrawn::Replaced(s.webhook_id);
                    Some((Record::Used(fresh), Some(out)))
                }
            },
            Record::Used(mut s) if s.successor.is_none() && !s.superseded => {
                s.superseded = true;
                Some((Record::Used(s), None))
            }
            _ => None,
        })?;
        Ok(taken.flatten())
    }

    /// Rewrite the body of the delivery of `notification`'s event of `generation` to
    /// `endpoint` with `fill` (which adds the result OsmoX saved after the state; `None` leaves
    /// it). The attempt already on the wire keeps what it carries; later ones take the new
    /// body. A delivery that waits and has not been tried is due now, its wait for the result
    /// over. `None` when the slot no longer holds it.
    pub fn fill_in<S: Store + ?Sized>(
        &self,
        store: &S,
        slot: u32,
        event: EventFor,
        fill: impl Fn(&[u8]) -> Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Option<FilledIn>, StoreError> {
        let EventFor {
            endpoint,
            notification,
            generation,
        } = event;
        self.update(store, slot, |rec| {
            let Record::Used(mut s) = rec else {
                return None;
            };
            if s.notification != notification || endpoint_key(&s.endpoint) != endpoint {
                return None;
            }
            if s.generation == generation {
                s.body = fill(&s.body)?;
                let filled = match s.state {
                    State::InFlight => FilledIn::OnTheWire,
                    State::Waiting if s.attempts == 0 => {
                        s.at_ms = s.at_ms.min(now_ms);
                        FilledIn::DueNow
                    }
                    State::Waiting => FilledIn::Waiting,
                };
                return Some((Record::Used(s), filled));
            }
            let queued = s
                .successor
                .as_mut()
                .filter(|q| q.generation == generation)?;
            queued.body = String::from_utf8(fill(queued.body.as_bytes())?).ok()?;
            queued.at_ms = queued.at_ms.min(now_ms);
            Some((Record::Used(s), FilledIn::Waiting))
        })
    }

    /// Put an event for (`notification`, `endpoint`) into the ledger. `existing` is the slot
    /// that held this pair's previous event, if we know one; `seed` picks where the search
    /// for a free slot probes, and should differ between calls.
    pub fn place<S: Store + ?Sized>(
        &self,
        store: &S,
        existing: Option<u32>,
        fresh: Slot,
        seed: u64,
    ) -> Result<Placed, LedgerError> {
        // Above this ledger's size too: after an update lowered `maxPending`, the pair's
        // previous event may wait in a slot of the larger ledger, and a fresh slot would let
        // it go out after this later one (`place_over` checks the slot still holds the pair).
        if let Some(slot) = existing {
            if let Some(placed) = self.place_over(store, slot, &fresh)? {
                return Ok(placed);
            }
        }
        // Mixing in the delivery's own id spreads callers that pass the same seed.
        let seed = seed ^ fnv1a64(&[fresh.webhook_id.as_bytes()]);
        let slot = self.take_free(store, seed, &Record::Used(fresh).encode())?;
        Ok(Placed::New(slot))
    }

    /// Replace or queue behind the pair's previous event, unless the slot holds a later one;
    /// `None` when the slot no longer holds that pair.
    fn place_over<S: Store + ?Sized>(
        &self,
        store: &S,
        slot: u32,
        fresh: &Slot,
    ) -> Result<Option<Placed>, StoreError> {
        let same_pair =
            |s: &Slot| s.notification == fresh.notification && s.endpoint == fresh.endpoint;
        let later = |s: &Slot| {
            s.generation > fresh.generation
                || s.successor
                    .as_ref()
                    .is_some_and(|q| q.generation > fresh.generation)
        };
        let mut outdated = false;
        let placed = self.update(store, slot, |rec| match rec {
            Record::Used(s) if same_pair(&s) && later(&s) => {
                outdated = true;
                None
            }
            // Waiting: the newer event takes its place.
            Record::Used(s) if same_pair(&s) && s.state == State::Waiting => {
                Some((Record::Used(fresh.clone()), Placed::Replaced(slot)))
            }
            Record::Used(mut s) if same_pair(&s) => {
                let placed = match s.successor {
                    Some(_) => Placed::Requeued(slot),
                    None => Placed::Queued(slot),
                };
                s.successor = Some(Successor {
                    webhook_id: fresh.webhook_id.clone(),
                    // A fresh slot's body is a `String`'s bytes (`Slot::new`'s callers), so
                    // this never comes out empty; no lossy decoding kept for it.
                    body: String::from_utf8(fresh.body.clone()).unwrap_or_default(),
                    generation: fresh.generation,
                    at_ms: fresh.at_ms,
                    taken_in_ms: fresh.taken_in_ms,
                });
                Some((Record::Used(s), placed))
            }
            _ => None,
        })?;
        Ok(placed.or(outdated.then_some(Placed::Outdated(slot))))
    }

    /// Fill a free slot with `record`, probing at random from `seed`. Random probes keep
    /// finding free slots until the ledger is nearly full, wherever earlier callers packed
    /// their deliveries; sequential probes from a few starting points did not.
    fn take_free<S: Store + ?Sized>(
        &self,
        store: &S,
        seed: u64,
        record: &[u8],
    ) -> Result<u32, LedgerError> {
        for k in 0..ALLOC_PROBES {
            let Ok(slot) = u32::try_from(mix(seed.wrapping_add(k)) % u64::from(self.slots)) else {
                continue;
            };
            let Some((value, cas)) = store.get(&meta_key(slot))? else {
                continue; // not created yet: never write a key we cannot CAS
            };
            if Record::decode(Some(&value)) != Record::Free {
                continue;
            }
            match store.set(&meta_key(slot), record, Some(cas)) {
                Ok(()) => return Ok(slot),
                Err(StoreError::CasMismatch) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Full)
    }

    /// Take the next `count` slots to scan, shared between every VM that ticks so that
    /// together they sweep the ledger instead of each scanning the same slots.
    ///
    /// A cursor past this ledger's end was left by a sender of a larger one (a configuration
    /// loaded since, with a higher `maxPending`, or another listener's under the same
    /// `vm_id`): this one then sweeps as far as the high-water mark says. Sending the cursor
    /// back to its own end instead kept the slots above it from ever being swept while both
    /// ticked (a review found it).
    pub fn next_scan_window<S: Store + ?Sized>(
        &mut self,
        store: &S,
        count: u32,
    ) -> Result<std::ops::Range<u32>, StoreError> {
        if let Some(window) = self.take_window(store, count, true)? {
            if window.start == 0 {
                // Once a pass: a configuration that only observes (beside a singleton sender,
                // which no update reaches) may have raised the mark since, and sweeps nothing
                // itself, so the cursor never shows it.
                self.scan = self.scan.max(high_water(store).unwrap_or(0));
            }
            return Ok(window);
        }
        self.scan = self.scan.max(high_water(store).unwrap_or(0));
        Ok(self.take_window(store, count, false)?.unwrap_or(0..0))
    }

    /// Move the shared cursor past the next window of this ledger's `scan` slots. With
    /// `stop_past_end`, a cursor past them is left alone and `None` returned.
    fn take_window<S: Store + ?Sized>(
        &self,
        store: &S,
        count: u32,
        stop_past_end: bool,
    ) -> Result<Option<std::ops::Range<u32>>, StoreError> {
        let count = count.clamp(1, self.scan);
        let slots = self.scan;
        let start = store::update(store, SCAN_KEY, |cur| {
            let read: Option<u32> = cur
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.parse().ok());
            if stop_past_end && read.is_some_and(|s| s >= slots) {
                return None;
            }
            let start = read.filter(|s| *s < slots).unwrap_or(0);
            // Saturating: both numbers are shared data, and may lie near `u32::MAX`.
            let end = start.saturating_add(count);
            let next = if end >= slots { 0 } else { end };
            Some((next.to_string().into_bytes(), start))
        })?;
        Ok(start.map(|start| start..start.saturating_add(count).min(slots)))
    }
}

/// The most slots any configuration had, as recorded in shared data.
fn high_water<S: Store + ?Sized>(store: &S) -> Option<u32> {
    let (bytes, _) = store.get(HIGH_WATER_KEY).ok()??;
    read_mark(&bytes)
}

/// A mark above what any configuration may have was written by no sender of this prefix:
/// taken as it is, sweeps near `u32::MAX` went through billions of empty slots.
fn read_mark(bytes: &[u8]) -> Option<u32> {
    let mark: u32 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    Some(mark.min(MAX_PENDING_LIMIT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn ledger(n: u32) -> (MemStore, Ledger) {
        let s = MemStore::new();
        let l = Ledger::new(n);
        for (k, v) in l.keys() {
            s.set(&k, v, None).unwrap();
        }
        (s, l)
    }

    fn used(l: &Ledger, s: &MemStore, slot: u32) -> Slot {
        match l.read(s, slot).unwrap() {
            Record::Used(slot) => slot,
            other => panic!("expected a used slot, got {other:?}"),
        }
    }

    #[test]
    fn places_into_a_free_slot_with_its_body() {
        let (s, l) = ledger(8);
        let p = l
            .place(
                &s,
                None,
                Slot::new("crm", 1, "w1", b"{\"id\":1}".to_vec(), 5),
                3,
            )
            .unwrap();
        let Placed::New(slot) = p else {
            panic!("expected a new slot, got {p:?}")
        };
        assert!(slot < 8);
        assert_eq!(used(&l, &s, slot).webhook_id, "w1");
        assert_eq!(used(&l, &s, slot).body, b"{\"id\":1}");
    }

    /// As `ALLOC_PROBES` says: no event is dropped before about 93 % of the slots are taken
    /// (a probe sequence that spread worse dropped events from about 80 %).
    #[test]
    fn random_probes_fill_most_of_the_ledger_without_a_refusal() {
        let (s, l) = ledger(1000);
        for i in 0..900u64 {
            let fresh = Slot::new("a", i, &format!("w{i}"), b"x".to_vec(), 0);
            // Callers in bursts share nearby seeds; the probes must still spread.
            l.place(&s, None, fresh, i / 100)
                .unwrap_or_else(|e| panic!("event {i} refused: {e:?}"));
        }
    }

    /// Callers that pass one seed for every event still spread them, by each delivery's id:
    /// whatever the seed's bits, or the events would all probe the same 64 slots.
    #[test]
    fn events_placed_with_one_seed_are_spread_by_their_ids() {
        for seed in [0, u64::MAX] {
            let (s, l) = ledger(1000);
            for i in 0..200u64 {
                let fresh = Slot::new("a", i, &format!("w{i}"), b"x".to_vec(), 0);
                l.place(&s, None, fresh, seed)
                    .unwrap_or_else(|e| panic!("event {i} refused, seed {seed:#x}: {e:?}"));
            }
        }
    }

    /// The probes are splitmix64's outputs, as its reference gives them (seed 1234567, and
    /// seed 0): the spread `ALLOC_PROBES` was measured with. A mixer that shifts or combines
    /// a step wrongly still fills the ledger above, but spreads worse.
    #[test]
    fn probes_are_spread_by_splitmix64() {
        let gamma = 0x9e37_79b9_7f4a_7c15_u64;
        assert_eq!(mix(1_234_567), 6_457_827_717_110_365_317);
        assert_eq!(
            mix(1_234_567_u64.wrapping_add(gamma)),
            3_203_168_211_198_807_973
        );
        assert_eq!(mix(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn a_smaller_ledger_still_sweeps_the_slots_a_larger_one_filled() {
        let (s, big) = ledger(10);
        let big = big.sweeping_high_water(&s);
        assert_eq!(big.scan, 10);
        let mut small = Ledger::new(4).sweeping_high_water(&s);
        assert_eq!((small.slots, small.scan), (4, 10));
        let windows: Vec<_> = (0..3)
            .map(|_| small.next_scan_window(&s, 4).unwrap())
            .collect();
        assert_eq!(windows, vec![0..4, 4..8, 8..10]);
    }

    /// Every worker of every configuration records its size at start: the mark is written
    /// only to raise it, so one already as high (or higher) is read, not written again.
    #[test]
    fn a_mark_already_as_high_is_not_written_again() {
        let (s, _) = ledger(10);
        assert_eq!(Ledger::new(10).sweeping_high_water(&s).swept(), 10);
        let (_, cas) = s.get(HIGH_WATER_KEY).unwrap().unwrap();
        for slots in [10, 4] {
            assert_eq!(Ledger::new(slots).sweeping_high_water(&s).swept(), 10);
            let (mark, now) = s.get(HIGH_WATER_KEY).unwrap().unwrap();
            assert_eq!((mark.as_slice(), now), (&b"10"[..], cas), "{slots} slots");
        }
    }

    /// Two configurations sweep one ledger: one loaded before an update (or on another
    /// listener of the `vm_id`) raised `maxPending`, one after. Their windows together still
    /// cover every slot of the larger: the smaller must not keep sending the shared cursor
    /// back to its own end, or the slots above it are never swept (what waits there for a
    /// sweep, such as an attempt whose VM went away, would wait for good).
    #[test]
    fn a_larger_ledger_configured_later_is_swept_whole_beside_a_smaller_one() {
        let (s, _) = ledger(12);
        let small = Ledger::new(4).sweeping_high_water(&s);
        let big = Ledger::new(12).sweeping_high_water(&s);
        assert_eq!((small.swept(), big.swept()), (4, 12));
        let mut senders = [small, big];
        let mut swept = [false; 12];
        for turn in 0..12 {
            for slot in senders[turn % 2].next_scan_window(&s, 4).unwrap() {
                swept[slot as usize] = true;
            }
        }
        assert_eq!(swept, [true; 12], "slots never swept: {swept:?}");
        assert_eq!(
            senders[0].swept(),
            12,
            "the smaller learned the larger's size"
        );
    }

    /// A configuration that only observes (the HTTP filter beside a bootstrap singleton
    /// sender, which an LDS update never reaches) raised `maxPending` after the sender
    /// started: its deliveries go into slots past the sender's, and the sender, sweeping
    /// alone, never found the cursor past its own end, so it never swept them (what waits
    /// there for a sweep, a retry whose schedule a reloaded VM lost, waited for good).
    #[test]
    fn a_mark_raised_after_a_sender_started_is_swept_to() {
        let (s, _) = ledger(12);
        let mut sender = Ledger::new(4).sweeping_high_water(&s);
        assert_eq!(sender.swept(), 4);
        let _observer = Ledger::new(12).sweeping_high_water(&s);
        let mut swept = [false; 12];
        for _ in 0..8 {
            for slot in sender.next_scan_window(&s, 4).unwrap() {
                swept[slot as usize] = true;
            }
        }
        assert_eq!(swept, [true; 12], "slots never swept: {swept:?}");
    }

    /// The slots a configuration asks for are laid out (at least one), and new deliveries
    /// may take every one of them.
    #[test]
    fn a_ledger_has_the_slots_configured() {
        let (s, l) = ledger(3);
        assert_eq!(l.slots(), 3);
        assert_eq!(l.keys().filter(|(_, v)| *v == FREE).count(), 3);
        for n in 0..3 {
            l.place(&s, None, Slot::new("a", n, "w", b"1".to_vec(), 0), n)
                .unwrap();
        }
        assert_eq!(Ledger::new(0).slots(), 1);
    }

    #[test]
    fn full_ledger_refuses() {
        let (s, l) = ledger(2);
        l.place(&s, None, Slot::new("a", 1, "w1", b"1".to_vec(), 0), 0)
            .unwrap();
        l.place(&s, None, Slot::new("a", 2, "w2", b"2".to_vec(), 0), 0)
            .unwrap();
        let third = l.place(&s, None, Slot::new("a", 3, "w3", b"3".to_vec(), 0), 0);
        assert_eq!(third, Err(LedgerError::Full));
    }

    /// As a sender's claim leaves it.
    fn on_the_wire(l: &Ledger, s: &MemStore, slot: u32) {
        set_state(l, s, slot, State::InFlight);
    }

    /// Given back unsent: waiting again.
    fn given_back(l: &Ledger, s: &MemStore, slot: u32) {
        set_state(l, s, slot, State::Waiting);
    }

    fn set_state(l: &Ledger, s: &MemStore, slot: u32, state: State) {
        l.update(s, slot, |rec| match rec {
            Record::Used(mut slot) => {
                slot.state = state;
                Some((Record::Used(slot), ()))
            }
            _ => None,
        })
        .unwrap();
    }

    /// The result a later view showed: a waiting delivery of that very event takes it and
    /// is due at once; one on the wire takes it for its retries; one queued behind another
    /// event's attempt takes it too; another event's, or another endpoint's, does not.
    #[test]
    fn filling_in_reaches_only_the_event_it_names() {
        let (s, l) = ledger(4);
        let g2 = Generation(2);
        let held = Slot::new("a", 1, "w", b"bare".to_vec(), 0).of_generation(g2);
        let held = Slot {
            at_ms: 1_000,
            ..held
        };
        let slot = l.place(&s, None, held, 0).unwrap().slot();
        let fill = |endpoint: &str, generation: Generation| {
            let event = EventFor {
                endpoint: endpoint_key(endpoint),
                notification: 1,
                generation,
            };
            l.fill_in(&s, slot, event, |_| Some(b"full".to_vec()), 300)
                .unwrap()
        };
        assert_eq!(fill("b", g2), None);
        assert_eq!(fill("a", Generation(1)), None);
        assert_eq!(fill("a", g2), Some(FilledIn::DueNow));
        let Record::Used(now) = l.read(&s, slot).unwrap() else {
            panic!("freed")
        };
        assert_eq!((now.body.as_slice(), now.at_ms), (&b"full"[..], 300));
        on_the_wire(&l, &s, slot);
        assert_eq!(fill("a", g2), Some(FilledIn::OnTheWire));
        let queued = Slot::new("a", 1, "w3", b"bare".to_vec(), 0).of_generation(Generation(3));
        assert_eq!(
            l.place(&s, Some(slot), queued, 0).unwrap(),
            Placed::Queued(slot)
        );
        assert_eq!(fill("a", Generation(3)), Some(FilledIn::Waiting));
        let Record::Used(now) = l.read(&s, slot).unwrap() else {
            panic!("freed")
        };
        assert_eq!(now.successor.map(|q| q.body).as_deref(), Some("full"));
    }

    /// A retry waiting out its backoff takes the fuller body but keeps its time: the result
    /// does not bring a failed endpoint's next attempt forward.
    #[test]
    fn filling_in_a_retry_keeps_its_backoff() {
        let (s, l) = ledger(4);
        let retry = Slot {
            at_ms: 1_000,
            attempts: 1,
            ..Slot::new("a", 1, "w", b"bare".to_vec(), 0)
        };
        let slot = l.place(&s, None, retry, 0).unwrap().slot();
        let event = EventFor {
            endpoint: endpoint_key("a"),
            notification: 1,
            generation: Generation::FIRST,
        };
        let filled = l.fill_in(&s, slot, event, |_| Some(b"full".to_vec()), 300);
        assert_eq!(filled.unwrap(), Some(FilledIn::Waiting));
        let now = used(&l, &s, slot);
        assert_eq!((now.body.as_slice(), now.at_ms), (&b"full"[..], 1_000));
    }

    #[test]
    fn a_newer_event_replaces_a_waiting_one_for_the_same_pair() {
        let (s, l) = ledger(4);
        let first = l
            .place(&s, None, Slot::new("a", 1, "old", b"old".to_vec(), 0), 0)
            .unwrap();
        let second = l
            .place(
                &s,
                Some(first.slot()),
                Slot::new("a", 1, "new", b"new".to_vec(), 1),
                2,
            )
            .unwrap();
        assert_eq!(second, Placed::Replaced(first.slot()));
        assert_eq!(used(&l, &s, first.slot()).webhook_id, "new");
        assert_eq!(used(&l, &s, first.slot()).body, b"new");
    }

    #[test]
    fn a_newer_event_queues_behind_an_attempt_on_the_wire() {
        let (s, l) = ledger(4);
        let first = l
            .place(&s, None, Slot::new("a", 1, "old", b"old".to_vec(), 0), 0)
            .unwrap();
        on_the_wire(&l, &s, first.slot());
        let second = l
            .place(
                &s,
                Some(first.slot()),
                Slot::new("a", 1, "new", b"new".to_vec(), 1),
                2,
            )
            .unwrap();
        assert_eq!(second, Placed::Queued(first.slot()));
        let slot = used(&l, &s, first.slot());
        assert_eq!(slot.webhook_id, "old");
        assert_eq!(
            slot.successor,
            Some(Successor {
                webhook_id: "new".into(),
                body: "new".into(),
                generation: Generation::FIRST,
                at_ms: 1,
                taken_in_ms: Some(1),
            })
        );
        assert_eq!(slot.body, b"old");
        // A third event takes the queued one's place: that one never goes out, and says so.
        let third = l
            .place(
                &s,
                Some(first.slot()),
                Slot::new("a", 1, "newest", b"newest".to_vec(), 3),
                4,
            )
            .unwrap();
        assert_eq!(third, Placed::Requeued(first.slot()));
        let successor = used(&l, &s, first.slot()).successor.unwrap();
        assert_eq!(successor.webhook_id, "newest");
    }

    #[test]
    fn an_earlier_generation_never_takes_the_place_of_a_later_one() {
        let (s, l) = ledger(4);
        let event =
            |id: &str, g: u32| Slot::new("a", 1, id, id.into(), 0).of_generation(Generation(g));
        let first = l.place(&s, None, event("third", 3), 0).unwrap();
        // Waiting: the earlier event, placed last, is dropped.
        let late = l
            .place(&s, Some(first.slot()), event("second", 2), 1)
            .unwrap();
        assert_eq!(late, Placed::Outdated(first.slot()));
        assert_eq!(used(&l, &s, first.slot()).webhook_id, "third");
        // On the wire: nor does it queue behind a later event, or replace a later successor.
        on_the_wire(&l, &s, first.slot());
        let behind = l
            .place(&s, Some(first.slot()), event("second", 2), 2)
            .unwrap();
        assert_eq!(behind, Placed::Outdated(first.slot()));
        let next = l
            .place(&s, Some(first.slot()), event("fifth", 5), 3)
            .unwrap();
        assert_eq!(next, Placed::Queued(first.slot()));
        let over = l
            .place(&s, Some(first.slot()), event("fourth", 4), 4)
            .unwrap();
        assert_eq!(over, Placed::Outdated(first.slot()));
        let successor = used(&l, &s, first.slot()).successor.unwrap();
        assert_eq!(
            (successor.webhook_id.as_str(), successor.generation),
            ("fifth", Generation(5))
        );
    }

    /// Taking back an event: one that waits leaves the ledger; one on the wire is marked, once;
    /// one that waits ahead of a newer event queued behind it (its attempt was given back
    /// unsent) gives that event its slot, due as it was; what `which` does not pick is left.
    #[test]
    fn withdraw_takes_back_only_what_has_not_gone_out_and_keeps_what_is_queued_behind() {
        let (s, l) = ledger(8);
        let event =
            |id: &str, g: u32| Slot::new("a", 1, id, id.into(), 5).of_generation(Generation(g));
        let first = |s: &Slot| s.generation == Generation(1);
        // Waiting: freed.
        let x = l.place(&s, None, event("one", 1), 0).unwrap().slot();
        assert_eq!(l.withdraw(&s, x, |_| false).unwrap(), None);
        assert!(matches!(l.read(&s, x).unwrap(), Record::Used(_)));
        let taken = l.withdraw(&s, x, first).unwrap();
        assert_eq!(taken, Some(Withdrawn::Freed("one".into())));
        assert_eq!(l.read(&s, x).unwrap(), Record::Free);
        // On the wire: marked superseded, not freed; a second take-back writes nothing.
        let x = l.place(&s, None, event("one", 1), 1).unwrap().slot();
        on_the_wire(&l, &s, x);
        assert_eq!(l.withdraw(&s, x, first).unwrap(), None);
        let marked = used(&l, &s, x);
        assert!(marked.superseded && marked.state == State::InFlight);
        let (_, cas) = s.get(&meta_key(x)).unwrap().unwrap();
        assert_eq!(l.withdraw(&s, x, first).unwrap(), None);
        assert_eq!(s.get(&meta_key(x)).unwrap().unwrap().1, cas);
        // On the wire with a newer event queued behind it: left as it is.
        let y = l.place(&s, None, event("two", 1), 2).unwrap().slot();
        on_the_wire(&l, &s, y);
        let queued = l.place(&s, Some(y), event("three", 3), 3).unwrap();
        assert_eq!(queued, Placed::Queued(y));
        let before = used(&l, &s, y);
        assert_eq!(l.withdraw(&s, y, first).unwrap(), None);
        assert_eq!(used(&l, &s, y), before);
        // Given back unsent (waiting again), the event queued behind it: that one takes the
        // slot, rather than go out after the one taken back.
        given_back(&l, &s, y);
        let taken = l.withdraw(&s, y, first).unwrap();
        assert_eq!(taken, Some(Withdrawn::Replaced("two".into())));
        let now = used(&l, &s, y);
        assert_eq!(
            (now.webhook_id.as_str(), now.body.as_slice(), now.generation),
            ("three", &b"three"[..], Generation(3))
        );
        assert!(now.is_due(5) && now.successor.is_none() && now.attempts == 0);
    }

    /// A queued event that takes the slot keeps when it was taken in (for
    /// `delivery_delay_ms`), whatever its due time: a SUCCESS waiting for its result is due
    /// later than it was taken in.
    #[test]
    fn a_queued_event_taking_the_slot_keeps_when_it_was_taken_in() {
        let (s, l) = ledger(8);
        let x = l
            .place(&s, None, Slot::new("a", 1, "one", b"1".to_vec(), 5), 0)
            .unwrap()
            .slot();
        on_the_wire(&l, &s, x);
        let mut two = Slot::new("a", 1, "two", b"2".to_vec(), 7).of_generation(Generation(2));
        two.at_ms = 9;
        assert_eq!(l.place(&s, Some(x), two, 1).unwrap(), Placed::Queued(x));
        given_back(&l, &s, x);
        let first = |s: &Slot| s.generation == Generation::FIRST;
        let taken = l.withdraw(&s, x, first).unwrap();
        assert_eq!(taken, Some(Withdrawn::Replaced("one".into())));
        let now = used(&l, &s, x);
        assert_eq!(
            (now.webhook_id.as_str(), now.at_ms, now.taken_in_ms),
            ("two", 9, Some(7))
        );
    }

    #[test]
    fn a_slot_reused_by_another_pair_is_not_overwritten() {
        let (s, l) = ledger(4);
        let first = l
            .place(&s, None, Slot::new("a", 1, "w1", b"1".to_vec(), 0), 0)
            .unwrap();
        let other = l
            .place(
                &s,
                Some(first.slot()),
                Slot::new("b", 1, "w2", b"2".to_vec(), 0),
                0,
            )
            .unwrap();
        assert_ne!(other.slot(), first.slot());
        assert_eq!(used(&l, &s, first.slot()).webhook_id, "w1");
    }

    #[test]
    fn scan_windows_sweep_the_whole_ledger_and_wrap() {
        let (s, mut l) = ledger(10);
        let windows: Vec<_> = (0..4).map(|_| l.next_scan_window(&s, 4).unwrap()).collect();
        assert_eq!(windows, vec![0..4, 4..8, 8..10, 0..4]);
    }

    /// The mark is shared data: one above what any configuration may have is a bad write,
    /// read as the most a configuration may have. Taken as it was, a mark near `u32::MAX` had
    /// the sweeps go through four billion empty slots before they came back to the real ones.
    #[test]
    fn a_mark_above_any_ledger_is_read_as_the_largest() {
        let (s, l) = ledger(10);
        s.set(HIGH_WATER_KEY, u32::MAX.to_string().as_bytes(), None)
            .unwrap();
        let l = l.sweeping_high_water(&s);
        assert_eq!(l.swept(), MAX_PENDING_LIMIT);
        // Read afresh when a window finds the cursor past this ledger's end, too.
        let (s, mut l) = ledger(10);
        s.set(SCAN_KEY, b"20", None).unwrap();
        s.set(HIGH_WATER_KEY, u32::MAX.to_string().as_bytes(), None)
            .unwrap();
        assert_eq!(l.next_scan_window(&s, 4).unwrap(), 20..24);
        assert_eq!(l.swept(), MAX_PENDING_LIMIT);
    }

    /// And the cursor is shared data: a window that ends past the mark ends at it and wraps,
    /// as any last window does (near `u32::MAX` it overflowed, a panic in a debug build).
    #[test]
    fn a_window_past_the_mark_ends_there_and_wraps() {
        let (s, l) = ledger(10);
        s.set(
            SCAN_KEY,
            (MAX_PENDING_LIMIT - 2).to_string().as_bytes(),
            None,
        )
        .unwrap();
        s.set(
            HIGH_WATER_KEY,
            MAX_PENDING_LIMIT.to_string().as_bytes(),
            None,
        )
        .unwrap();
        let mut l = l.sweeping_high_water(&s);
        let windows: Vec<_> = (0..2).map(|_| l.next_scan_window(&s, 4).unwrap()).collect();
        assert_eq!(
            windows,
            vec![MAX_PENDING_LIMIT - 2..MAX_PENDING_LIMIT, 0..4]
        );
    }

    /// A waiting delivery goes out from its time on; one on the wire never; one held back
    /// for a lease goes out early only to a sender that has one (and only while it waits).
    #[test]
    fn a_delivery_is_sent_when_due_or_held_for_a_lease_that_freed() {
        let waiting = Slot {
            at_ms: 100,
            ..Slot::new("a", 1, "w", Vec::new(), 0)
        };
        assert!(!waiting.is_due(99) && waiting.is_due(100) && waiting.is_due(101));
        assert!(waiting.is_sendable(100, false));
        assert!(!waiting.is_sendable(99, false));
        assert!(
            !waiting.is_sendable(99, true),
            "not held: waits for its time"
        );
        let held = Slot {
            held: true,
            ..waiting.clone()
        };
        assert!(held.is_sendable(99, true));
        assert!(!held.is_sendable(99, false), "no lease freed");
        let on_the_wire = Slot {
            state: State::InFlight,
            ..held
        };
        assert!(!on_the_wire.is_due(101));
        assert!(!on_the_wire.is_sendable(101, true));
    }

    /// The log line of a placement says where the event went.
    #[test]
    fn a_placement_s_log_line_names_its_slot() {
        for (placed, line) in [
            (Placed::New(3), "new in slot 3"),
            (Placed::Replaced(4), "replaced the waiting event in slot 4"),
            (Placed::Queued(5), "queued behind the attempt in slot 5"),
            (
                Placed::Requeued(6),
                "replaced the event queued behind the attempt in slot 6",
            ),
            (Placed::Outdated(7), "dropped for the later event in slot 7"),
        ] {
            assert_eq!(placed.to_string(), line);
        }
    }

    /// A cursor at or past the end of every ledger the mark knows (a bad write, or a mark
    /// unreadable) sends the sweep back to the first slot: an empty window instead, left
    /// there, would sweep nothing again and again.
    #[test]
    fn a_cursor_past_every_ledger_s_end_starts_the_sweep_over() {
        for cursor in ["10", "50"] {
            let (s, l) = ledger(10);
            let mut l = l.sweeping_high_water(&s);
            s.set(SCAN_KEY, cursor.as_bytes(), None).unwrap();
            let windows: Vec<_> = (0..2).map(|_| l.next_scan_window(&s, 4).unwrap()).collect();
            assert_eq!(windows, vec![0..4, 4..8], "cursor at {cursor}");
        }
    }

    #[test]
    fn history_is_bounded_and_keeps_the_first_attempt() {
        let mut slot = Slot::new("a", 1, "w", Vec::new(), 0);
        for t in 0..50 {
            slot.push_history(AttemptRecord {
                at_ms: t,
                outcome: "HTTP 503".into(),
                duration_ms: 1,
            });
        }
        assert_eq!(slot.history.len(), MAX_HISTORY);
        assert_eq!(slot.history[0].at_ms, 0);
        assert_eq!(slot.history.last().unwrap().at_ms, 49);
    }

    /// The stored format, as this format (`shared_name!`) writes and reads it.
    #[test]
    fn records_keep_their_stored_format() {
        let fresh = Record::Used(Slot::new("crm", 42, "w1", b"{\"id\":42}".to_vec(), 5));
        let stored = "{\"s\":\"w\",\"at\":5,\"ep\":\"crm\",\"n\":42,\"id\":\"w1\",\"a\":0,\"g\":1,\"ti\":5}\n{\"id\":42}";
        assert_eq!(String::from_utf8(fresh.encode()).unwrap(), stored);
        assert_eq!(Record::decode(Some(stored.as_bytes())), fresh);
        // Without a generation: a record of the builds before the format prefix, unreadable.
        let earlier = stored.replace(",\"g\":1", "");
        assert_eq!(Record::decode(Some(earlier.as_bytes())), Record::Unreadable);

        // The body follows the record byte for byte, newlines and all.
        let body = b"{\n  \"id\": 7\n}".to_vec();
        let mut slot = Slot::new("ops.v2", 7, "msg_\"7\"", body, 1_700_000_000_000);
        slot.state = State::InFlight;
        slot.attempts = 3;
        for t in [1, 2] {
            slot.push_history(AttemptRecord {
                at_ms: t,
                outcome: "HTTP 503 \u{e9}\n".into(),
                duration_ms: 12,
            });
        }
        slot.successor = Some(Successor {
            webhook_id: "w2".into(),
            body: "{\"id\":7,\"note\":\"a\\tb\"}".into(),
            generation: Generation(3),
            at_ms: 1_800_000_001_000,
            taken_in_ms: Some(1_800_000_000_000),
        });
        slot.held = true;
        slot.window_from_ms = Some(1);
        slot.extended_ms = 1_795_000;
        slot.waiting_since_ms = Some(1_700_000_000_500);
        slot.paused_ms = 1_000;
        slot.superseded = true;
        let full = Record::Used(slot);
        let json = r#"{"s":"f","at":1700000000000,"c":1,"x":1795000,"w":1700000000500,"pz":1000,"ep":"ops.v2","n":7,"id":"msg_\"7\"","a":3,"h":[{"t":1,"o":"HTTP 503 é\n","d":12},{"t":2,"o":"HTTP 503 é\n","d":12}],"nx":{"id":"w2","b":"{\"id\":7,\"note\":\"a\\tb\"}","g":3,"at":1800000001000,"ti":1800000000000},"hd":true,"g":1,"sp":true,"ti":1700000000000}"#;
        let stored = format!("{json}\n{{\n  \"id\": 7\n}}");
        assert_eq!(String::from_utf8(full.encode()).unwrap(), stored);
        assert_eq!(Record::decode(Some(stored.as_bytes())), full);
        // A queued event without a due time (written so when it has none) is due when promoted.
        let unwaited_stored = stored.replace(",\"at\":1800000001000", "");
        let Record::Used(unwaited) = Record::decode(Some(unwaited_stored.as_bytes())) else {
            panic!("unreadable")
        };
        let written = Record::Used(unwaited.clone()).encode();
        assert_eq!(String::from_utf8(written).unwrap(), unwaited_stored);
        assert_eq!(unwaited.successor.map(|q| q.at_ms), Some(0));
        // Before the retry window: not yet open, not extended.
        let earlier = stored.replace(",\"c\":1,\"x\":1795000,\"w\":1700000000500,\"pz\":1000", "");
        let Record::Used(read) = Record::decode(Some(earlier.as_bytes())) else {
            panic!("unreadable");
        };
        assert_eq!(
            (
                read.window_from_ms,
                read.extended_ms,
                read.waiting_since_ms,
                read.paused_ms
            ),
            (None, 0, None, 0)
        );

        assert_eq!(Record::Free.encode(), b"-");
        // Unknown keys are ignored; an unreadable record is left alone.
        let extra = r#"{"s":"w","at":5,"ep":"crm","n":42,"id":"w1","g":1,"a":0,"zz":[1],"ti":5}"#;
        let extra = format!("{extra}\n{{\"id\":42}}");
        assert_eq!(Record::decode(Some(extra.as_bytes())), fresh);
        // Without `ti`, as a build before it wrote it (or wrote back what it read): read, but
        // when it was taken in is not known, nor made up, for the delivery or its successor.
        let older = extra.replace(",\"ti\":5", "");
        let Record::Used(unmeasured) = Record::decode(Some(older.as_bytes())) else {
            panic!("unreadable");
        };
        assert_eq!(unmeasured.taken_in_ms, None);
        let older = r#"{"s":"f","at":5,"ep":"crm","n":42,"id":"w1","a":1,"nx":{"id":"w2","b":"{}","g":2},"g":1}"#;
        let Record::Used(older) = Record::decode(Some(format!("{older}\n{{}}").as_bytes())) else {
            panic!("unreadable");
        };
        assert_eq!(older.successor.map(|q| q.taken_in_ms), Some(None));
        // Without the body separator (the format before bodies moved into the record).
        let no_body = r#"{"s":"w","at":5,"ep":"crm","n":42,"id":"w1","g":1,"a":0}"#;
        assert_eq!(Record::decode(Some(no_body.as_bytes())), Record::Unreadable);
        for bad in [
            r#"{"s":"x","at":5,"ep":"crm","n":42,"id":"w1","g":1,"a":0}"#,
            r#"{"s":"w","at":5,"ep":"crm","n":42,"id":"w1","g":1}"#,
            r#"{"s":"w","at":-5,"ep":"crm","n":42,"id":"w1","g":1,"a":0}"#,
            r#"{"s":"w","at":5,"ep":"crm","n":42,"id":"w1","g":1,"a":4294967296}"#,
            r#"{"s":"w","at":5,"ep":"crm","n":42,"id":"w1","g":1,"a":0,"h":[{"t":1}]}"#,
            r#"{"s":"w","at":5,"ep":"crm","n":42,"id":"w1","g":1,"a":0,"hd":1}"#,
            r#"["w"]"#,
            "{",
        ] {
            let bad = format!("{bad}\n{{}}");
            assert_eq!(
                Record::decode(Some(bad.as_bytes())),
                Record::Unreadable,
                "{bad}"
            );
        }
    }

    /// Strings of every kind a record may carry: quotes, backslashes, every control
    /// character, DEL, non-ASCII up to the last code point, empty and long.
    fn any_string(rng: &mut crate::json::tests::Rng) -> String {
        const POOL: &[char] = &[
            'a',
            'Z',
            '0',
            ' ',
            '"',
            '\\',
            '/',
            '\n',
            '\r',
            '\t',
            '\u{0}',
            '\u{1}',
            '\u{8}',
            '\u{c}',
            '\u{1f}',
            '\u{7f}',
            'é',
            '\u{2028}',
            '\u{fffd}',
            '\u{ffff}',
            '😀',
            '\u{10ffff}',
            '{',
            '}',
            '[',
            ']',
            ',',
            ':',
            'u',
            '-',
        ];
        let len = match rng.below(40) {
            0..=3 => 0,
            4 => 1_000 + rng.below(4_000),
            _ => rng.below(24),
        };
        (0..len).map(|_| POOL[rng.below(POOL.len())]).collect()
    }

    fn any_u64(rng: &mut crate::json::tests::Rng) -> u64 {
        match rng.below(5) {
            0 => 0,
            1 => u64::MAX - rng.below(3) as u64,
            2 => rng.below(10) as u64,
            _ => (rng.below(usize::MAX) as u64) << rng.below(20),
        }
    }

    fn any_slot(rng: &mut crate::json::tests::Rng) -> Slot {
        let mut u = || any_u64(rng);
        let (at_ms, window, extended, since, paused, n) = (u(), u(), u(), u(), u(), u());
        let maybe = |rng: &mut crate::json::tests::Rng, v: u64| (rng.below(2) == 0).then_some(v);
        let window_from_ms = maybe(rng, window);
        let waiting_since_ms = maybe(rng, since);
        let history = (0..rng.below(MAX_HISTORY + 1))
            .map(|_| AttemptRecord {
                at_ms: any_u64(rng),
                outcome: any_string(rng),
                duration_ms: any_u64(rng),
            })
            .collect();
        let successor = (rng.below(2) == 0).then(|| Successor {
            webhook_id: any_string(rng),
            body: any_string(rng),
            generation: Generation(any_u64(rng) as u32),
            at_ms: any_u64(rng),
            taken_in_ms: (rng.below(2) == 0).then(|| any_u64(rng)),
        });
        let mut body = any_string(rng).into_bytes();
        if rng.below(4) == 0 {
            // A body is bytes: not necessarily UTF-8, and may hold the separator.
            body.extend([0xff, 0x00, b'\n', 0xc3]);
        }
        Slot {
            state: if rng.below(2) == 0 {
                State::Waiting
            } else {
                State::InFlight
            },
            at_ms,
            window_from_ms,
            extended_ms: extended,
            waiting_since_ms,
            paused_ms: paused,
            endpoint: any_string(rng),
            notification: n,
            webhook_id: any_string(rng),
            attempts: any_u64(rng) as u32,
            history,
            successor,
            held: rng.below(2) == 0,
            generation: Generation(any_u64(rng) as u32),
            superseded: rng.below(2) == 0,
            taken_in_ms: (rng.below(2) == 0).then(|| any_u64(rng)),
            body,
        }
    }

    /// Every field of every record comes back as it was written, and a record cut short
    /// anywhere before its body, or with a byte of it changed, is never read as another
    /// valid slot (nor does reading it panic).
    #[test]
    fn any_record_reads_back_exactly_and_a_damaged_one_is_unreadable() {
        let mut rng = crate::json::tests::Rng(0x5eed_1ed6_e400_0001);
        for round in 0..1_000 {
            let slot = any_slot(&mut rng);
            let record = Record::Used(slot.clone());
            let bytes = record.encode();
            assert_eq!(Record::decode(Some(&bytes)), record, "round {round}");
            let head = bytes.iter().position(|b| *b == BODY_SEPARATOR).unwrap();
            assert!(!bytes[..head].contains(&b'\n'));
            // Cut anywhere within the record: unreadable, never a slot.
            for cut in (1..=head).step_by(1 + head / 64) {
                assert_eq!(
                    Record::decode(Some(&bytes[..cut])),
                    Record::Unreadable,
                    "round {round}, cut at {cut}"
                );
            }
            // A damaged byte: unreadable, or a record that differs (never a panic).
            for _ in 0..8 {
                let mut bad = bytes.clone();
                let at = rng.below(head + 1);
                const BYTES: &[u8] = b"\"\\{}[],:0x\n\x00\xff";
                bad[at] = BYTES[rng.below(BYTES.len())];
                let _ = Record::decode(Some(&bad));
            }
        }
        assert_eq!(Record::decode(Some(b"-")), Record::Free);
        assert_eq!(Record::decode(None), Record::Free);
    }

    /// Two workers read one slot free at once: the one whose write comes second must find
    /// it taken (by CAS) and probe on, never write over the other's delivery.
    #[test]
    fn a_free_slot_another_worker_took_meanwhile_is_not_overwritten() {
        let (inner, l) = ledger(8);
        let fresh = || Slot::new("crm", 1, "ours", b"1".to_vec(), 0);
        // Where the first probe lands, as an untroubled placement shows.
        let first = l.place(&inner, None, fresh(), 3).unwrap().slot();
        let (store, l) = ledger(8);
        let theirs = Slot::new("erp", 9, "theirs", b"9".to_vec(), 0);
        let s = crate::store::Meanwhile {
            store,
            then: Some((Some(meta_key(first)), Record::Used(theirs).encode())).into(),
        };
        let ours = l.place(&s, None, fresh(), 3).unwrap().slot();
        assert_ne!(ours, first);
        assert_eq!(used(&l, &s.store, first).webhook_id, "theirs");
        assert_eq!(used(&l, &s.store, ours).webhook_id, "ours");
    }

    /// An event queued behind an attempt, held there for its result, stops waiting once the
    /// result fills it in: promoted when the attempt ends, it is due at once.
    #[test]
    fn filling_in_a_queued_event_ends_its_wait_for_the_result() {
        let (s, l) = ledger(4);
        let first = l
            .place(&s, None, Slot::new("a", 1, "w1", b"bare".to_vec(), 0), 0)
            .unwrap()
            .slot();
        on_the_wire(&l, &s, first);
        let waiting = Slot {
            at_ms: 5_000,
            ..Slot::new("a", 1, "w2", b"bare".to_vec(), 0).of_generation(Generation(2))
        };
        assert_eq!(
            l.place(&s, Some(first), waiting, 0).unwrap(),
            Placed::Queued(first)
        );
        let event = EventFor {
            endpoint: endpoint_key("a"),
            notification: 1,
            generation: Generation(2),
        };
        let filled = l.fill_in(&s, first, event, |_| Some(b"full".to_vec()), 300);
        assert_eq!(filled.unwrap(), Some(FilledIn::Waiting));
        let queued = used(&l, &s, first).successor.unwrap();
        assert_eq!((queued.body.as_str(), queued.at_ms), ("full", 300));
    }
}
