//! The cluster secret between daemons: chunkservers (9420), metaloggers (9419) and peer
//! masters (9423) prove they hold the cluster's key before anything else is read from them,
//! and the side they called proves it too (so a daemon never obeys an impostor master).
//!
//! The key is 32 random bytes in a file every node of the cluster names as `secret_file`
//! (`mfsha bootstrap` makes it; an operator copies it to every host, mode 0600). The
//! handshake is a mutual challenge–response; the key never crosses the network:
//!
//! ```text
//! caller → callee   "MFSHAKEY" version port nonce_c(32)
//! callee → caller   "MFSHAKEY" nonce_s(32) HMAC(key, "callee" port nonce_c nonce_s)
//! caller → callee   HMAC(key, "caller" port nonce_c nonce_s)
//! callee → caller   verdict (0 accepted, 1 refused)
//! ```
//!
//! The port is in both proofs, so an answer overheard on one port is worth nothing on another;
//! fresh nonces on both sides make a recorded exchange worthless. This authenticates the
//! connection's two ends when it opens; it does not encrypt or sign what follows (an attacker
//! who can rewrite packets in flight needs TLS, see docs/security.md).

use crate::auth::{constant_time_eq, hmac_sha256};
use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 8] = b"MFSHAKEY";
const VERSION: u8 = 1;
/// The first line of a key file, before the key in hex.
const FILE_HEADER: &str = "mfsha cluster key v1";
/// The whole handshake must be over this soon (a caller that stalls is cut off).
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// The cluster's secret. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// A key file that cannot be used, naming the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the cluster key file {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    #[error("the cluster key file {path} is readable by other users (mode {mode:o}): run `chmod 600 {path}`")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path} is not an mfsha cluster key file (expected \"{FILE_HEADER}\" and 64 hex digits): copy it again from the node where `mfsha bootstrap` made it")]
    Malformed { path: PathBuf },
    #[error("cannot write the cluster key file {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
    #[error("{path} exists already: a cluster key is never overwritten (remove it first if you mean to replace the cluster's key on every node)")]
    Exists { path: PathBuf },
}

impl ClusterKey {
    /// The key's bytes, for the HMACs made with it (here and in `chunk_token`).
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A new random key.
    pub fn generate() -> ClusterKey {
        ClusterKey(rand::random())
    }

    /// Reads the key file at `path`, which only its owner may read.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyFileError> {
        let read_error = |cause| KeyFileError::Read { path: path.to_path_buf(), cause };
        let mode = std::fs::metadata(path).map_err(read_error)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Exposed { path: path.to_path_buf(), mode: mode & 0o777 });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        ClusterKey::parse(&text).ok_or_else(|| KeyFileError::Malformed { path: path.to_path_buf() })
    }

    fn parse(text: &str) -> Option<ClusterKey> {
        let mut lines = text.lines();
        if lines.next()?.trim() != FILE_HEADER {
            return None;
        }
        let hex = lines.next()?.trim();
        if hex.len() != 64 || lines.any(|l| !l.trim().is_empty()) {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ClusterKey(key))
    }

    fn to_file_text(&self) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{FILE_HEADER}\n{hex}\n")
    }

    /// Writes this key to a new file at `path` (mode 0600): a temporary file, fsynced, renamed
    /// into place, the directory fsynced. An existing file is never replaced.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyFileError> {
        let write_error = |cause| KeyFileError::Write { path: path.to_path_buf(), cause };
        if path.exists() {
            return Err(KeyFileError::Exists { path: path.to_path_buf() });
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name =
            path.file_name().ok_or_else(|| write_error(io::ErrorKind::InvalidInput.into()))?;
        let temp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(write_error)?;
        let written = file.write_all(self.to_file_text().as_bytes()).and_then(|()| file.sync_all());
        if let Err(cause) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(write_error(cause));
        }
        // A hard link, not a rename: it fails if the name appeared meanwhile, so a key made by
        // someone else at the same moment is not replaced either.
        let linked = std::fs::hard_link(&temp, path);
        let _ = std::fs::remove_file(&temp);
        match linked {
            Err(cause) if cause.kind() == io::ErrorKind::AlreadyExists => {
                return Err(KeyFileError::Exists { path: path.to_path_buf() })
            }
            other => other.map_err(write_error)?,
        }
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(write_error)
    }
}

/// Which port a handshake is for: bound into both proofs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedPort {
    /// Raft between masters and the witness (9423).
    Peer,
    /// Chunkserver to master (9420).
    Chunkserver,
    /// Metalogger to master (9419).
    Logger,
}

impl KeyedPort {
    fn code(self) -> u8 {
        match self {
            KeyedPort::Peer => 1,
            KeyedPort::Chunkserver => 2,
            KeyedPort::Logger => 3,
        }
    }

    fn from_code(code: u8) -> Option<KeyedPort> {
        [KeyedPort::Peer, KeyedPort::Chunkserver, KeyedPort::Logger]
            .into_iter()
            .find(|port| port.code() == code)
    }
}

