//! Whether a watched response is worth parsing, and what a finished watched stream calls
//! for, told without the response's headers: its status from the stream's record, its
//! encoding and type from its body's first bytes.
//!
//! The HTTP filter does not take the response-headers callback at all (its module does not
//! export it): each callback Envoy makes enters the VM, and this one cost about 3k
//! instructions per steady poll (1 %) under callgrind, a header read in it 21k more. So a
//! JSON body is parsed whatever its `content-type` says, and a body over
//! `watch.maxBodyBytes` is found out while it is copied rather than from its
//! `content-length`.

use crate::metrics::Metric;

const GZIP: &[u8] = &[0x1f, 0x8b];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// What a body's first bytes say of it: `Some` to skip it, counted there; `None` when it may
/// be JSON, or nothing but whitespace has come yet.
pub fn sniff(start: &[u8]) -> Option<Metric> {
    if start.starts_with(GZIP) || start.starts_with(ZSTD) {
        return Some(Metric::SkippedEncoded);
    }
    after_blanks(start).flatten()
}

/// What the first byte past any blanks says: `None` when there is none yet.
fn after_blanks(bytes: &[u8]) -> Option<Option<Metric>> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    // Every document extraction can use is an object or an array.
    Some((!matches!(first, b'{' | b'[')).then_some(Metric::SkippedNotJson))
}

/// A body's first bytes as its chunks come, until they say what [`sniff`] says of the whole:
/// a chunk of blanks, or one shorter than a compression's magic number, decides nothing yet
/// (a review: judging only the first chunk copied a blank-led HTML page whole, and counted
/// a gzip body whose first chunk was one byte as not JSON).
#[derive(Debug, Default)]
pub struct FirstBytes {
    /// The body's bytes so far, while they may begin a magic number.
    start: [u8; 3],
    held: usize,
    /// Only blanks came so far.
    blank: bool,
    decided: bool,
}

impl FirstBytes {
    /// What the body's first bytes say once `chunk` came after those before it: `Some` to
    /// skip it (said once: later chunks say nothing), `None` while it may be JSON.
    pub fn judge(&mut self, chunk: &[u8]) -> Option<Metric> {
        if self.decided || chunk.is_empty() {
            return None;
        }
        if self.blank {
            // A magic number begins a body: after blanks, the first other byte decides.
            let said = after_blanks(chunk)?;
            self.decided = true;
            return said;
        }
        // The bytes held (a magic number's beginning) and the chunk's first, four at most.
        let mut head = [0u8; 4];
        let mut n = 0;
        let held = self.start.iter().take(self.held);
        for (slot, b) in head.iter_mut().zip(held.chain(chunk)) {
            *slot = *b;
            n += 1;
        }
        let head = head.get(..n).unwrap_or_default();
        let may_begin = |magic: &[u8]| head.len() < magic.len() && magic.starts_with(head);
        if may_begin(GZIP) || may_begin(ZSTD) {
            // All of it is in `head`, shorter than a magic number: wait for the rest.
            for (slot, b) in self.start.iter_mut().zip(head) {
                *slot = *b;
            }
            self.held = head.len();
            return None;
        }
        self.decided = true;
        if self.held > 0 {
            // Not blank: these bytes decide.
            return sniff(head);
        }
        if after_blanks(chunk).is_none() {
            // Blanks only (a magic number would have been a byte other than a blank).
            self.decided = false;
            self.blank = true;
            return None;
        }
        sniff(chunk)
    }
}

/// Whether the server took the call: a recorded 2xx (none recorded: no answer to speak of).
pub fn answered_2xx(status: Option<u64>) -> bool {
    status.is_some_and(|s| (200..300).contains(&s))
}

/// What a whole body's bytes say of it (`sniff`, and a body of nothing but whitespace is not
/// JSON): `Some` to skip it unparsed, under that reason unless its status was not 2xx
/// (`extract::read_lazily` asks).
pub fn sniff_whole(body: &[u8]) -> Option<Metric> {
    sniff(body).or_else(|| {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        blank.then_some(Metric::SkippedNotJson)
    })
}

/// What the host knows of a watched call's stream when it ends.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    /// The call may change OsmoX's webhook table (learning is on).
    pub registration: bool,
    /// The call's answer may hold notifications.
    pub notifications: bool,
    /// A body chunk of the answer came.
    pub responded: bool,
    /// Why the answer's body stopped being copied.
    pub skipped: Option<Metric>,
    /// A GraphQL call whose request body the VM had no room to copy: its query cannot be
    /// read, so its answer cannot be either, for want of room as much as an answer refused
    /// for room.
    pub query_refused: bool,
}

/// What a watched call's finished stream calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No answer to speak of: the stream shows in no metric.
    Unanswered,
    /// A watched answer, counted under `skip` when it was not read; then learn from it
    /// and read its notifications, as set.
    Answered {
        skip: Option<Metric>,
        learn: bool,
        notifications: bool,
    },
}

