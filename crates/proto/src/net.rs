//! Connecting to a daemon so that a dead peer is noticed in about a second.
//!
//! A master that dies with its host sends no FIN: without help the kernel keeps retrying an
//! unacknowledged write for minutes, and an idle connection forever. [`connect`] bounds the
//! connect itself and [`watch_liveness`] sets, on Linux, TCP keepalive probes after
//! [`LIVENESS`] of silence and `TCP_USER_TIMEOUT` = [`LIVENESS`]: data (or a probe) left
//! unacknowledged that long fails the connection with `ETIMEDOUT`. Followers of the master
//! group (mounts, chunkservers, metaloggers, tools) use both, so a leader's death costs them
//! about a second before they try the next master.

use std::io;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a peer may leave our data unacknowledged (or stay silent under probing) before
/// the connection counts as dead.
pub const LIVENESS: Duration = Duration::from_secs(1);
/// How long a connection attempt to a master may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to `addr` ("host:port") within `limit`, with [`watch_liveness`] applied.
pub async fn connect(addr: &str, limit: Duration) -> io::Result<TcpStream> {
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(connected) => connected?,
        Err(_) => {
            let ms = limit.as_millis();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer in {ms} ms")));
        }
    };
    stream.set_nodelay(true)?;
    watch_liveness(&stream, LIVENESS)?;
    Ok(stream)
}

/// Makes the kernel fail `stream` once the peer has left data or keepalive probes
/// unacknowledged for about `limit` (see the module documentation).
pub fn watch_liveness(stream: &TcpStream, limit: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let secs = limit.as_secs().max(1) as libc::c_int;
    let ms = limit.as_millis().clamp(1, libc::c_uint::MAX as u128) as libc::c_uint;
    set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1 as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 1 as libc::c_int)?;
    set(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

fn set<T: Copy>(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: T,
) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed; `fd` is an open socket
    // owned by the caller's TcpStream.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connect_sets_keepalive_and_the_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stream = connect(&addr, CONNECT_TIMEOUT).await.unwrap();
        use std::os::fd::AsRawFd;
        let mut value: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
        // SAFETY: value and len are valid for the call.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&mut value as *mut libc::c_uint).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(value, 1000);
    }

    #[tokio::test]
    async fn a_refused_connect_fails_at_once() {
        let addr = {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let started = std::time::Instant::now();
        let error = connect(&addr, CONNECT_TIMEOUT).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        assert!(started.elapsed() < CONNECT_TIMEOUT);
    }
}