/// Why a handshake failed, said for an operator.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the other side did not prove the cluster secret: it has no secret_file, another cluster's key, or is not an mfsha daemon")]
    NotKeyed,
    #[error("the other side speaks cluster-key handshake version {0}, this daemon version {VERSION}: upgrade the older one")]
    Version(u8),
    #[error("the caller asked for the {theirs:?} port, this is the {ours:?} port: check the address it was given")]
    WrongPort { theirs: Option<KeyedPort>, ours: KeyedPort },
    #[error("its proof of the cluster secret is wrong: it holds another key (check that its secret_file is this cluster's)")]
    WrongProof,
    #[error(
        "it refused our proof of the cluster secret: our secret_file is not its cluster's key"
    )]
    Refused,
    #[error("no proof of the cluster secret within {0:?}: the other side has no secret_file (both sides need the same one), or is not an mfsha daemon")]
    Timeout(Duration),
    #[error("the connection failed during the cluster-key handshake: {0} (if the other side has no secret_file, it closes at once: both sides need the same one)")]
    Io(#[from] io::Error),
}

fn proof(
    key: &ClusterKey,
    role: &[u8],
    port: KeyedPort,
    ours: &[u8; 32],
    theirs: &[u8; 32],
) -> [u8; 32] {
    let mut message = Vec::with_capacity(96);
    message.extend_from_slice(b"mfsha cluster key v1 ");
    message.extend_from_slice(role);
    message.push(port.code());
    message.extend_from_slice(ours);
    message.extend_from_slice(theirs);
    hmac_sha256(&key.0, &message)
}

/// The calling side: proves `key` to the daemon on `port` and checks its proof back. With no
/// key (no `secret_file` configured) there is nothing to prove.
pub async fn prove<S>(
    stream: &mut S,
    key: Option<&ClusterKey>,
    port: KeyedPort,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(key) = key else { return Ok(()) };
    within_limit(async {
        let nonce_c: [u8; 32] = rand::random();
        let mut hello = Vec::with_capacity(42);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&[VERSION, port.code()]);
        hello.extend_from_slice(&nonce_c);
        stream.write_all(&hello).await?;
        let mut answer = [0u8; 72];
        stream.read_exact(&mut answer).await?;
        if &answer[..8] != MAGIC {
            return Err(HandshakeError::NotKeyed);
        }
        let nonce_s: [u8; 32] = answer[8..40].try_into().expect("32 bytes");
        let expected = proof(key, b"callee", port, &nonce_c, &nonce_s);
        if !constant_time_eq(&answer[40..72], &expected) {
            // A proof that cannot be right, so the callee's log says why the caller went away.
            let _ = stream.write_all(&[0u8; 32]).await;
            return Err(HandshakeError::WrongProof);
        }
        stream.write_all(&proof(key, b"caller", port, &nonce_c, &nonce_s)).await?;
        let mut verdict = [0u8; 1];
        stream.read_exact(&mut verdict).await?;
        match verdict[0] {
            0 => Ok(()),
            _ => Err(HandshakeError::Refused),
        }
    })
    .await
}

/// The called side: checks that the caller on `port` holds `key`, proving it too; on a wrong
/// proof the caller is told so before the error is returned. With no key nothing is checked.
pub async fn verify<S>(
    stream: &mut S,
    key: Option<&ClusterKey>,
    port: KeyedPort,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(key) = key else { return Ok(()) };
    within_limit(async {
        let mut hello = [0u8; 42];
        match stream.read_exact(&mut hello[..8]).await {
            // Gone without a word: a daemon without the secret, waiting for us to speak first.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(HandshakeError::NotKeyed)
            }
            other => other?,
        };
        if &hello[..8] != MAGIC {
            return Err(HandshakeError::NotKeyed);
        }
        stream.read_exact(&mut hello[8..]).await?;
        if hello[8] != VERSION {
            return Err(HandshakeError::Version(hello[8]));
        }
        if hello[9] != port.code() {
            return Err(HandshakeError::WrongPort {
                theirs: KeyedPort::from_code(hello[9]),
                ours: port,
            });
        }
        let nonce_c: [u8; 32] = hello[10..42].try_into().expect("32 bytes");
        let nonce_s: [u8; 32] = rand::random();
        let mut answer = Vec::with_capacity(72);
        answer.extend_from_slice(MAGIC);
        answer.extend_from_slice(&nonce_s);
        answer.extend_from_slice(&proof(key, b"callee", port, &nonce_c, &nonce_s));
        stream.write_all(&answer).await?;
        let mut theirs = [0u8; 32];
        stream.read_exact(&mut theirs).await?;
        let accepted = constant_time_eq(&theirs, &proof(key, b"caller", port, &nonce_c, &nonce_s));
        let told = stream.write_all(&[u8::from(!accepted)]).await;
        match accepted {
            true => Ok(told?),
            // Refused whether or not the caller is still there to hear it.
            false => Err(HandshakeError::WrongProof),
        }
    })
    .await
}

async fn within_limit(
    handshake: impl std::future::Future<Output = Result<(), HandshakeError>>,
) -> Result<(), HandshakeError> {
    match tokio::time::timeout(HANDSHAKE_LIMIT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Timeout(HANDSHAKE_LIMIT)),
    }
}

