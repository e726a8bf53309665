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
use crate::types::ChunkId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a token is good for. Long enough that a mount's cached location rarely needs
/// a new one; short enough that a token seen on the wire is soon worthless.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);
/// The version a `Stat` token names: any version of the chunk.
pub const ANY_VERSION: u32 = u32::MAX;

/// What a token allows. `Write` covers `Write` and `Sync` (and reads: the writer may read
/// back what it wrote); `Read` covers `Read` and `Stat`.
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

fn mac(
    key: &ClusterKey,
    chunk_id: ChunkId,
    version: u32,
    access: Access,
    expires_ms: u64,
) -> [u8; 16] {
    let mut message = Vec::with_capacity(48);
    message.extend_from_slice(b"mfsha chunk token v1\0");
    message.extend_from_slice(&chunk_id.to_be_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.push(match access {
        Access::Read => b'r',
        Access::Write => b'w',
    });
    message.extend_from_slice(&expires_ms.to_be_bytes());
    let full = hmac_sha256(key.bytes(), &message);
    full[..16].try_into().expect("16 of 32 bytes")
}

impl ClusterKey {
    /// A token for `access` to `chunk_id` at `version`, good for [`TOKEN_LIFETIME`] from now.
    pub fn sign_chunk(&self, chunk_id: ChunkId, version: u32, access: Access) -> ChunkToken {
        let expires_ms = unix_now_ms() + TOKEN_LIFETIME.as_millis() as u64;
        ChunkToken { expires_ms, mac: mac(self, chunk_id, version, access, expires_ms) }
    }

    /// Checks that `token` allows `access` to `chunk_id` at `version` at Unix time `now_ms`.
    /// A write token passes for reads too; a token for [`ANY_VERSION`] passes for every
    /// version when only reading.
    pub fn check_chunk(
        &self,
        token: &ChunkToken,
        chunk_id: ChunkId,
        version: u32,
        access: Access,
        now_ms: u64,
    ) -> Result<(), TokenError> {
        if *token == ChunkToken::default() {
            return Err(TokenError::Missing);
        }
        let mut allowed = vec![(version, Access::Write)];
        if access == Access::Read {
            allowed.extend([(version, Access::Read), (ANY_VERSION, Access::Read)]);
        }
        let signed = allowed.into_iter().any(|(v, a)| {
            constant_time_eq(&token.mac, &mac(self, chunk_id, v, a, token.expires_ms))
        });
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

    #[test]
    fn a_token_allows_its_chunk_version_and_access_until_it_expires() {
        let key = ClusterKey::generate();
        let now = unix_now_ms();
        let read = key.sign_chunk(7, 3, Access::Read);
        assert_eq!(key.check_chunk(&read, 7, 3, Access::Read, now), Ok(()));
        assert_eq!(key.check_chunk(&read, 7, 3, Access::Write, now), Err(TokenError::Forged));
        assert_eq!(key.check_chunk(&read, 8, 3, Access::Read, now), Err(TokenError::Forged));
        assert_eq!(key.check_chunk(&read, 7, 4, Access::Read, now), Err(TokenError::Forged));
        let later = read.expires_ms + 5;
        assert_eq!(key.check_chunk(&read, 7, 3, Access::Read, later), Err(TokenError::Expired(5)));
        let write = key.sign_chunk(7, 4, Access::Write);
        assert_eq!(key.check_chunk(&write, 7, 4, Access::Write, now), Ok(()));
        assert_eq!(key.check_chunk(&write, 7, 4, Access::Read, now), Ok(()), "a writer may read");
        let stat = key.sign_chunk(7, ANY_VERSION, Access::Read);
        assert_eq!(key.check_chunk(&stat, 7, 9, Access::Read, now), Ok(()));
        assert_eq!(key.check_chunk(&stat, 7, 9, Access::Write, now), Err(TokenError::Forged));
    }

    #[test]
    fn no_token_a_moved_expiry_or_another_key_is_refused() {
        let key = ClusterKey::generate();
        let now = unix_now_ms();
        let none = ChunkToken::default();
        assert_eq!(key.check_chunk(&none, 7, 3, Access::Read, now), Err(TokenError::Missing));
        let mut stretched = key.sign_chunk(7, 3, Access::Read);
        stretched.expires_ms += 1;
        assert_eq!(key.check_chunk(&stretched, 7, 3, Access::Read, now), Err(TokenError::Forged));
        let foreign = ClusterKey::generate().sign_chunk(7, 3, Access::Read);
        assert_eq!(key.check_chunk(&foreign, 7, 3, Access::Read, now), Err(TokenError::Forged));
        assert!(key.sign_chunk(7, 3, Access::Read).fresh_for(Duration::from_secs(60), now));
    }
}
