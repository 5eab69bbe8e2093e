//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>), so receivers can verify
//! our webhooks with any of the official libraries.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac_sha256::Hash;

pub const WEBHOOK_ID: &str = "webhook-id";
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix the Standard Webhooks libraries give secrets; they also accept bare base64.
const PREFIX: &str = "whsec_";
/// Shorter keys are weak; longer ones are past what the spec's generators produce.
const MIN_KEY_LEN: usize = 24;
const MAX_KEY_LEN: usize = 64;

/// A signing key from a `whsec_<base64>` secret. Never printed.
///
/// It keeps HMAC's two keyed hash states as well: they are the same for every webhook, so a
/// signature hashes only its message and the outer hash's one block, not the two key blocks
/// again (about an eighth of a webhook's hashing; 1.3 % of what a webhook costs Envoy, by
/// callgrind).
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
    /// SHA-256 after `key ^ ipad`, and after `key ^ opad` (RFC 2104).
    inner: Hash,
    outer: Hash,
}

/// Keys compare as keys; the states follow from them.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A digest that tells keys apart without revealing them (SHA-256, cut to 8 bytes), for
    /// comparing two VMs' configurations through shared data.
    pub fn digest(&self) -> [u8; 8] {
        let full = Hash::hash(&self.key);
        let mut out = [0u8; 8];
        out.copy_from_slice(full.get(..8).unwrap_or(&[0; 8]));
        out
    }

    /// HMAC-SHA256's keyed states for `key` (RFC 2104: a key longer than a block is hashed
    /// first; `parse` allows none, but the construction does not depend on that).
    fn keyed(key: Vec<u8>) -> Secret {
        let mut block = [0u8; BLOCK];
        let short: &[u8] = if key.len() > BLOCK {
            &Hash::hash(&key)
        } else {
            &key
        };
        for (b, k) in block.iter_mut().zip(short) {
            *b = *k;
        }
        let padded = |pad: u8| {
            let mut h = Hash::new();
            h.update(block.map(|b| b ^ pad));
            h
        };
        Secret {
            inner: padded(0x36),
            outer: padded(0x5c),
            key,
        }
    }
}

/// SHA-256's block size in bytes.
const BLOCK: usize = 64;

/// Why a secret was refused. Carries no part of the secret, so it is safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    Empty,
    NotBase64,
    /// The decoded key length, outside 24..=64 bytes.
    BadLength(usize),
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::Empty => f.write_str("webhook secret is empty"),
            SecretError::NotBase64 => {
                f.write_str("webhook secret is not whsec_ followed by standard base64")
            }
            SecretError::BadLength(n) => write!(
                f,
                "webhook secret decodes to {n} bytes; expected {MIN_KEY_LEN} to {MAX_KEY_LEN}"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

impl Secret {
    /// Surrounding whitespace is ignored because secrets often come from files or env vars.
    pub fn parse(s: &str) -> Result<Secret, SecretError> {
        let s = s.trim();
        let encoded = s.strip_prefix(PREFIX).unwrap_or(s);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = decode_base64(encoded.as_bytes()).ok_or(SecretError::NotBase64)?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        Ok(Secret::keyed(key))
    }
}

/// Standard base64 as the `base64` crate's `STANDARD` engine decodes it: padding present and
/// canonical, no unused bits set in the last symbol, nothing else allowed. Written out because
/// that engine's decoder (only ever used here, at configure) was about 4 KB of module.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    if !input.len().is_multiple_of(4) {
        return None;
    }
    let data = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    let mut chunks = data.chunks_exact(4);
    for quad in chunks.by_ref() {
        let mut n = 0u32;
        for &c in quad {
            n = n << 6 | sextet(c)?;
        }
        out.extend_from_slice(n.to_be_bytes().get(1..)?);
    }
    // The last quantum: 2 or 3 symbols before the padding (a lone symbol holds no byte).
    let rest = chunks.remainder();
    let mut n = 0u32;
    for &c in rest {
        n = n << 6 | sextet(c)?;
    }
    match rest.len() {
        0 => {}
        2 if n & 0xf == 0 => out.extend_from_slice((n >> 4).to_be_bytes().get(3..)?),
        3 if n & 0x3 == 0 => out.extend_from_slice((n >> 2).to_be_bytes().get(2..)?),
        _ => return None,
    }
    Some(out)
}