/// Loads the key a daemon's configuration names, or says once at start that the daemon ports
/// are open to any caller.
pub fn load_configured(
    path: Option<&Path>,
    daemon: &str,
) -> Result<Option<ClusterKey>, KeyFileError> {
    match path {
        Some(path) => ClusterKey::load(path).map(Some),
        None => {
            tracing::warn!(
                "{daemon}: no secret_file configured: the chunkserver, metalogger and peer \
                 ports trust any caller that can reach them (run `mfsha bootstrap` with \
                 secret_file set, copy the key to every node; see docs/security.md)"
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn handshake(
        caller: ClusterKey,
        callee: ClusterKey,
        ports: (KeyedPort, KeyedPort),
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(256);
        let called = tokio::spawn(async move { verify(&mut b, Some(&callee), ports.1).await });
        let calling = prove(&mut a, Some(&caller), ports.0).await;
        (calling, called.await.unwrap())
    }

    #[tokio::test]
    async fn the_same_key_passes_both_ways() {
        let key = ClusterKey::generate();
        let both = (KeyedPort::Chunkserver, KeyedPort::Chunkserver);
        let (calling, called) = handshake(key.clone(), key, both).await;
        assert!(calling.is_ok() && called.is_ok(), "{calling:?} {called:?}");
    }

    #[tokio::test]
    async fn another_key_is_refused_on_both_sides() {
        let both = (KeyedPort::Peer, KeyedPort::Peer);
        let (calling, called) =
            handshake(ClusterKey::generate(), ClusterKey::generate(), both).await;
        // The caller checks the callee's proof first and stops there, sending a proof that
        // cannot pass, so the callee's log says so too.
        assert!(matches!(calling, Err(HandshakeError::WrongProof)), "{calling:?}");
        assert!(matches!(called, Err(HandshakeError::WrongProof)), "{called:?}");
    }

    #[tokio::test]
    async fn a_proof_for_another_port_is_refused() {
        let key = ClusterKey::generate();
        let ports = (KeyedPort::Logger, KeyedPort::Chunkserver);
        let (calling, called) = handshake(key.clone(), key, ports).await;
        assert!(matches!(called, Err(HandshakeError::WrongPort { .. })), "{called:?}");
        assert!(calling.is_err());
    }

    #[tokio::test]
    async fn a_caller_without_the_handshake_is_named_as_such() {
        let (mut a, mut b) = tokio::io::duplex(256);
        a.write_all(b"\x00\x00\x00\x10 a plain frame, no key").await.unwrap();
        let called = verify(&mut b, Some(&ClusterKey::generate()), KeyedPort::Peer).await;
        assert!(matches!(called, Err(HandshakeError::NotKeyed)), "{called:?}");
    }

    #[tokio::test]
    async fn a_replayed_caller_proof_fails_against_a_fresh_nonce() {
        // Record a good exchange, then replay the caller's bytes on a new connection.
        let key = ClusterKey::generate();
        let (mut a, mut b) = tokio::io::duplex(256);
        let callee_key = key.clone();
        let called = tokio::spawn(async move {
            verify(&mut b, Some(&callee_key), KeyedPort::Peer).await.unwrap();
            b
        });
        prove(&mut a, Some(&key), KeyedPort::Peer).await.unwrap();
        drop(called.await.unwrap());
        // A replay knows only what the caller sent: the hello and a proof for old nonces.
        let (mut a, mut b) = tokio::io::duplex(256);
        let called = tokio::spawn(async move { verify(&mut b, Some(&key), KeyedPort::Peer).await });
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&[VERSION, KeyedPort::Peer.code()]);
        hello.extend_from_slice(&[9u8; 32]);
        a.write_all(&hello).await.unwrap();
        let mut answer = [0u8; 72];
        a.read_exact(&mut answer).await.unwrap();
        a.write_all(&[7u8; 32]).await.unwrap();
        let mut verdict = [0u8; 1];
        a.read_exact(&mut verdict).await.unwrap();
        assert_eq!(verdict, [1], "refused");
        assert!(matches!(called.await.unwrap(), Err(HandshakeError::WrongProof)));
    }

    #[test]
    fn key_files_are_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let key = ClusterKey::generate();
        key.write_new(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ClusterKey::load(&path).unwrap(), key);
        let again = ClusterKey::generate().write_new(&path).unwrap_err();
        assert!(matches!(again, KeyFileError::Exists { .. }), "{again}");
        assert_eq!(ClusterKey::load(&path).unwrap(), key, "never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exposed = ClusterKey::load(&path).unwrap_err();
        assert!(exposed.to_string().contains("chmod 600"), "{exposed}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "mfsha cluster key v1\nnot hex\n").unwrap();
        let bad = ClusterKey::load(&path).unwrap_err();
        assert!(bad.to_string().contains("is not an mfsha cluster key file"), "{bad}");
        assert_eq!(format!("{key:?}"), "ClusterKey(..)", "Debug shows no key");
    }
}
