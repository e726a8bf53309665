//! Chunk tokens: the master's signed permission to read or write one chunk on the data port
//! (9422). With a cluster secret (`secret_file`), a chunkserver serves a request only with a
//! token for that chunk, that version (or any version, for a replication `Stat`) and that
//! access, which has not expired: the master hands one out with every chunk location and
//! every write chain (`ReadChunk`, `WriteChunk`), a chunkserver replicating a copy makes its
//! own (it holds the key), and a chain write carries the client's token down the chain. A
//! client that never asked the master, or whose session the master refused, gets nothing.
//!
//! A token is `HMAC-SHA-256(key, chunk id, version, access, expiry)` cut to 16 bytes, with the
//! expiry in milliseconds of the Unix clock; the checking chunkserver compares it with its
//! own clock, so the cluster's clocks must agree to within the token's lifetime (NTP).

use crate::auth::{constant_time_eq, hmac_sha256};
use crate::cluster_key::ClusterKey;
use crate::types::{ChunkId, ServerAddr};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a token is good for. Long enough that a mount's cached location rarely needs
/// a new one; short enough that a token seen on the wire is soon worthless.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// The version a `Stat` token names: any version of the chunk.
pub const ANY_VERSION: u32 = u32::MAX;

/// What a token allows. `Write` covers `Write` and `Sync` along the chain it was signed for;
/// `Read` covers `Read` and `Stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
}

/// See the module documentation. The default (all zero) is "no token".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkToken {
    /// Unix time in ms after which the token is refused.
    pub expires_ms: u64,
    pub mac: [u8; 16],
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no chunk token (a client that did not get this chunk from the master)")]
    Missing,
    #[error(
        "the chunk token expired {0} ms ago (or this chunkserver's clock is ahead: check NTP)"
    )]
    Expired(u64),
    #[error("the chunk token is not the master's for this chunk, version and access (forged, or another cluster's key)")]
    Forged,
}

/// Milliseconds of the Unix clock now.
pub fn unix_now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl ChunkToken {
    /// True while the token is good for at least `margin` more (by this host's clock).
    pub fn fresh_for(&self, margin: Duration, now_ms: u64) -> bool {
        self.expires_ms >= now_ms.saturating_add(margin.as_millis() as u64)
    }
}

/// What a token is signed for: a chunk version, an access and, for writes, the chain.
struct Grant<'a> {
    chunk_id: ChunkId,
    version: u32,
    access: Access,
    chain: &'a [ServerAddr],
}

fn mac(key: &ClusterKey, grant: &Grant, expires_ms: u64) -> [u8; 16] {
    let mut message = Vec::with_capacity(64);
    message.extend_from_slice(b"mfsha chunk token v1\0");
    message.extend_from_slice(&grant.chunk_id.to_be_bytes());
    message.extend_from_slice(&grant.version.to_be_bytes());
    message.push(match grant.access {
        Access::Read => b'r',
        Access::Write => b'w',
    });
    message.extend_from_slice(&expires_ms.to_be_bytes());
    for server in grant.chain {
        // Length-prefixed, so no two chains give the same bytes.
        message.extend_from_slice(&(server.host.len() as u64).to_be_bytes());
        message.extend_from_slice(server.host.as_bytes());
        message.extend_from_slice(&server.port.to_be_bytes());
    }
    let full = hmac_sha256(key.bytes(), &message);
    full[..16].try_into().expect("16 of 32 bytes")
}

impl ClusterKey {
    /// A token to read `chunk_id` at `version` (or at any, [`ANY_VERSION`]), good for
    /// [`TOKEN_LIFETIME`] from now.
    pub fn sign_read(&self, chunk_id: ChunkId, version: u32) -> ChunkToken {
        self.sign(&Grant { chunk_id, version, access: Access::Read, chain: &[] })
    }

    /// A token to write `chunk_id` at `version` along `chain` (the whole chain, in order).
    pub fn sign_write(&self, chunk_id: ChunkId, version: u32, chain: &[ServerAddr]) -> ChunkToken {
        self.sign(&Grant { chunk_id, version, access: Access::Write, chain })
    }

