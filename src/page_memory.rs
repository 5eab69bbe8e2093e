//! The last page this VM took in for each of a few requests, and where its rows lie. A poll
//! whose bytes moved (OsmoX's `total` grew, a new notification came in at the top and
//! pushed the others down, a row changed state) mostly repeats the rows of the page before
//! it: a row whose bytes come again, wherever on the page, is passed over unread
//! ([`crate::json::parse_rows`]). Reading every row again was most of such a poll's cost.
//!
//! Only rows whose notification this VM took in, with a view whole enough to be recognised
//! on sight, are remembered, only once every notification of the page was recorded, and
//! passed over only while `KnownEvents` still holds the observation: passing one over then
//! answers exactly what `KnownEvents` would for the row read again.

use std::cell::Cell;
use std::collections::VecDeque;

use crate::extract::WatchKind;
use crate::json::{SeenRow, SeenRows};

/// Pages kept, one per request.
pub const PAGES: usize = 4;

/// Larger pages are not kept: each VM holds at most `PAGES` times this.
pub const MAX_PAGE_BYTES: usize = 256 * 1024;

/// A row is looked up by its first bytes (in OsmoX's REST answers, its id and the key after
/// it; in GraphQL, whatever the query selects first), then compared whole. Shorter rows are
/// not remembered: they cost little to read.
const LEAD: usize = 16;

/// Rows sharing a lead compared at most per look-up, besides the row after the last one
/// found. Rows can share theirs (a GraphQL query that selects `channelType` first gives every
/// row of channel 1 the same first 16 bytes), and comparing each with all of them cost the
/// square of their number: a row not found in reach is read, which answers the same.
const MAX_CANDIDATES: usize = 8;

#[derive(Debug)]
pub struct Page {
    key: u64,
    body: Vec<u8>,
    rows: Vec<SeenRow>,
    /// `rows`' indices by their first bytes, sorted.
    by_lead: Vec<(u128, usize)>,
}

impl Page {
    /// The rows of this page `knows` (by their observation's identity) as a [`SeenRows`].
    pub fn recall<K: Fn(u64) -> bool>(&self, knows: K) -> Recall<'_, K> {
        Recall {
            page: self,
            knows,
            next: Cell::new(0),
        }
    }

    /// The row of this page at `depth` whose bytes `src` repeats from `start` on.
    #[cfg(test)]
    fn find(&self, src: &[u8], start: usize, depth: usize) -> Option<SeenRow> {
        self.find_after(src, start, depth, usize::MAX)
            .map(|(_, row)| row)
    }

    /// `find`, trying the row at `next` first (a repeated page repeats its rows in order),
    /// then up to `MAX_CANDIDATES` rows of the same lead; with the index of the row found.
    fn find_after(
        &self,
        src: &[u8],
        start: usize,
        depth: usize,
        next: usize,
    ) -> Option<(usize, SeenRow)> {
        let lead = lead(src.get(start..)?)?;
        let repeats = |i: usize| {
            let r = self.rows.get(i)?;
            let old = self.body.get(r.start..r.end)?;
            let new = src.get(start..start + old.len())?;
            (r.depth == depth && same_bytes(old, new)).then_some((i, r))
        };
        let (i, r) = repeats(next).or_else(|| {
            let first = self.by_lead.partition_point(|(l, _)| *l < lead);
            self.by_lead
                .get(first..)?
                .iter()
                .take_while(|(l, _)| *l == lead)
                .take(MAX_CANDIDATES)
                .find_map(|(_, i)| repeats(*i))
        })?;
        let row = SeenRow {
            start,
            end: start + (r.end - r.start),
            ..*r
        };
        Some((i, row))
    }
}

/// A page's rows whose observations the VM still holds: one it has forgotten since
/// (`KnownEvents` is bounded) is read again, and asks the dedupe memory, as it would have
/// without the page.
pub struct Recall<'p, K> {
    page: &'p Page,
    knows: K,
    /// The row after the last one found.
    next: Cell<usize>,
}

impl<K: Fn(u64) -> bool> SeenRows for Recall<'_, K> {
    fn find(&self, src: &[u8], start: usize, depth: usize) -> Option<SeenRow> {
        let (i, row) = self.page.find_after(src, start, depth, self.next.get())?;
        self.next.set(i + 1);
        Some(row).filter(|r| (self.knows)(r.identity))
    }
}

#[derive(Debug, Default)]
pub struct PageMemory {
    /// Oldest first: a request's page goes to the back each time one is kept, and the
    /// front one makes room for a new request's.
    pages: VecDeque<Page>,
}

impl PageMemory {
    pub fn new() -> Self {
        PageMemory::default()
    }

