//! What becomes of a detected value: the five actions, the keys that hash
//! and encrypt, and the reverse of `encrypt` that `lookout decrypt` runs.
//!
//! - `redact`: `<EMAIL>`.
//! - `mask`: every letter and digit but the last `keep_last` becomes `*`;
//!   separators stay, so a card reads `**** **** **** 1111`.
//! - `hash`: `<EMAIL:9f2c4a…>`, the first 16 hex digits (64 bits) of
//!   HMAC-SHA256 over the value under `hash_key`. The same value gives the
//!   same pseudonym on every span, on every restart, as long as the key is
//!   the same; without the key nobody can test a guess against it.
//! - `encrypt`: `<EMAIL:enc:…>`, AES-256-GCM with a random 96-bit nonce,
//!   base64url of nonce ‖ ciphertext ‖ tag. The label is authenticated
//!   data, so a ciphertext cannot be passed off under another type.
//! - `drop`: the attribute that holds the value is removed.

use std::fmt::Write as _;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Redact,
    Mask,
    Hash,
    Encrypt,
    Drop,
}

impl ActionKind {
    pub const ALL: [ActionKind; 5] = [
        ActionKind::Redact,
        ActionKind::Mask,
        ActionKind::Hash,
        ActionKind::Encrypt,
        ActionKind::Drop,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Redact => "redact",
            ActionKind::Mask => "mask",
            ActionKind::Hash => "hash",
            ActionKind::Encrypt => "encrypt",
            ActionKind::Drop => "drop",
        }
    }
}

/// An action with its setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub kind: ActionKind,
    /// For `mask`: how many trailing characters stay readable.
    pub keep_last: usize,
}

/// A key given in config that cannot be used. The messages never hold the
/// key itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "hash_key is needed by the hash action; set it, e.g. hash_key: ${{env:LOOKOUT_PII_HASH_KEY}}"
    )]
    HashKeyMissing,
    #[error("hash_key must be at least 16 bytes long")]
    HashKeyShort,
    #[error(
        "encryption_key is needed by the encrypt action; set it, e.g. encryption_key: ${{env:LOOKOUT_PII_ENCRYPTION_KEY}}"
    )]
    EncryptionKeyMissing,
    #[error("encryption_key must be 32 bytes, written as 64 hex digits or in base64")]
    EncryptionKeyMalformed,
}

/// Parses an AES-256 key written as 64 hex digits or as base64.
pub fn parse_encryption_key(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| KeyError::EncryptionKeyMalformed)?
    } else {
        STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| KeyError::EncryptionKeyMalformed)?
    };
    bytes
        .try_into()
        .map_err(|_| KeyError::EncryptionKeyMalformed)
}

/// The keys of the hash and encrypt actions, each present only if given.
pub struct Keys {
    hash: Option<hmac::Key>,
    encrypt: Option<RandomizedNonceKey>,
}

