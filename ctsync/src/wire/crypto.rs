//! Keys: from the shared key file to one MAC key per direction and
//! session.
//!
//! ```text
//! key file bytes (leading/trailing ASCII whitespace trimmed, >= 16 bytes)
//!         |
//!         v  HKDF-Extract(salt = "director-ctsync-v1")          RFC 5869 2.2
//!        PRK
//!         |-- HKDF-Expand(PRK, "hello", 32) ------------------> Hello key
//!         '-- HKDF-Expand(PRK, "frames" | sender nonce          RFC 5869 2.3
//!                              | receiver nonce, 32) ---------> frame key of
//!                                                                one direction
//! ```
//!
//! Each side sends a fresh 16-byte random nonce in its Hello; the nonces
//! come from the driver (`getrandom`), so the core stays deterministic. A
//! frame key depends on both nonces, so frames recorded in one session
//! fail the MAC in any other, and the key of A -> B differs from the key of
//! B -> A, so a frame reflected back to its sender fails too. The Hello
//! itself is MACed with the Hello key (static): a replayed Hello gets as
//! far as the handshake's key confirmation, which it cannot pass without
//! the key.
//!
//! MAC: HMAC-SHA256 (RFC 2104) truncated to its first 16 bytes, as
//! HMAC-SHA-256-128 in RFC 4868. Checked with `hmac`'s
//! `verify_truncated_left`, which compares in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::DecodeError;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the MAC trailer of every frame.
pub const MAC_LEN: usize = 16;
/// Bytes of a Hello nonce.
pub const NONCE_LEN: usize = 16;
/// Shortest key file content accepted (after trimming whitespace).
pub const MIN_KEY_LEN: usize = 16;

const SALT: &[u8] = b"director-ctsync-v1";
const INFO_HELLO: &[u8] = b"hello";
const INFO_FRAMES: &[u8] = b"frames";

/// Why a key file's content is not a usable key. The operator's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("ctsync key is {got} bytes after trimming whitespace, need at least {MIN_KEY_LEN} (e.g. `head -c 32 /dev/urandom | base64`)")]
    TooShort { got: usize },
}

/// A Hello nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Nonce(pub [u8; NONCE_LEN]);

/// HKDF-Extract (RFC 5869 2.2): PRK = HMAC-Hash(salt, IKM).
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length (RFC 2104 2), so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(salt) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(ikm);
    mac.finalize().into_bytes().into()
}

/// HKDF-Expand (RFC 5869 2.3) for L = 32, one block: T(1) =
/// HMAC-Hash(PRK, info | 0x01). `info` is given in parts.
pub fn hkdf_expand32(prk: &[u8; 32], info: &[&[u8]]) -> [u8; 32] {
    let mut mac = match HmacSha256::new_from_slice(prk) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for part in info {
        mac.update(part);
    }
    mac.update(&[1]);
    mac.finalize().into_bytes().into()
}

/// The shared secret of the pair, as the PRK of the key file (the raw key
/// is not kept). No `Debug` output of the bytes, no serde.
#[derive(Clone)]
pub struct Psk {
    prk: [u8; 32],
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl Psk {
    /// From the content of `[ctsync] key_file`: any bytes (a hex or base64
    /// line is fine), leading and trailing ASCII whitespace ignored so that
    /// a trailing newline on one node does not split the pair.
    pub fn from_key_file(content: &[u8]) -> Result<Psk, KeyError> {
        let key = content.trim_ascii();
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { got: key.len() });
        }
        Ok(Psk {
            prk: hkdf_extract(SALT, key),
        })
    }

    /// The key that MACs Hello frames.
    pub fn hello_key(&self) -> MacKey {
        MacKey::new(&hkdf_expand32(&self.prk, &[INFO_HELLO]))
    }

    /// The key of frames from the holder of `sender` to the holder of
    /// `receiver`.
    pub fn frame_key(&self, sender: &Nonce, receiver: &Nonce) -> MacKey {
        MacKey::new(&hkdf_expand32(
            &self.prk,
            &[INFO_FRAMES, &sender.0, &receiver.0],
        ))
    }
}