/// The verdict on a finished stream. `status` (the recorded one, a hostcall) is asked at most
/// once, and only for a registration: only a server that took the call teaches anything,
/// while a poll's answer is judged by its bytes, and its status only when it calls for
/// something (`extract::read_lazily`), so a skipped answer counts under one reason either
/// way. A registration's answer without a body
/// (a delete's 204) still teaches, and a delete teaches from its path even when its answer
/// was not copied.
pub fn verdict(ending: &Ending, status: impl FnOnce() -> Option<u64>) -> Verdict {
    let skipped = ending
        .skipped
        .or(ending.query_refused.then_some(Metric::SkippedBufferFull));
    if !ending.registration {
        if !ending.responded {
            return Verdict::Unanswered;
        }
        return Verdict::Answered {
            skip: skipped,
            learn: false,
            notifications: ending.notifications && skipped.is_none(),
        };
    }
    let status = status();
    if !ending.responded && status.is_none() {
        return Verdict::Unanswered;
    }
    if !answered_2xx(status) {
        return Verdict::Answered {
            skip: Some(Metric::SkippedStatus),
            learn: false,
            notifications: false,
        };
    }
    Verdict::Answered {
        skip: skipped,
        learn: true,
        notifications: ending.notifications && skipped.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_judged_by_its_first_bytes() {
        let gzip = [0x1f, 0x8b, 0x08, 0x00];
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0x00];
        let cases: [(&[u8], Option<Metric>); 9] = [
            (b"{\"data\":{}}", None),
            (b" \r\n\t[{\"id\":1}]", None),
            (b"{", None), // left for the parser to refuse
            (&gzip, Some(Metric::SkippedEncoded)),
            (&zstd, Some(Metric::SkippedEncoded)),
            (b"<html>maintenance</html>", Some(Metric::SkippedNotJson)),
            (b"\"a string\"", Some(Metric::SkippedNotJson)),
            (b"", Some(Metric::SkippedNotJson)),
            (b" \n", Some(Metric::SkippedNotJson)),
        ];
        // A first chunk of blanks decides nothing yet; a whole body of them does.
        assert_eq!(sniff(b"  "), None);
        assert_eq!(sniff(b"  x"), Some(Metric::SkippedNotJson));
        for (body, want) in cases {
            let shown = String::from_utf8_lossy(body);
            assert_eq!(sniff_whole(body), want, "{shown}");
        }
    }

    /// A review: only a body's first chunk was judged. A first chunk of blanks (a newline
    /// before an HTML error page) decided nothing, and the page was copied whole to be
    /// counted by its status after all; a first chunk shorter than gzip's or zstd's magic
    /// was counted `_not_json`, not `_encoded`. However a body is split, its first bytes
    /// say what they say of it whole, and say it once.
    #[test]
    fn a_body_split_anywhere_is_judged_as_its_first_bytes_whole() {
        let gzip: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0x7b];
        let zstd: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58];
        let not_zstd: &[u8] = &[0x28, 0xb5, 0x2f, 0x00, 0x00];
        let bodies: [&[u8]; 9] = [
            b"{\"data\":{}}",
            b"\r\n  [{\"id\":1}]",
            gzip,
            zstd,
            not_zstd,
            b"\n\n<html>bad gateway</html>",
            b"(nope)",
            b" \x1f\x8b\x08",
            b"   ",
        ];
        for body in bodies {
            let want = sniff(body);
            // Every way to cut it in up to three chunks, empty ones included.
            for a in 0..=body.len() {
                for b in a..=body.len() {
                    let chunks = [&body[..a], &body[a..b], &body[b..]];
                    let mut first = FirstBytes::default();
                    let said: Vec<Metric> = chunks.iter().filter_map(|c| first.judge(c)).collect();
                    let shown = String::from_utf8_lossy(body);
                    assert_eq!(said.first().copied(), want, "{shown:?} cut at {a}, {b}");
                    assert!(said.len() <= 1, "{shown:?} cut at {a}, {b}: said {said:?}");
                }
            }
        }
    }

    #[test]
    fn a_finished_stream_is_counted_under_one_reason_and_a_registration_judged_by_status() {
        use Metric::{SkippedEncoded, SkippedNotJson, SkippedStatus, SkippedTooLarge};
        let answered = |skip, learn, notifications| Verdict::Answered {
            skip,
            learn,
            notifications,
        };
        // (registration, notifications, responded, skipped, status) → verdict
        let cases = [
            // Polls: the status is not asked here (`read_lazily` asks it when it matters).
            ((false, true, true, None, None), answered(None, false, true)),
            (
                (false, true, true, Some(SkippedNotJson), None),
                answered(Some(SkippedNotJson), false, false),
            ),
            ((false, true, false, None, Some(304)), Verdict::Unanswered),
            (
                (false, false, true, None, None),
                answered(None, false, false),
            ),
            // Registrations: by status first.
            (
                (true, true, true, None, Some(200)),
                answered(None, true, true),
            ),
            (
                (true, false, true, None, Some(201)),
                answered(None, true, false),
            ),
            (
                (true, true, true, Some(SkippedNotJson), Some(502)),
                answered(Some(SkippedStatus), false, false),
            ),
            (
                (true, false, true, Some(SkippedEncoded), Some(201)),
                answered(Some(SkippedEncoded), true, false),
            ),
            (
                (true, false, true, Some(SkippedTooLarge), Some(200)),
                answered(Some(SkippedTooLarge), true, false),
            ),
            (
                (true, false, false, None, Some(204)),
                answered(None, true, false),
            ),
            (
                (true, false, false, None, Some(404)),
                answered(Some(SkippedStatus), false, false),
            ),
            ((true, false, false, None, None), Verdict::Unanswered),
            (
                (true, true, true, None, None),
                answered(Some(SkippedStatus), false, false),
            ),
            // A review: a redirect teaches nothing, and a skipped answer with notifications
            // on is not read for them.
            (
                (true, false, true, None, Some(300)),
                answered(Some(SkippedStatus), false, false),
            ),
            (
                (true, false, true, None, Some(302)),
                answered(Some(SkippedStatus), false, false),
            ),
            (
                (true, true, true, None, Some(299)),
                answered(None, true, true),
            ),
            (
                (true, true, true, Some(SkippedTooLarge), Some(200)),
                answered(Some(SkippedTooLarge), true, false),
            ),
        ];
        for ((registration, notifications, responded, skipped, status), want) in cases {
            let ending = Ending {
                registration,
                notifications,
                responded,
                skipped,
                query_refused: false,
            };
            let mut asked = 0;
            let got = verdict(&ending, || {
                asked += 1;
                status
            });
            assert_eq!(got, want, "{ending:?} status {status:?}");
            assert_eq!(asked, usize::from(registration), "{ending:?}: status asked");
        }
    }

    /// A GraphQL call whose request body the VM had no room to copy (`watch.maxBufferedBytes`)
    /// cannot have its query read, so neither can its answer: counted where the room ran
    /// out, as an answer refused for room is, not as a query the filter could not read
    /// (`_no_query`, which points an operator at the clients' requests). A review found such
    /// answers counted in `bodies_skipped_no_query`.
    #[test]
    fn a_graphql_answer_whose_request_found_no_room_counts_as_buffer_full() {
        use Metric::{SkippedBufferFull, SkippedNotJson, SkippedStatus};
        let refused = |registration, responded, skipped| Ending {
            registration,
            notifications: true,
            responded,
            skipped,
            query_refused: true,
        };
        let answered = |skip, learn| Verdict::Answered {
            skip: Some(skip),
            learn,
            notifications: false,
        };
        // A poll: not read, and its status not asked for it.
        let poll = verdict(&refused(false, true, None), || panic!("status asked"));
        assert_eq!(poll, answered(SkippedBufferFull, false));
        // What the answer's own bytes said comes first.
        let text = verdict(&refused(false, true, Some(SkippedNotJson)), || None);
        assert_eq!(text, answered(SkippedNotJson, false));
        assert_eq!(
            verdict(&refused(false, false, None), || None),
            Verdict::Unanswered
        );
        // A registration: judged by its status first, and taught from what can be read.
        let taken = verdict(&refused(true, true, None), || Some(200));
        assert_eq!(taken, answered(SkippedBufferFull, true));
        let failed = verdict(&refused(true, true, None), || Some(500));
        assert_eq!(failed, answered(SkippedStatus, false));
    }

    /// Brotli has no magic bytes: its first byte gives the window and the first block's
    /// length, and a page of 64 KiB to 1 MiB compressed at its libraries' default window (22)
    /// begins `[`. Such a body passes the first bytes' test, is copied, and is refused by the
    /// parser: counted as malformed, as README (Limits) says, not as not JSON.
    #[test]
    fn a_brotli_page_can_begin_as_json_does() {
        use crate::extract::{read, ExtractError, RequestFacts, WatchKind};
        // The first bytes of a 231 KB GraphQL page compressed by brotli 1.2 at its defaults
        // (quality 11, window 22); quality 4 and 5 begin alike.
        const BROTLI: &[u8] = &[
            0x5b, 0x17, 0x86, 0x93, 0x40, 0xd8, 0xc6, 0x38, 0x06, 0x13, 0x7c, 0xad, 0x08, 0xa6,
            0x1b, 0x98,
        ];
        assert_eq!((sniff(BROTLI), sniff_whole(BROTLI)), (None, None));
        let parsed = read(WatchKind::Rest, BROTLI, &RequestFacts::Unread, |_| ());
        assert_eq!(parsed, Err(ExtractError::NotJson));
        assert_eq!(ExtractError::NotJson.metric(), Metric::SkippedMalformed);
    }
}