impl Keys {
    pub fn new(hash_key: Option<&str>, encryption_key: Option<&str>) -> Result<Keys, KeyError> {
        let hash = match hash_key {
            Some(key) if key.len() < 16 => return Err(KeyError::HashKeyShort),
            Some(key) => Some(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes())),
            None => None,
        };
        let encrypt = match encryption_key {
            Some(key) => {
                let bytes = parse_encryption_key(key)?;
                let key = RandomizedNonceKey::new(&AES_256_GCM, &bytes)
                    .map_err(|_| KeyError::EncryptionKeyMalformed)?;
                Some(key)
            }
            None => None,
        };
        Ok(Keys { hash, encrypt })
    }

    /// Checks that every action in use has its key.
    pub fn check(&self, actions: impl IntoIterator<Item = ActionKind>) -> Result<(), KeyError> {
        for action in actions {
            match action {
                ActionKind::Hash if self.hash.is_none() => return Err(KeyError::HashKeyMissing),
                ActionKind::Encrypt if self.encrypt.is_none() => {
                    return Err(KeyError::EncryptionKeyMissing);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Appends what `value`, found by the rule labelled `label`, becomes
    /// under `action`. `drop` is the caller's to carry out; where nothing
    /// can be dropped it reads as `redact`.
    pub fn replace(&self, action: Action, label: &str, value: &str, out: &mut String) {
        match action.kind {
            ActionKind::Redact | ActionKind::Drop => push_placeholder(out, label, None),
            ActionKind::Mask => mask(value, action.keep_last, out),
            ActionKind::Hash => match &self.hash {
                Some(key) => {
                    let tag = hmac::sign(key, value.as_bytes());
                    let mut hex = String::with_capacity(16);
                    for byte in &tag.as_ref()[..8] {
                        let _ = write!(hex, "{byte:02x}");
                    }
                    push_placeholder(out, label, Some(&hex));
                }
                // `check` ran at build time; never leak the value.
                None => push_placeholder(out, label, None),
            },
            ActionKind::Encrypt => match self.encrypt(label, value) {
                Some(sealed) => push_placeholder(out, label, Some(&format!("enc:{sealed}"))),
                None => push_placeholder(out, label, None),
            },
        }
    }

    fn encrypt(&self, label: &str, value: &str) -> Option<String> {
        let key = self.encrypt.as_ref()?;
        let mut in_out = value.as_bytes().to_vec();
        let nonce = key
            .seal_in_place_append_tag(Aad::from(label.as_bytes()), &mut in_out)
            .ok()?;
        let mut sealed = nonce.as_ref().to_vec();
        sealed.extend_from_slice(&in_out);
        Some(URL_SAFE_NO_PAD.encode(sealed))
    }
}

fn push_placeholder(out: &mut String, label: &str, detail: Option<&str>) {
    out.push('<');
    out.push_str(label);
    if let Some(detail) = detail {
        out.push(':');
        out.push_str(detail);
    }
    out.push('>');
}

fn mask(value: &str, keep_last: usize, out: &mut String) {
    let hidden = value.chars().count().saturating_sub(keep_last);
    for (i, c) in value.chars().enumerate() {
        out.push(if i < hidden && c.is_alphanumeric() {
            '*'
        } else {
            c
        });
    }
}

/// What `decrypt_marked` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decrypted {
    pub text: String,
    pub decrypted: usize,
    /// Marked values that did not open with this key: left as they were.
    pub failed: usize,
}

/// How a decrypted value is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As it was.
    None,
    /// As the inside of a JSON string, for the file exporter's output.
    Json,
}

/// Replaces every `<LABEL:enc:…>` in `text` that opens under `key` by the
/// value it was made from.
pub fn decrypt_marked(text: &str, key: &[u8; 32], escape: Escape) -> Decrypted {
    let marked = Regex::new(r"<([A-Z][A-Z0-9_]*):enc:([A-Za-z0-9_-]+)>").expect("a fixed pattern");
    let key = RandomizedNonceKey::new(&AES_256_GCM, key).expect("32 bytes is an AES-256 key");
    let mut result = Decrypted::default();
    let mut last = 0;
    for captures in marked.captures_iter(text) {
        let whole = captures.get(0).expect("group 0 always matches");
        let opened = open(&key, &captures[1], &captures[2]);
        result.text.push_str(&text[last..whole.start()]);
        match opened {
            Some(plain) => {
                result.decrypted += 1;
                match escape {
                    Escape::None => result.text.push_str(&plain),
                    Escape::Json => {
                        let quoted = serde_json::to_string(&plain).expect("a string serialises");
                        result.text.push_str(&quoted[1..quoted.len() - 1]);
                    }
                }
            }
            None => {
                result.failed += 1;
                result.text.push_str(whole.as_str());
            }
        }
        last = whole.end();
    }
    result.text.push_str(&text[last..]);
    result
}

fn open(key: &RandomizedNonceKey, label: &str, sealed: &str) -> Option<String> {
    let sealed = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    let nonce_len = AES_256_GCM.nonce_len();
    if sealed.len() < nonce_len {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(nonce_len);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut in_out = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(label.as_bytes()), &mut in_out)
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn keys() -> Keys {
        Keys::new(Some("a hash key of 16+ bytes"), Some(KEY_HEX)).unwrap()
    }

    fn replaced(keys: &Keys, kind: ActionKind, value: &str) -> String {
        let mut out = String::new();
        let action = Action { kind, keep_last: 4 };
        keys.replace(action, "CARD", value, &mut out);
        out
    }

    #[test]
    fn redact_and_mask() {
        let keys = keys();
        assert_eq!(replaced(&keys, ActionKind::Redact, "4111"), "<CARD>");
        assert_eq!(
            replaced(&keys, ActionKind::Mask, "4111 1111 1111 1234"),
            "**** **** **** 1234"
        );
        assert_eq!(replaced(&keys, ActionKind::Mask, "ab"), "ab");
    }

    #[test]
    fn hash_is_stable_for_one_key_and_differs_across_keys() {
        let first = replaced(&keys(), ActionKind::Hash, "jane@example.com");
        let again = replaced(&keys(), ActionKind::Hash, "jane@example.com");
        let other_key = Keys::new(Some("another key of 16+ bytes"), None).unwrap();
        let other = replaced(&other_key, ActionKind::Hash, "jane@example.com");
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert!(first.starts_with("<CARD:") && first.len() == "<CARD:>".len() + 16);
    }

    #[test]
    fn encrypt_then_decrypt_round_trips() {
        let keys = keys();
        let value = "jane \"doe\" <jane@example.com>\n";
        let sealed = replaced(&keys, ActionKind::Encrypt, value);
        assert!(sealed.starts_with("<CARD:enc:"), "{sealed}");
        assert_ne!(
            sealed,
            replaced(&keys, ActionKind::Encrypt, value),
            "nonces differ"
        );
        let key = parse_encryption_key(KEY_HEX).unwrap();
        let text = format!("before {sealed} after");
        let opened = decrypt_marked(&text, &key, Escape::None);
        assert_eq!(opened.text, format!("before {value} after"));
        assert_eq!((opened.decrypted, opened.failed), (1, 0));
        let json = decrypt_marked(&sealed, &key, Escape::Json);
        assert_eq!(json.text, r#"jane \"doe\" <jane@example.com>\n"#);
    }

    #[test]
    fn a_wrong_key_or_a_relabelled_value_does_not_open() {
        let sealed = replaced(&keys(), ActionKind::Encrypt, "secret");
        let wrong = [7u8; 32];
        let opened = decrypt_marked(&sealed, &wrong, Escape::None);
        assert_eq!((opened.decrypted, opened.failed), (0, 1));
        assert_eq!(opened.text, sealed);
        let relabelled = sealed.replacen("<CARD:", "<EMAIL:", 1);
        let key = parse_encryption_key(KEY_HEX).unwrap();
        assert_eq!(decrypt_marked(&relabelled, &key, Escape::None).failed, 1);
    }

    #[test]
    fn keys_are_checked_without_echoing_them() {
        assert_eq!(
            Keys::new(Some("short"), None).err(),
            Some(KeyError::HashKeyShort)
        );
        let error = Keys::new(None, Some("not-a-key")).err().unwrap();
        assert!(!error.to_string().contains("not-a-key"));
        let base64 = STANDARD.encode([9u8; 32]);
        assert!(Keys::new(None, Some(&base64)).is_ok());
        let none = Keys::new(None, None).unwrap();
        assert_eq!(
            none.check([ActionKind::Redact, ActionKind::Hash]),
            Err(KeyError::HashKeyMissing)
        );
        assert_eq!(
            none.check([ActionKind::Encrypt]),
            Err(KeyError::EncryptionKeyMissing)
        );
    }
}