    /// Whose pages are compared: the same request (path with its query string, and body)
    /// read the same way. Rows are read as archive rows or not by the query, so that is part
    /// of it; so is the kind, though REST and GraphQL read a row alike.
    pub fn key(kind: WatchKind, archived: bool, path: &str, request: &[u8]) -> u64 {
        let what = [kind == WatchKind::Graphql, archived].map(u8::from);
        let path = path.as_bytes();
        // The path's length first, so that no path and body pair reads as another.
        let len = (path.len() as u64).to_le_bytes();
        crate::events::RecentResponses::hash(&what, &[&len[..], path, request])
    }

    /// The last page remembered under `key`.
    pub fn page(&self, key: u64) -> Option<&Page> {
        self.pages.iter().find(|p| p.key == key)
    }

    /// Keep `body` as `key`'s last page, with `rows` to pass over when a later page repeats
    /// them. A page with no row to keep, or too large to keep, still replaces what `key`
    /// had: the next page is likelier to repeat it than the one before. The pages kept are
    /// those of the `PAGES` requests taken in last (README).
    pub fn remember(&mut self, key: u64, mut body: Vec<u8>, mut rows: Vec<SeenRow>) {
        if let Some(at) = self.pages.iter().position(|p| p.key == key) {
            self.pages.remove(at);
        }
        if body.len() > MAX_PAGE_BYTES {
            return;
        }
        // Not only left out of the index: held, one would be found as the row after another.
        rows.retain(|r| body.get(r.start..r.end).and_then(lead).is_some());
        if rows.is_empty() {
            return;
        }
        let mut by_lead: Vec<(u128, usize)> = Vec::with_capacity(rows.len());
        by_lead.extend(
            rows.iter()
                .enumerate()
                .filter_map(|(i, r)| Some((lead(body.get(r.start..r.end)?)?, i))),
        );
        // Kept for as long as the request polls: no room beyond what is held (`rows` was
        // collected, growing by doubling).
        body.shrink_to_fit();
        rows.shrink_to_fit();
        by_lead.shrink_to_fit();
        crate::heapsort::sort(&mut by_lead);
        if self.pages.len() >= PAGES {
            self.pages.pop_front();
        }
        self.pages.push_back(Page {
            key,
            body,
            rows,
            by_lead,
        });
    }
}

/// The first `LEAD` bytes as one number: compared in one step, not by `memcmp`.
fn lead(bytes: &[u8]) -> Option<u128> {
    let lead: [u8; LEAD] = bytes.get(..LEAD)?.try_into().ok()?;
    Some(u128::from_le_bytes(lead))
}

/// Whether `a` and `b` (of equal length) hold the same bytes, eight at a time: in wasm a
/// byte loop (or `memcmp`, which is one there) costs a few instructions per byte.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let (x, y) = (a.chunks_exact(8), b.chunks_exact(8));
    let (x_rest, y_rest) = (x.remainder(), y.remainder());
    a.len() == b.len()
        && x.zip(y)
            .all(|(p, q)| u64::from_ne_bytes(chunk(p)) == u64::from_ne_bytes(chunk(q)))
        && x_rest == y_rest
}