/// A keyed HMAC-SHA256 state, cloned per frame (the key schedule is done
/// once).
#[derive(Clone)]
pub struct MacKey {
    mac: Option<HmacSha256>,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    pub fn new(key: &[u8; 32]) -> MacKey {
        MacKey {
            mac: HmacSha256::new_from_slice(key).ok(),
        }
    }

    /// The 16-byte tag of `parts` concatenated.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        if let Some(mac) = &self.mac {
            let mut mac = mac.clone();
            for p in parts {
                mac.update(p);
            }
            let full = mac.finalize().into_bytes();
            if let Some(head) = full.get(..MAC_LEN) {
                out.copy_from_slice(head);
            }
        }
        out
    }

    /// Constant-time check of a 16-byte tag over `parts`.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), DecodeError> {
        let Some(mac) = &self.mac else {
            return Err(DecodeError::BadMac);
        };
        if tag.len() != MAC_LEN {
            return Err(DecodeError::BadMac);
        }
        let mut mac = mac.clone();
        for p in parts {
            mac.update(p);
        }
        mac.verify_truncated_left(tag)
            .map_err(|_| DecodeError::BadMac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5869 Appendix A.1 (Test Case 1), first 32 bytes of OKM.
    #[test]
    fn hkdf_rfc5869_case_1() {
        let ikm = [0x0bu8; 22];
        let salt = hex("000102030405060708090a0b0c");
        let info = hex("f0f1f2f3f4f5f6f7f8f9");
        let prk = hkdf_extract(&salt, &ikm);
        assert_eq!(
            prk.to_vec(),
            hex("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
        );
        let okm = hkdf_expand32(&prk, &[&info]);
        assert_eq!(
            okm.to_vec(),
            hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
        );
    }

    /// RFC 4231 test case 2 ("Jefe"), HMAC-SHA-256: the first 16 bytes are
    /// the HMAC-SHA-256-128 tag (a 4-byte key, so the hmac crate directly;
    /// MacKey takes the 32-byte derived keys).
    #[test]
    fn hmac_rfc4231_case_2() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let full = mac.finalize().into_bytes();
        assert_eq!(full[..16].to_vec(), hex("5bdcc146bf60754e6a042426089575c7"));
    }

    #[test]
    fn tags_verify_in_parts_and_reject_changes() {
        let mut key = [0u8; 32];
        key[0] = 1;
        let k = MacKey::new(&key);
        let tag = k.tag(&[b"ab", b"c"]);
        assert_eq!(tag, k.tag(&[b"abc"]));
        assert_eq!(k.verify(&[b"abc"], &tag), Ok(()));
        let mut bad = tag;
        bad[15] ^= 1;
        assert_eq!(k.verify(&[b"abc"], &bad), Err(DecodeError::BadMac));
        assert_eq!(k.verify(&[b"abc"], &tag[..15]), Err(DecodeError::BadMac));
    }

    #[test]
    fn key_file_trimmed_and_minimum() {
        let a = Psk::from_key_file(b"0123456789abcdef0123\n").unwrap();
        let b = Psk::from_key_file(b"  0123456789abcdef0123").unwrap();
        assert_eq!(a.prk, b.prk);
        assert_eq!(
            Psk::from_key_file(b"short\n").err(),
            Some(KeyError::TooShort { got: 5 })
        );
        assert_eq!(format!("{a:?}"), "Psk(..)");
    }

    #[test]
    fn directions_and_sessions_differ() {
        let psk = Psk::from_key_file(b"0123456789abcdef0123").unwrap();
        let n1 = Nonce([1; 16]);
        let n2 = Nonce([2; 16]);
        let n3 = Nonce([3; 16]);
        let t12 = psk.frame_key(&n1, &n2).tag(&[b"x"]);
        let t21 = psk.frame_key(&n2, &n1).tag(&[b"x"]);
        let t13 = psk.frame_key(&n1, &n3).tag(&[b"x"]);
        assert_ne!(t12, t21);
        assert_ne!(t12, t13);
        assert_ne!(t12, psk.hello_key().tag(&[b"x"]));
    }
}