/// One `v1,<base64>` signature over `{id}.{timestamp}.{body}`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp_secs: u64, body: &[u8]) -> String {
    let mut inner = secret.inner;
    inner.update(msg_id.as_bytes());
    inner.update(b".");
    inner.update(timestamp_secs.to_string().as_bytes());
    inner.update(b".");
    inner.update(body);
    let mut outer = secret.outer;
    outer.update(inner.finalize());
    format!("v1,{}", STANDARD.encode(outer.finalize()))
}

/// The `webhook-signature` value: one signature per secret, so receivers can rotate keys
/// without a window where webhooks fail to verify. `None` when unsigned.
pub fn signature_header(
    secrets: &[Secret],
    msg_id: &str,
    timestamp_secs: u64,
    body: &[u8],
) -> Option<String> {
    if secrets.is_empty() {
        return None;
    }
    let sigs: Vec<String> = secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp_secs, body))
        .collect();
    Some(sigs.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use standardwebhooks::Webhook;
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    // The secret from the standardwebhooks crate's own tests (24 bytes).
    const SECRET_A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    // 32 bytes of 0x01..=0x20.
    const SECRET_B: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    const BODY: &[u8] = br#"{"type":"notification.status_changed","data":{"id":42}}"#;

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    /// Verify with the official crate; `HeaderMap` comes in through inference so the test
    /// needs no direct `http` dependency.
    fn verify(
        secret: &str,
        id: &str,
        ts: u64,
        sig: &str,
        body: &[u8],
    ) -> Result<(), standardwebhooks::WebhookError> {
        let map = HashMap::from([
            (WEBHOOK_ID.to_string(), id.to_string()),
            (WEBHOOK_TIMESTAMP.to_string(), ts.to_string()),
            (WEBHOOK_SIGNATURE.to_string(), sig.to_string()),
        ]);
        let headers = (&map).try_into().unwrap();
        Webhook::new(secret)?.verify(body, &headers)
    }

    /// `decode_base64` against the `base64` crate's `STANDARD` engine it replaces: every
    /// string of up to 5 symbols, then many of 8 and 12, over symbols that reach each edge
    /// (padding, unused bits set or not, foreign bytes).
    #[test]
    fn base64_decoding_matches_the_base64_crate() {
        const SYMBOLS: &[u8] = b"AQBCEIgw/+=*-9 ";
        let check = |s: &[u8]| {
            assert_eq!(
                decode_base64(s),
                STANDARD.decode(s).ok(),
                "{}",
                String::from_utf8_lossy(s)
            );
        };
        let mut s = Vec::new();
        fn all(s: &mut Vec<u8>, left: usize, check: &dyn Fn(&[u8])) {
            check(s);
            if left > 0 {
                for &c in SYMBOLS {
                    s.push(c);
                    all(s, left - 1, check);
                    s.pop();
                }
            }
        }
        all(&mut s, 5, &check);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [8, 12] {
            for _ in 0..200_000 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        SYMBOLS[(x % SYMBOLS.len() as u64) as usize]
                    })
                    .collect();
                check(&s);
            }
        }
        check(b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
        check(b"C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
    }

    #[test]
    fn the_kept_keyed_states_sign_as_a_whole_hmac_does() {
        // Keys of every allowed length, and longer ones (hashed first), against messages that
        // end on each side of SHA-256's block and padding boundaries.
        let hmac = |key: &[u8], msg: &[u8]| {
            format!("v1,{}", STANDARD.encode(hmac_sha256::HMAC::mac(msg, key)))
        };
        for key_len in (MIN_KEY_LEN..=MAX_KEY_LEN).chain([65, 100, 200]) {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 37 + key_len) as u8).collect();
            let secret = Secret::keyed(key.clone());
            for body_len in [0, 38, 39, 40, 46, 47, 48, 102, 103, 104, 500] {
                let body: Vec<u8> = (0..body_len).map(|i| (i * 11) as u8).collect();
                // "msg_7.1614265330." is 17 bytes: with these bodies the messages are 55, 56
                // and 57 bytes (where the length no longer fits the last block), 63, 64, 65
                // and 119, 120, 121 (around one and two whole blocks) long.
                let msg = [b"msg_7.1614265330.".as_slice(), &body].concat();
                assert_eq!(
                    sign(&secret, "msg_7", 1_614_265_330, &body),
                    hmac(&key, &msg),
                    "key of {key_len} bytes, message of {} bytes",
                    msg.len()
                );
            }
        }
    }

    #[test]
    fn header_names_match_the_official_crate() {
        assert_eq!(WEBHOOK_ID, standardwebhooks::HEADER_WEBHOOK_ID);
        assert_eq!(
            WEBHOOK_TIMESTAMP,
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP
        );
        assert_eq!(
            WEBHOOK_SIGNATURE,
            standardwebhooks::HEADER_WEBHOOK_SIGNATURE
        );
    }

    #[test]
    fn signature_matches_a_pinned_vector_from_the_official_crate() {
        let secret = Secret::parse(SECRET_A).unwrap();
        let ours = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            b"{\"test\": 2432232314}",
        );
        let theirs = Webhook::new(SECRET_A)
            .unwrap()
            .sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                b"{\"test\": 2432232314}",
            )
            .unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours, "v1,78nXHjpFP0tVJQW5D0SBwmVyyW87BV/rL6MgfM/Bw44=");
    }

    /// The vector the Standard Webhooks libraries' own tests pin (e.g. the Python library's
    /// `test_sign_function`), computed there with Python's `hmac` and `hashlib`: unlike the
    /// `standardwebhooks` crate, which signs with the same `hmac-sha256` crate as we do, an
    /// implementation that shares no code with ours. With and without the `whsec_` prefix.
    #[test]
    fn signature_matches_the_standard_webhooks_published_vector() {
        for secret in [
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            let header = signature_header(
                &[Secret::parse(secret).unwrap()],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
            );
            assert_eq!(
                header.as_deref(),
                Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
                "{secret}"
            );
        }
    }

    /// A key of a whole SHA-256 block (64 bytes, the longest allowed, padded base64), a body
    /// of several blocks with raw UTF-8 (U+2028 among it) and an escape left as text, and a
    /// rotation header: every signature as Python's `hmac` computes it (values pinned from
    /// `base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest())`), in key order.
    #[test]
    fn a_full_block_key_and_a_non_ascii_body_sign_as_an_independent_hmac_does() {
        let long = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";
        let body = "{\"id\":1,\"deliveryStatus\":5,\"data\":{\"to\":\"Jos\u{e9} \u{2028}\",\"n\":1.50},\"result\":{\"m\":\"\\u00e9\"}}";
        assert_eq!(body.len(), 86);
        let secrets = [
            Secret::parse(long).unwrap(),
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
        ];
        assert_eq!(secrets[0].key, (0..64).collect::<Vec<u8>>());
        let header = signature_header(
            &secrets,
            "msg_1_5_0123456789abcdef",
            1_800_000_000,
            body.as_bytes(),
        );
        let first = "v1,k+4AUORJEBdDQM7jwEs5ymrdHGd07Qroce/OUzGSqJw=";
        let second = "v1,xwVneShhx0GS/qjGd30yYsJuZIrkDRO36bbSPJGpjFI=";
        assert_eq!(header, Some(format!("{first} {second}")));
        // And the official crate, which checks the body is UTF-8, takes it.
        let ts = now_secs();
        let header = signature_header(&secrets, "msg_8", ts, body.as_bytes()).unwrap();
        verify(long, "msg_8", ts, &header, body.as_bytes()).unwrap();
    }

    #[test]
    fn our_signature_verifies_with_the_official_crate() {
        let ts = now_secs();
        let secret = Secret::parse(SECRET_A).unwrap();
        let header = signature_header(&[secret], "msg_1", ts, BODY).unwrap();
        assert!(header.starts_with("v1,"));
        assert!(!header.contains(' '));
        verify(SECRET_A, "msg_1", ts, &header, BODY).unwrap();
    }

    #[test]
    fn with_two_secrets_each_one_alone_verifies_the_header() {
        let ts = now_secs();
        let secrets = [
            Secret::parse(SECRET_A).unwrap(),
            Secret::parse(SECRET_B).unwrap(),
        ];
        let header = signature_header(&secrets, "msg_2", ts, BODY).unwrap();
        assert_eq!(header.split(' ').count(), 2);
        verify(SECRET_A, "msg_2", ts, &header, BODY).unwrap();
        verify(SECRET_B, "msg_2", ts, &header, BODY).unwrap();
    }

    #[test]
    fn a_tampered_body_fails_verification() {
        let ts = now_secs();
        let header =
            signature_header(&[Secret::parse(SECRET_A).unwrap()], "msg_3", ts, BODY).unwrap();
        let tampered = br#"{"type":"notification.status_changed","data":{"id":43}}"#;
        assert!(matches!(
            verify(SECRET_A, "msg_3", ts, &header, tampered),
            Err(standardwebhooks::WebhookError::InvalidSignature)
        ));
    }

    #[test]
    fn a_different_message_id_fails_verification() {
        let ts = now_secs();
        let header =
            signature_header(&[Secret::parse(SECRET_A).unwrap()], "msg_4", ts, BODY).unwrap();
        assert!(matches!(
            verify(SECRET_A, "msg_5", ts, &header, BODY),
            Err(standardwebhooks::WebhookError::InvalidSignature)
        ));
    }

    #[test]
    fn a_signature_with_another_secret_fails_verification() {
        let ts = now_secs();
        let header =
            signature_header(&[Secret::parse(SECRET_B).unwrap()], "msg_6", ts, BODY).unwrap();
        assert!(verify(SECRET_A, "msg_6", ts, &header, BODY).is_err());
    }

    #[test]
    fn no_secrets_means_no_signature_header() {
        assert_eq!(signature_header(&[], "msg_7", 1, BODY), None);
    }

    #[test]
    fn parse_accepts_prefixed_and_bare_base64_alike() {
        let prefixed = Secret::parse(SECRET_A).unwrap();
        let bare = Secret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(prefixed, bare);
        assert_eq!(prefixed.key.len(), 24);
        assert_eq!(
            Secret::parse(&format!("  {SECRET_B}\n")).unwrap().key.len(),
            32
        );
    }

    /// Configurations compare their keys through this (the config tests' oracle): two keys
    /// are equal only when their bytes are.
    #[test]
    fn secrets_are_equal_only_when_their_keys_are() {
        let a = Secret::parse(SECRET_A).unwrap();
        assert_eq!(a, Secret::parse(SECRET_A).unwrap());
        assert_ne!(a, Secret::parse(SECRET_B).unwrap());
    }

    #[test]
    fn parse_refuses_empty_non_base64_and_badly_sized_keys() {
        assert_eq!(Secret::parse(""), Err(SecretError::Empty));
        assert_eq!(Secret::parse("whsec_"), Err(SecretError::Empty));
        assert_eq!(
            Secret::parse("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
        // URL-safe alphabet is not standard base64.
        assert_eq!(
            Secret::parse("whsec_C2FVsBQIhrscChlQIMV-b5sSYspob7oD"),
            Err(SecretError::NotBase64)
        );
        // 23 bytes.
        assert_eq!(
            Secret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 23]))),
            Err(SecretError::BadLength(23))
        );
        // 65 bytes.
        assert_eq!(
            Secret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 65]))),
            Err(SecretError::BadLength(65))
        );
        assert!(Secret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 64]))).is_ok());
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let secret = Secret::parse(SECRET_A).unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        let short = format!("whsec_{}", STANDARD.encode(b"hunter2hunter2"));
        let err = Secret::parse(&short).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("aHVudGVy"), "{shown}");
        assert_eq!(
            err.to_string(),
            "webhook secret decodes to 14 bytes; expected 24 to 64"
        );
    }
}