fn chunk(bytes: &[u8]) -> [u8; 8] {
    bytes.try_into().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::KnownEvents;
    use crate::json::tests::Rng;
    use crate::json::SeenRows;

    /// `[{"i":N,"pad":"…"},…]` plus `tail`, and where each row lies.
    fn page(ids: &[u64], tail: &str) -> (Vec<u8>, Vec<SeenRow>) {
        page_of(ids, tail, |id| {
            format!("{{\"i\":{id},\"pad\":\"0123456789\"}}")
        })
    }

    /// The rows `row` writes for `ids` (objects of two members), plus `tail`.
    fn page_of(ids: &[u64], tail: &str, row: impl Fn(u64) -> String) -> (Vec<u8>, Vec<SeenRow>) {
        let mut body = String::from("[");
        let mut rows = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            if k > 0 {
                body.push(',');
            }
            let start = body.len();
            body.push_str(&row(*id));
            rows.push(SeenRow {
                start,
                end: body.len(),
                depth: 1,
                values: 3,
                id: *id,
                identity: *id,
            });
        }
        body.push(']');
        body.push_str(tail);
        (body.into_bytes(), rows)
    }

    fn remembered(ids: &[u64], tail: &str) -> PageMemory {
        let mut m = PageMemory::new();
        let (body, rows) = page(ids, tail);
        m.remember(1, body, rows);
        m
    }

    /// The rows of `body` the page under key 1 finds, asked where each row of `body` starts.
    fn found(m: &PageMemory, body: &[u8], rows: &[SeenRow]) -> Vec<SeenRow> {
        let Some(p) = m.page(1) else {
            return Vec::new();
        };
        rows.iter()
            .filter_map(|r| p.find(body, r.start, r.depth))
            .collect()
    }

    fn tags(rows: &[SeenRow]) -> Vec<u64> {
        rows.iter().map(|r| r.id).collect()
    }

    #[test]
    fn same_bytes_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..40u8).collect();
        for len in 0..=40 {
            for flip in 0..len {
                let a = &base[..len];
                let mut b = a.to_vec();
                assert!(same_bytes(a, &b));
                b[flip] ^= 1;
                assert!(!same_bytes(a, &b), "{len} {flip}");
            }
        }
        assert!(
            !same_bytes(&[0; 16], &[0; 8]),
            "lengths differ, the words compared alike"
        );
    }

    #[test]
    fn rows_are_found_wherever_their_bytes_come_again() {
        let m = remembered(&[10, 20, 30], r#","total":3"#);
        // A new row at the top pushed the others down; one changed; the total moved.
        let (body, rows) = page(&[40, 10, 21, 30], r#","total":4"#);
        let got = found(&m, &body, &rows);
        assert_eq!(tags(&got), [10, 30]);
        assert_eq!(got[0].start, rows[1].start);
        assert_eq!(got[1], rows[3]);
        assert!(m.page(2).is_none(), "another request's page");
        let mut two = remembered(&[10], "");
        two.remember(2, body.clone(), rows.clone());
        assert_eq!(
            tags(&found(&two, &body, &rows)),
            [10],
            "each request its own page"
        );
    }

    /// A row is found only whole, at the depth it had: one whose bytes the new page cuts
    /// short, or that sits deeper, is read.
    #[test]
    fn a_row_is_found_only_whole_and_at_its_depth() {
        let m = remembered(&[123456], "");
        let (body, rows) = page(&[123456], "");
        let p = m.page(1).unwrap();
        assert!(p.find(&body, rows[0].start, 1).is_some());
        assert!(p.find(&body, rows[0].start, 2).is_none());
        let cut = &body[..rows[0].end - 1];
        assert!(p.find(cut, rows[0].start, 1).is_none());
        let mut changed = body.clone();
        changed[rows[0].end - 3] = b'X';
        assert!(p.find(&changed, rows[0].start, 1).is_none());
        assert!(p.find(&body, rows[0].start + 1, 1).is_none());
    }

    /// Rows that share their first bytes are told apart by the rest.
    #[test]
    fn rows_with_the_same_lead_are_compared_whole() {
        let mut m = PageMemory::new();
        let body = br#"[{"same_lead_____":1},{"same_lead_____":2}]"#.to_vec();
        let rows = [(1, 21, 1), (22, 42, 2)].map(|(start, end, id)| SeenRow {
            start,
            end,
            depth: 1,
            values: 2,
            id,
            identity: id,
        });
        m.remember(1, body, rows.to_vec());
        let newer = br#"[{"same_lead_____":3},{"same_lead_____":2}]"#;
        let p = m.page(1).unwrap();
        assert_eq!(p.find(newer, 1, 1), None);
        assert_eq!(p.find(newer, 22, 1).map(|r| r.id), Some(2));
    }

    /// A review: rows that all share their lead were each compared with all the others,
    /// the square of their number. A page repeated in order finds each at once, as the row
    /// after the last found; out of order, only those within `MAX_CANDIDATES` of their lead's
    /// first are found (the rest are read).
    #[test]
    fn rows_sharing_a_lead_are_found_in_order_and_compared_a_few_at_a_time() {
        let row = |n: u64| format!(r#"{{"channelType":1,"n":{n}}}"#);
        let page_of = |order: &[u64]| page_of(order, "", row);
        let in_order: Vec<u64> = (0..100).collect();
        let (body, rows) = page_of(&in_order);
        let mut m = PageMemory::new();
        m.remember(1, body.clone(), rows.clone());
        let p = m.page(1).unwrap();
        let found = |body: &[u8], rows: &[SeenRow]| {
            let recall = p.recall(|_| true);
            let got: Vec<u64> = rows
                .iter()
                .filter_map(|r| SeenRows::find(&recall, body, r.start, r.depth))
                .map(|r| r.id)
                .collect();
            got
        };
        assert_eq!(found(&body, &rows), (0..100).collect::<Vec<u64>>());
        let reversed: Vec<u64> = (0..100).rev().collect();
        let (body, rows) = page_of(&reversed);
        let got = found(&body, &rows);
        assert!(!got.is_empty() && got.len() <= MAX_CANDIDATES, "{got:?}");
        assert!(got.iter().all(|id| *id < MAX_CANDIDATES as u64), "{got:?}");
    }

    #[test]
    fn a_page_without_rows_to_keep_or_too_large_forgets_the_last() {
        let (body, rows) = page(&[1], "");
        let mut m = remembered(&[1], "");
        m.remember(1, body.clone(), Vec::new());
        assert!(m.page(1).is_none());
        let mut m = remembered(&[1], "");
        let mut big = body.clone();
        big.resize(MAX_PAGE_BYTES + 1, b' ');
        m.remember(1, big, rows.clone());
        assert!(m.page(1).is_none());
        // Rows too short to look up are not kept; the page keeps the others.
        let long = r#"{"i":1,"pad":"0123456789"}"#;
        let body = format!(r#"[{{"a":1}},{long}]"#).into_bytes();
        let short = SeenRow {
            start: 1,
            end: 8,
            ..rows[0]
        };
        let whole = SeenRow {
            start: 9,
            end: 9 + long.len(),
            ..rows[0]
        };
        let mut m = PageMemory::new();
        m.remember(1, body.clone(), vec![short, whole]);
        let p = m.page(1).unwrap();
        assert_eq!(p.find(&body, 9, 1), Some(whole));
        assert_eq!(p.find(&body, 1, 1), None);
    }

    /// A review: a row too short to look up was left out of the index only, and so was still
    /// held, and found as the row after the last one found (`LEAD` says it is not kept).
    #[test]
    fn a_row_too_short_to_look_up_is_not_found_after_the_row_before_it() {
        let (long, short) = (r#"{"i":1,"pad":"0123456789"}"#, r#"{"a":1}"#);
        let body = format!("[{long},{short},{long}]").into_bytes();
        let at = |start: usize, len: usize, id: u64| SeenRow {
            start,
            end: start + len,
            depth: 1,
            values: 3,
            id,
            identity: id,
        };
        let rows = vec![
            at(1, long.len(), 1),
            at(2 + long.len(), short.len(), 2),
            at(3 + long.len() + short.len(), long.len(), 3),
        ];
        let mut m = PageMemory::new();
        m.remember(1, body.clone(), rows.clone());
        let p = m.page(1).unwrap();
        assert_eq!(p.rows.len(), 2, "the short row is held");
        let recall = p.recall(|_| true);
        let found: Vec<u64> = rows
            .iter()
            .filter_map(|r| SeenRows::find(&recall, &body, r.start, r.depth))
            .map(|r| r.id)
            .collect();
        assert_eq!(found, [1, 3]);
    }

    #[test]
    fn a_few_requests_are_kept_and_the_oldest_goes_first() {
        let mut m = PageMemory::new();
        let (body, rows) = page(&[1], "");
        for key in 0..PAGES as u64 + 2 {
            m.remember(key, body.clone(), rows.clone());
        }
        assert!(
            m.page(0).is_none() && m.page(1).is_none(),
            "the two oldest replaced"
        );
        for key in 2..PAGES as u64 + 2 {
            assert!(m.page(key).is_some(), "{key}");
        }
        // The same request replaces its own page, whatever its turn.
        let (newer, newer_rows) = page(&[2], "");
        m.remember(3, newer.clone(), newer_rows.clone());
        assert_eq!(m.pages.len(), PAGES);
        let p = m.page(3).unwrap();
        assert!(p.find(&newer, newer_rows[0].start, 1).is_some());
        assert!(
            p.find(&body, rows[0].start, 1).is_none(),
            "the page it replaced"
        );
    }

    /// README: the pages kept are those of the VM's four latest requests. A review found the
    /// first request ever kept evicted next, however often it was polled since (a dashboard
    /// polling every second lost its page to each fourth other request), and, after a page
    /// was dropped, the newest page evicted before older ones.
    #[test]
    fn the_pages_kept_are_those_of_the_latest_requests() {
        let (body, rows) = page(&[1], "");
        let keep = |m: &mut PageMemory, key: u64| m.remember(key, body.clone(), rows.clone());
        let kept = |m: &PageMemory| {
            let mut keys: Vec<u64> = (0..16).filter(|k| m.page(*k).is_some()).collect();
            keys.sort_unstable();
            keys
        };
        let mut m = PageMemory::new();
        for key in 0..PAGES as u64 {
            keep(&mut m, key);
        }
        // Request 0 polls again: it is now the latest, and 1 the one polled longest ago.
        keep(&mut m, 0);
        keep(&mut m, 4);
        assert_eq!(kept(&m), [0, 2, 3, 4]);
        keep(&mut m, 5);
        assert_eq!(kept(&m), [0, 3, 4, 5]);
        // A request whose page has no row to keep drops it; the others keep their order.
        m.remember(0, body.clone(), Vec::new());
        assert_eq!(kept(&m), [3, 4, 5]);
        keep(&mut m, 6);
        keep(&mut m, 7);
        assert_eq!(
            kept(&m),
            [4, 5, 6, 7],
            "3, the oldest, went; not 7's elders"
        );
        keep(&mut m, 8);
        assert_eq!(kept(&m), [5, 6, 7, 8]);
    }

    /// A review: a page's rows come collected (a `Vec` grown by doubling), and its index was
    /// collected the same way, so a page held up to twice the index README counts (on wasm32
    /// 64 bytes a row: about 150 KB more for a page of 256 KiB of the shortest whole rows,
    /// kept for as long as its request polls). What is kept holds what it uses.
    #[test]
    fn a_kept_page_holds_no_room_beyond_its_rows() {
        let ids: Vec<u64> = (0..100).collect();
        let (body, rows) = page(&ids, "");
        let mut grown = Vec::with_capacity(2 * rows.len());
        grown.extend(rows);
        let mut spare = Vec::with_capacity(2 * body.len());
        spare.extend(body);
        let mut m = PageMemory::new();
        m.remember(1, spare, grown);
        let p = m.page(1).unwrap();
        assert_eq!((p.rows.capacity(), p.rows.len()), (100, 100));
        assert_eq!((p.by_lead.capacity(), p.by_lead.len()), (100, 100));
        assert_eq!(p.body.capacity(), p.body.len());
    }

    /// A page of exactly the largest size is kept.
    #[test]
    fn a_page_of_the_largest_size_is_kept() {
        let (mut body, rows) = page(&[1], "");
        body.resize(MAX_PAGE_BYTES, b' ');
        let mut m = PageMemory::new();
        m.remember(1, body, rows);
        assert!(m.page(1).is_some());
    }

    /// What a VM takes in from a page: the views it does not know (their bodies, as sent),
    /// and how many it passes over.
    type Taken = (Vec<String>, usize);

    fn take(found: &crate::extract::Extracted<'_>, known: &mut KnownEvents) -> Taken {
        let fresh: Vec<_> = found
            .notifications
            .iter()
            .filter(|n| !known.knows(n))
            .collect();
        let passed = found.notifications.len() - fresh.len() + found.seen_rows();
        let bodies = fresh
            .iter()
            .map(|n| n.webhook_body().into_owned())
            .collect();
        known.learn(fresh);
        (bodies, passed)
    }

    /// Pages of a moving list (states change, rows shift, `total` moves, rows come twice,
    /// views lack fields, payloads hold arrays of objects, REST envelopes and GraphQL, two
    /// requests, pages past the collector's look-through), read by a VM with a page memory
    /// and by one without, each with the same small or large `KnownEvents`: each takes in
    /// the same views and passes over as many.
    #[test]
    fn a_vm_remembering_pages_takes_in_what_one_reading_every_row_does() {
        use crate::extract::{read, read_rows, QueryFacts, RequestFacts};
        use serde_json::json;
        use std::cell::RefCell;
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut passed_unread, mut taken) = (0, 0);
        for round in 0..48 {
            let kind = if round % 2 == 0 {
                WatchKind::Graphql
            } else {
                WatchKind::Rest
            };
            let facts = RequestFacts::Plain(QueryFacts::default());
            let capacity = [8, 40, 1 << 16][round % 3];
            let (mut memory, with, mut without) = (
                PageMemory::new(),
                RefCell::new(KnownEvents::new(capacity)),
                KnownEvents::new(capacity),
            );
            let mut state: Vec<(u64, u64, u64)> = (0..48).map(|_| (1, 0, 0)).collect();
            let size = if round % 8 < 6 { 6 } else { 36 };
            let (pretty, mut offsets, mut total) = (round % 4 < 2, [0, 2], 48);
            for step in 0..60u64 {
                for _ in 0..rng.below(4).saturating_sub(2) {
                    let s = &mut state[rng.below(size + 6)];
                    *s = (1 + rng.below(6) as u64, s.1 + rng.below(2) as u64, step);
                }
                let request = rng.below(2);
                let key = PageMemory::key(kind, false, "/q", &[request as u8]);
                if rng.below(4) == 0 {
                    offsets[request] = rng.below(4);
                }
                if rng.below(3) == 0 {
                    total = 48 + rng.below(3);
                }
                let offset = offsets[request];
                let mut rows: Vec<serde_json::Value> = (offset..offset + size)
                    .map(|i| {
                        let (status, retry, at) = state[i];
                        let mut row = json!({"id": i + 1, "providerId": 3, "channelType": 1,
                            "deliveryStatus": status, "retryCount": retry,
                            "updatedOn": format!("2026-04-20T09:{:02}:{:02}.000Z", at / 60, at % 60),
                            "data": {"items": [{"id": 900, "deliveryStatus": 5}], "n": i}});
                        match rng.below(8) {
                            0 => drop(row.as_object_mut().unwrap().remove("updatedOn")),
                            1 => drop(row.as_object_mut().unwrap().remove("retryCount")),
                            _ => {}
                        }
                        row
                    })
                    .collect();
                if rng.below(6) == 0 {
                    let again = rows[rng.below(rows.len())].clone();
                    rows.insert(rng.below(rows.len()), again);
                }
                let page = match kind {
                    WatchKind::Graphql => json!({"data": {"notifications":
                        {"notifications": rows, "total": total}}}),
                    WatchKind::Rest => json!({"status": "success", "data": rows, "total": total}),
                };
                let body = if pretty {
                    serde_json::to_vec_pretty(&page).unwrap()
                } else {
                    serde_json::to_vec(&page).unwrap()
                };
                let recall = memory
                    .page(key)
                    .map(|p| p.recall(|identity| with.borrow().holds(identity)));
                let (got, rows, unread) = read_rows(
                    kind,
                    &body,
                    &facts,
                    recall.as_ref().map(|r| r as &dyn SeenRows),
                    |found| {
                        let unread = found.seen_rows();
                        let got = take(found, &mut with.borrow_mut());
                        (got, found.rows_to_remember(), unread)
                    },
                )
                .unwrap();
                memory.remember(key, body.clone(), rows);
                let want = read(kind, &body, &facts, |found| take(found, &mut without)).unwrap();
                assert_eq!(got, want, "round {round} step {step}");
                passed_unread += unread;
                taken += got.0.len();
            }
        }
        assert!(
            passed_unread > 16_000,
            "rows passed over unread: {passed_unread}"
        );
        assert!(taken > 1000, "views taken in: {taken}");
    }

    /// A row this VM has forgotten since (`KnownEvents` is bounded) is read again, so an
    /// error answer holding it is refused by its status, as it is without the page; while
    /// the VM still knows it, the answer is passed over unasked.
    #[test]
    fn a_row_the_vm_forgot_is_read_again_and_its_answer_judged() {
        use crate::extract::{read_lazily, read_rows, QueryFacts, RequestFacts};
        use crate::metrics::Metric;
        let (kind, facts) = (WatchKind::Rest, RequestFacts::Plain(QueryFacts::default()));
        let row = |id: u64| {
            format!(
                r#"{{"id":{id},"provider_id":3,"channel_type":1,"delivery_status":2,"retry_count":0,"updated_on":"2026-04-20T09:00:00.000Z"}}"#
            )
        };
        let page = |id: u64, total: u64| format!(r#"{{"items":[{}],"total":{total}}}"#, row(id));
        let key = PageMemory::key(kind, false, "/notifications", b"");
        let (mut memory, mut known) = (PageMemory::new(), KnownEvents::new(1));
        let first = page(1, 1).into_bytes();
        let rows = read_rows(kind, &first, &facts, None, |found| {
            take(found, &mut known);
            found.rows_to_remember()
        })
        .unwrap();
        memory.remember(key, first, rows);
        let answer = |known: &KnownEvents| {
            let recall = memory.page(key).unwrap().recall(|i| known.holds(i));
            read_lazily(
                kind,
                page(1, 2).as_bytes(),
                &facts,
                Some(&recall),
                |found| known.knows_all(found),
                || Some(503),
                None::<fn() -> bool>,
                |found| found.seen_rows(),
            )
        };
        assert_eq!(answer(&known), Ok(1), "known: passed over unasked");
        read_rows(kind, page(2, 1).as_bytes(), &facts, None, |found| {
            take(found, &mut known)
        })
        .unwrap();
        assert_eq!(
            answer(&known),
            Err(Metric::SkippedStatus),
            "forgotten: read"
        );
    }

    #[test]
    fn the_key_tells_requests_kinds_and_archive_reads_apart() {
        let k = PageMemory::key(WatchKind::Graphql, false, "/graphql", b"q");
        assert_ne!(k, PageMemory::key(WatchKind::Rest, false, "/graphql", b"q"));
        assert_ne!(
            k,
            PageMemory::key(WatchKind::Graphql, true, "/graphql", b"q")
        );
        assert_ne!(
            k,
            PageMemory::key(WatchKind::Graphql, false, "/graphql", b"q2")
        );
        assert_ne!(
            k,
            PageMemory::key(WatchKind::Graphql, false, "/graphq", b"lq")
        );
        assert_eq!(
            k,
            PageMemory::key(WatchKind::Graphql, false, "/graphql", b"q")
        );
        let page = |n: u32| PageMemory::key(WatchKind::Rest, false, &format!("/n?page={n}"), b"");
        assert_ne!(page(1), page(2), "REST pages differ by their query string");
    }

    /// What `host::http` does with a watched answer (its host calls aside): skip it when its
    /// bytes under its request were taken in before (`RecentResponses`), else read it with
    /// the request's last page (`PageMemory`) and pass over what this VM took in
    /// (`KnownEvents`). Over a list whose states move, answered to GraphQL polls (archive
    /// rows, `notification(notificationId:)` fields, views without `updatedOn`) and REST ones,
    /// with late answers replayed, `503`s, rows repeated, few or many known observations and
    /// recent responses, and a ledger of 6 that drops most deliveries, it leaves the ledger
    /// as a VM that reads every answer and asks the dedupe memory does. (The memory here
    /// forgets nothing: what passing over does once it has, README, Detect.)
    #[test]
    fn the_shortcuts_place_what_reading_every_answer_does() {
        use crate::config::Config;
        use crate::delivery::ledger::Ledger;
        use crate::events::{Memory, RecentResponses};
        use crate::extract::{graphql_request_facts, read, read_lazily, RequestFacts};
        use crate::intake::take_in;
        use crate::metrics::{CountingMetrics, Metric};
        use crate::store::{MemStore, Store};
        use serde_json::{json, Value};
        use std::cell::RefCell;
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let fields = "id providerId channelType deliveryStatus retryCount updatedOn result";
        let graphql = |query: String| (WatchKind::Graphql, format!(r#"{{"query":"{query}"}}"#));
        let requests = [
            graphql(format!(
                "{{ notifications {{ notifications {{ {fields} }} total }} }}"
            )),
            graphql(format!(
                "{{ notifications {{ notifications {{ {fields} }} total }} \
                 archivedNotifications {{ archivedNotifications {{ notificationId {fields} }} }} }}"
            )),
            graphql(format!(
                "{{ a: notification(notificationId: 3) {{ {fields} }} \
                 notifications {{ notifications {{ {fields} }} total }} \
                 b: notification(notificationId: 4) {{ {fields} }} }}"
            )),
            graphql(
                "{ notifications { notifications { id deliveryStatus retryCount providerId } } }"
                    .to_string(),
            ),
            (WatchKind::Rest, String::new()),
            (WatchKind::Rest, "x".to_string()),
        ];
        let (mut placed, mut passed_unread) = (0, 0);
        for round in 0..24 {
            let pending = [256, 6][round % 2];
            let config = Config::from_json(
                format!(
                    r#"{{"endpoints": [
                    {{"name": "all", "url": "http://h/a", "cluster": "c", "deliveryStatuses": [1,2,3,4,5,6]}},
                    {{"name": "p3", "url": "http://h/b", "cluster": "c", "providerIds": [3], "testMode": "skip"}},
                    {{"name": "ch1", "url": "http://h/c", "cluster": "c", "channelTypes": [1], "awaitResultMs": 5000}}],
                    "limits": {{"maxPending": {pending}}}}}"#
                )
                .as_bytes(),
                &|_| None,
            )
            .unwrap();
            let endpoints = &config.endpoints;
            let memory = Memory::new(1024);
            let laid_out = || {
                let store = MemStore::new();
                for (k, v) in Ledger::new(config.limits.max_pending).keys() {
                    store.set(&k, v, None).unwrap();
                }
                for k in memory.keys() {
                    store.set(&k, b"", None).unwrap();
                }
                store
            };
            let (with, without) = (laid_out(), laid_out());
            let (metrics, metrics_without) =
                (CountingMetrics::default(), CountingMetrics::default());
            let mut pages = PageMemory::new();
            let mut recent = RecentResponses::new([256, 2][round / 2 % 2]);
            let known = RefCell::new(KnownEvents::new([4, 16, 8192][round % 3]));
            // Each notification's (status, retryCount, providerId, updatedOn, result, archived).
            let mut state = vec![(1, 0, 3, 0, 0, false); 24];
            let mut answered: Vec<(usize, Vec<u8>)> = Vec::new();
            for step in 1..90u64 {
                for _ in 0..rng.below(3) {
                    let s = &mut state[rng.below(24)];
                    if !s.5 {
                        let status = if s.0 >= 5 && rng.below(3) > 0 {
                            s.0
                        } else {
                            1 + rng.below(6) as u64
                        };
                        let provider = if rng.below(5) == 0 {
                            3 + rng.below(2) as u64
                        } else {
                            s.2
                        };
                        let result = rng.below(3);
                        *s = (
                            status,
                            s.1 + rng.below(2) as u64,
                            provider,
                            step,
                            result,
                            false,
                        );
                    }
                }
                let s = &mut state[rng.below(24)];
                s.5 |= s.0 >= 5 && rng.below(8) == 0;
                let r = rng.below(requests.len());
                let (kind, request) = (requests[r].0, requests[r].1.as_bytes());
                let facts = match kind {
                    WatchKind::Graphql => graphql_request_facts(request),
                    WatchKind::Rest => RequestFacts::Unread,
                };
                let row = |i: usize, archive: bool| {
                    let (status, retry, provider, at, result, _) = state[i];
                    let mut row = json!({"id": if archive { 1000 + i } else { i + 1 }});
                    if archive {
                        row["notificationId"] = json!(i + 1);
                    }
                    row["providerId"] = json!(provider);
                    row["channelType"] = json!(1 + i % 2);
                    row["deliveryStatus"] = json!(status);
                    row["retryCount"] = json!(retry);
                    row["updatedOn"] =
                        json!(format!("2026-04-20T09:{:02}:{:02}.000Z", at / 60, at % 60));
                    row["result"] = match (status, result) {
                        (5, 1) => json!({"result": crate::osmox::TEST_MODE_RESULT}),
                        (5, 2) => json!({"ok": true}),
                        _ => Value::Null,
                    };
                    row
                };
                let late = (!answered.is_empty() && rng.below(6) == 0)
                    .then(|| answered[rng.below(answered.len())].clone())
                    .filter(|(to, _)| *to == r);
                let body = match late {
                    Some((_, body)) => body,
                    None => {
                        let offset = rng.below(8);
                        let mut live: Vec<Value> = (offset..offset + 12)
                            .filter(|i| !state[*i].5 || rng.below(4) == 0)
                            .map(|i| row(i, false))
                            .collect();
                        if rng.below(6) == 0 && !live.is_empty() {
                            let again = live[rng.below(live.len())].clone();
                            live.insert(rng.below(live.len()), again);
                        }
                        let archived: Vec<Value> = (0..24)
                            .filter(|i| state[*i].5)
                            .map(|i| row(i, true))
                            .collect();
                        let list = json!({"notifications": live, "total": 24 + rng.below(2)});
                        let page = match r {
                            0 => json!({"data": {"notifications": list}}),
                            1 => json!({"data": {"notifications": list,
                                "archivedNotifications": {"archivedNotifications": archived}}}),
                            2 => json!({"data": {"a": row(2, state[2].5), "notifications": list,
                                "b": row(3, state[3].5)}}),
                            // Views without `updatedOn` (nor `total`): a state that comes back
                            // comes in the very bytes it came in before.
                            3 => {
                                for row in &mut live {
                                    for key in ["updatedOn", "channelType", "result"] {
                                        row.as_object_mut().unwrap().remove(key);
                                    }
                                }
                                json!({"data": {"notifications": {"notifications": live}}})
                            }
                            _ => json!({"items": live, "total": 24 + rng.below(2)}),
                        };
                        if round % 4 >= 2 && rng.below(2) == 0 {
                            serde_json::to_vec_pretty(&page).unwrap()
                        } else {
                            serde_json::to_vec(&page).unwrap()
                        }
                    }
                };
                answered.push((r, body.clone()));
                let status = if rng.below(10) == 0 { 503 } else { 200 };
                let now = step * 1000;
                let hash = RecentResponses::hash(request, &[&body]);
                if !recent.contains(hash) {
                    let archived = matches!(&facts, RequestFacts::Plain(q) if q.archived());
                    let key = PageMemory::key(kind, archived, "/q", request);
                    let recall = pages
                        .page(key)
                        .map(|p| p.recall(|i| known.try_borrow().is_ok_and(|k| k.holds(i))));
                    let taken = read_lazily(
                        kind,
                        &body,
                        &facts,
                        recall.as_ref().map(|r| r as &dyn SeenRows),
                        |found| known.borrow().knows_all(found),
                        || Some(status),
                        None::<fn() -> bool>,
                        |found| {
                            passed_unread += found.seen_rows();
                            let k = &mut known.borrow_mut();
                            let n = &found.notifications;
                            let intake = take_in(
                                Some(k),
                                &config,
                                endpoints,
                                memory,
                                &with,
                                &metrics,
                                n,
                                now,
                                step,
                            );
                            let seen = intake.complete && crate::events::recognisable(n);
                            (seen, intake.complete.then(|| found.rows_to_remember()))
                        },
                    );
                    if let Ok((seen, rows)) = taken {
                        if seen {
                            recent.remember(hash);
                        }
                        if let Some(rows) = rows {
                            pages.remember(key, body.clone(), rows);
                        }
                    }
                }
                if status == 200 {
                    let _ = read(kind, &body, &facts, |found| {
                        let n = &found.notifications;
                        take_in(
                            None,
                            &config,
                            endpoints,
                            memory,
                            &without,
                            &metrics_without,
                            n,
                            now,
                            step,
                        )
                    });
                }
                let ledger = |store: &MemStore| {
                    let mut entries = store.entries();
                    entries.retain(|(k, _)| !k.starts_with(crate::shared_name!("seen/")));
                    entries
                };
                assert!(
                    ledger(&with) == ledger(&without),
                    "round {round} step {step}"
                );
            }
            placed += metrics.get(Metric::Pending) + metrics.get(Metric::DeliveriesDropped);
        }
        assert!(placed > 1000, "deliveries placed or dropped: {placed}");
        assert!(
            passed_unread > 400,
            "rows passed over unread: {passed_unread}"
        );
    }
}
