//! Length-prefixed, versioned frames with a hard size limit.
//!
//! Decoding never panics and never allocates more than [`MAX_FRAME_BYTES`]: the length is
//! checked before the body buffer is sized. Every error names what was wrong so the caller can
//! log it with the peer's address and close only that connection.

use serde::{de::DeserializeOwned, Serialize};
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of the frame layout and of every message enum. Bumped on any incompatible change.
///
/// 2: master replies to clients are `client::Answer` (term + result), master frames to
/// chunkservers are `cs::FromMaster` (term + message), `ClientOp::WhoLeads`, `LeaderHint`.
/// 3: `ClientOp::Hello` carries the session open `token` (exactly-once session opens);
/// chunkservers register with every master (`MasterToCs::Hello`, `Copy`/`Gone` reports).
/// 4: `LeaderHint` and `ClusterStatus` carry the master's `cluster_id` (clients check it).
/// 5: `ClusterStatus` carries the chunk matrix, the stable count and the long work under way;
/// `ClientOp::ReadDir` may continue after a name.
/// 6: exports: `ClientOp::Challenge`, `Hello` carries a password proof instead of the
/// password, `Status::BadPassword`.
/// 7: `Status::TooManyOpen` (a session's cap on open files).
pub const PROTOCOL_VERSION: u8 = 7;

/// Largest frame body (everything after the 4-byte length) we accept or send.
///
/// 8 MiB holds the largest data message (a few MiB of chunk blocks plus header) with room to
/// spare while keeping a hostile peer's cost bounded.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// Bytes of header after the length prefix: version (1) and request id (8).
pub const HEADER_BYTES: usize = 1 + 8;

const _: () = assert!(MAX_FRAME_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_FRAME_BYTES > 4 << 20, "a frame must hold a 4 MiB data payload");

/// One decoded frame: the request id and the typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<T> {
    pub request_id: u64,
    pub body: T,
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than its {min}-byte header")]
    TooShort { len: usize, min: usize },
    #[error("frame has protocol version {got}, this build speaks version {want}")]
    BadVersion { got: u8, want: u8 },
    #[error("frame body does not decode as {what}: {reason}")]
    Garbage { what: &'static str, reason: String },
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("connection closed")]
    Closed,
    #[error("sent nothing for {limit:?} (a handshake or heartbeat was due)")]
    Silent { limit: std::time::Duration },
    #[error("a started frame was not complete within {limit:?} (too slow a sender)")]
    TimedOut { limit: std::time::Duration },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// True when the peer simply went away between frames (not worth a warning).
    pub fn is_clean_close(&self) -> bool {
        matches!(self, FrameError::Closed)
    }
}

/// Encodes `body` as a complete frame (length prefix included) appended to `out`.
pub fn encode<T: Serialize>(
    request_id: u64,
    body: &T,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(&request_id.to_be_bytes());
    if let Err(e) = postcard::to_extend(body, AppendTo(out)) {
        out.truncate(start);
        return Err(FrameError::Garbage { what: short_type_name::<T>(), reason: e.to_string() });
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME_BYTES {
        out.truncate(start);
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Lets postcard append to a caller's buffer without taking ownership of it.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Extend<u8> for AppendTo<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

/// Checks a length prefix before anything is allocated for the body.
pub fn check_len(len: usize) -> Result<(), FrameError> {
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    if len < HEADER_BYTES {
        return Err(FrameError::TooShort { len, min: HEADER_BYTES });
    }
    Ok(())
}

/// Decodes a frame body (everything after the length prefix).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<Frame<T>, FrameError> {
    check_len(body.len())?;
    if body[0] != PROTOCOL_VERSION {
        return Err(FrameError::BadVersion { got: body[0], want: PROTOCOL_VERSION });
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[1..9]);
    let request_id = u64::from_be_bytes(id);
    let (value, rest): (T, &[u8]) = postcard::take_from_bytes(&body[HEADER_BYTES..])
        .map_err(|e| FrameError::Garbage { what: short_type_name::<T>(), reason: e.to_string() })?;
    if !rest.is_empty() {
        return Err(FrameError::Garbage {
            what: short_type_name::<T>(),
            reason: format!("{} trailing bytes after the message", rest.len()),
        });
    }
    Ok(Frame { request_id, body: value })
}

/// Decodes one frame from the front of `buf`, if a whole one is there.
///
/// Returns `Ok(None)` when more bytes are needed, otherwise the frame and how many bytes it used.
pub fn decode<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(Frame<T>, usize)>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    check_len(len)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = decode_body(&buf[4..4 + len])?;
    Ok(Some((frame, 4 + len)))
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Reads one frame from an async stream.
///
/// `Closed` means the peer closed cleanly between frames; `Truncated` means mid-frame.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<Frame<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut buf = Vec::new();
    FrameReader::read_into(reader, &mut buf).await?;
    decode_body(&buf)
}

/// Writes one frame to an async stream (no flush: callers batch and flush).
pub async fn write_frame<W, T>(writer: &mut W, request_id: u64, body: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut out = Vec::new();
    encode(request_id, body, &mut out)?;
    writer.write_all(&out).await?;
    Ok(())
}

/// Reads raw frame bodies, reusing one buffer between frames.
pub struct FrameReader;

impl FrameReader {
    /// Reads the next frame body (without its length prefix) into `buf`.
    pub async fn read_into<R: AsyncRead + Unpin>(
        reader: &mut R,
        buf: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let mut len_bytes = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = reader.read(&mut len_bytes[got..]).await?;
            if n == 0 {
                return Err(if got == 0 { FrameError::Closed } else { FrameError::Truncated });
            }
            got += n;
        }
        let len = u32::from_be_bytes(len_bytes) as usize;
        check_len(len)?;
        // The buffer grows as bytes arrive, never to the declared length up front: a peer that
        // announces 8 MiB and sends nothing costs us nothing (10,000 of them would otherwise
        // hold 80 GB). `read_to_end` fills spare capacity without zeroing it, and a reused
        // buffer keeps the capacity of the largest frame seen, so steady traffic allocates once.
        buf.clear();
        let got = (&mut *reader).take(len as u64).read_to_end(buf).await?;
        if got < len {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    /// [`read_into`](Self::read_into) with two deadlines: the frame's first byte must come
    /// within `wait` (when given: a handshake, or a port where silence means a dead peer), and
    /// the whole frame within `finish` of its first byte, so a client that sends a byte a second
    /// (slow loris) is cut off instead of holding a connection and its buffer forever.
    pub async fn read_within<R: AsyncRead + Unpin>(
        reader: &mut tokio::io::BufReader<R>,
        buf: &mut Vec<u8>,
        wait: Option<std::time::Duration>,
        finish: std::time::Duration,
    ) -> Result<(), FrameError> {
        use tokio::io::AsyncBufReadExt;
        let first_byte = async {
            match reader.fill_buf().await {
                Ok([]) => Err(FrameError::Closed),
                Ok(_) => Ok(()),
                Err(e) => Err(FrameError::Io(e)),
            }
        };
        match wait {
            Some(limit) => tokio::time::timeout(limit, first_byte)
                .await
                .map_err(|_| FrameError::Silent { limit })??,
            None => first_byte.await?,
        }
        tokio::time::timeout(finish, Self::read_into(reader, buf))
            .await
            .map_err(|_| FrameError::TimedOut { limit: finish })?
    }
}

/// A peer's address and role, for error messages that name who sent the bad frame.
#[derive(Debug, Clone)]
pub struct PeerName(pub String);

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