    fn sign(&self, grant: &Grant) -> ChunkToken {
        let expires_ms = unix_now_ms() + TOKEN_LIFETIME.as_millis() as u64;
        ChunkToken { expires_ms, mac: mac(self, grant, expires_ms) }
    }

    /// Checks at Unix time `now_ms` that `token` allows reading `chunk_id` at `version` (a
    /// token for [`ANY_VERSION`] passes for every version).
    pub fn check_read(
        &self,
        token: &ChunkToken,
        chunk_id: ChunkId,
        version: u32,
        now_ms: u64,
    ) -> Result<(), TokenError> {
        let exact = Grant { chunk_id, version, access: Access::Read, chain: &[] };
        let any = Grant { version: ANY_VERSION, ..exact };
        self.check(token, &[exact, any], now_ms)
    }

    /// Checks at Unix time `now_ms` that `token` allows writing `chunk_id` at `version`
    /// along `chain`.
    pub fn check_write(
        &self,
        token: &ChunkToken,
        chunk_id: ChunkId,
        version: u32,
        chain: &[ServerAddr],
        now_ms: u64,
    ) -> Result<(), TokenError> {
        self.check(token, &[Grant { chunk_id, version, access: Access::Write, chain }], now_ms)
    }

    fn check(&self, token: &ChunkToken, grants: &[Grant], now_ms: u64) -> Result<(), TokenError> {
        if *token == ChunkToken::default() {
            return Err(TokenError::Missing);
        }
        let signed =
            grants.iter().any(|g| constant_time_eq(&token.mac, &mac(self, g, token.expires_ms)));
        if !signed {
            return Err(TokenError::Forged);
        }
        if token.expires_ms < now_ms {
            return Err(TokenError::Expired(now_ms - token.expires_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(n: u16) -> ServerAddr {
        ServerAddr { host: "127.0.0.1".into(), port: 9422 + n }
    }

    #[test]
    fn a_read_token_allows_its_chunk_and_version_until_it_expires() {
        let key = ClusterKey::generate();
        let now = unix_now_ms();
        let read = key.sign_read(7, 3);
        assert_eq!(key.check_read(&read, 7, 3, now), Ok(()));
        assert_eq!(key.check_read(&read, 8, 3, now), Err(TokenError::Forged));
        assert_eq!(key.check_read(&read, 7, 4, now), Err(TokenError::Forged));
        assert_eq!(key.check_write(&read, 7, 3, &[], now), Err(TokenError::Forged));
        let later = read.expires_ms + 5;
        assert_eq!(key.check_read(&read, 7, 3, later), Err(TokenError::Expired(5)));
        let stat = key.sign_read(7, ANY_VERSION);
        assert_eq!(key.check_read(&stat, 7, 9, now), Ok(()));
    }

    #[test]
    fn a_write_token_holds_only_for_the_chain_it_was_signed_for() {
        let key = ClusterKey::generate();
        let now = unix_now_ms();
        let chain = [server(1), server(2), server(3)];
        let write = key.sign_write(7, 4, &chain);
        assert_eq!(key.check_write(&write, 7, 4, &chain, now), Ok(()));
        let elsewhere = [server(1), server(9), server(3)];
        assert_eq!(key.check_write(&write, 7, 4, &elsewhere, now), Err(TokenError::Forged));
        assert_eq!(key.check_write(&write, 7, 4, &chain[..2], now), Err(TokenError::Forged));
        assert_eq!(key.check_read(&write, 7, 4, now), Err(TokenError::Forged));
    }

    #[test]
    fn no_token_a_moved_expiry_or_another_key_is_refused() {
        let key = ClusterKey::generate();
        let now = unix_now_ms();
        let none = ChunkToken::default();
        assert_eq!(key.check_read(&none, 7, 3, now), Err(TokenError::Missing));
        let mut stretched = key.sign_read(7, 3);
        stretched.expires_ms += 1;
        assert_eq!(key.check_read(&stretched, 7, 3, now), Err(TokenError::Forged));
        let foreign = ClusterKey::generate().sign_read(7, 3);
        assert_eq!(key.check_read(&foreign, 7, 3, now), Err(TokenError::Forged));
        assert!(key.sign_read(7, 3).fresh_for(Duration::from_secs(60), now));
    }
}
