//! Export passwords by challenge–response: the password never crosses the network.
//!
//! 1. The client asks `ClientOp::Challenge { subdir }` on the connection it will say `Hello`
//!    on; the master answers 32 random bytes (a nonce, kept with that connection and good for
//!    its next `Hello` only) and whether the export's key is the password's MD5 (`md5pass=`
//!    in the exports file) or the password itself (`password=`).
//! 2. The client's `Hello` carries `proof = HMAC-SHA-256(key, message)` ([`hello_proof`]),
//!    the message binding the nonce to everything the `Hello` asks for: the session resumed
//!    (0 for a new one), its token, the directory and the client info.
//!
//! A proof is worth one `Hello` on one connection: another connection has another nonce, and
//! the nonce is dropped by the `Hello` that uses it, right or wrong. Someone who records the
//! exchange learns HMAC outputs under the key, from which a guessable password can be found
//! offline (as with MooseFS's MD5 challenge): pick a long random password.

use sha2::{Digest, Sha256};

/// Bytes of a challenge nonce.
pub const NONCE_BYTES: usize = 32;

/// What a `Hello` proof is computed over, besides the key: a domain label and version, then
/// the nonce and the fields of the `Hello`, each string prefixed by its length so no two
/// different `Hello`s give the same message.
pub fn hello_message(
    nonce: &[u8; NONCE_BYTES],
    session: u64,
    token: u64,
    subdir: &str,
    client_info: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + subdir.len() + client_info.len());
    m.extend_from_slice(b"mfsha hello v1\0");
    m.extend_from_slice(nonce);
    m.extend_from_slice(&session.to_be_bytes());
    m.extend_from_slice(&token.to_be_bytes());
    for s in [subdir, client_info] {
        m.extend_from_slice(&(s.len() as u64).to_be_bytes());
        m.extend_from_slice(s.as_bytes());
    }
    m
}

/// The proof a `Hello` carries: HMAC-SHA-256 of [`hello_message`] under `key`.
pub fn hello_proof(
    key: &[u8],
    nonce: &[u8; NONCE_BYTES],
    session: u64,
    token: u64,
    subdir: &str,
    client_info: &str,
) -> [u8; 32] {
    hmac_sha256(key, &hello_message(nonce, session, token, subdir, client_info))
}

/// The HMAC key for `password`: its bytes, or its MD5 when the export holds only that.
pub fn password_key(password: &str, md5: bool) -> Vec<u8> {
    match md5 {
        true => md5_digest(password.as_bytes()).to_vec(),
        false => password.as_bytes().to_vec(),
    }
}

/// HMAC-SHA-256 (RFC 2104 over FIPS 180-4).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block_key = [0u8; BLOCK];
    if key.len() > BLOCK {
        block_key[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block_key[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block_key.map(|k| k ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// Compares in time independent of where the inputs differ (a proof is checked with it, so
/// timing tells nothing about how close a guess came).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// MD5 (RFC 1321), only for `md5pass=` exports (MooseFS stores the password's MD5).
pub fn md5_digest(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> =
        (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32).collect();
    let mut message = input.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    let mut state: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    for chunk in message.chunks_exact(64) {
        let m: Vec<u32> =
            chunk.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a.wrapping_add(f).wrapping_add(k[i]).wrapping_add(m[g]).rotate_left(S[i]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 1
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(hex(&mac), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        // Test case 2: a key shorter than the block
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than the block (hashed first)
        let mac =
            hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn md5_matches_rfc_1321() {
        assert_eq!(hex(&md5_digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5_digest(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        let long =
            b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(&md5_digest(long)), "57edf4a22be3c955ac49da2e2107b67a");
        // `echo -n 111111 | md5sum`, the seed tutorial's password
        assert_eq!(hex(&md5_digest(b"111111")), "96e79218965eb72c92a549dd5a330112");
    }

    #[test]
    fn a_proof_depends_on_key_nonce_and_every_field() {
        let nonce = [7u8; NONCE_BYTES];
        let base = hello_proof(b"pw", &nonce, 0, 5, "/a", "h:/mnt");
        assert_eq!(base, hello_proof(b"pw", &nonce, 0, 5, "/a", "h:/mnt"));
        assert_ne!(base, hello_proof(b"pW", &nonce, 0, 5, "/a", "h:/mnt"));
        assert_ne!(base, hello_proof(b"pw", &[8u8; NONCE_BYTES], 0, 5, "/a", "h:/mnt"));
        assert_ne!(base, hello_proof(b"pw", &nonce, 1, 5, "/a", "h:/mnt"));
        assert_ne!(base, hello_proof(b"pw", &nonce, 0, 6, "/a", "h:/mnt"));
        assert_ne!(base, hello_proof(b"pw", &nonce, 0, 5, "/ah", ":/mnt"), "length-prefixed");
        assert!(constant_time_eq(&base, &base) && !constant_time_eq(&base, &[0; 32]));
        assert!(!constant_time_eq(&base, &base[..31]));
        assert_eq!(password_key("111111", true), md5_digest(b"111111").to_vec());
        assert_eq!(password_key("111111", false), b"111111".to_vec());
    }
}
