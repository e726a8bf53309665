//! Request/response over one TCP connection, with many requests in flight.
//!
//! [`serve`] runs the server side of a connection: it reads request frames, runs a handler for
//! each (up to `max_in_flight` at once) and writes each reply in a frame carrying the request's
//! id. [`RpcClient`] is the other side: `call` sends a request and waits for the reply with the
//! same id. Both batch outgoing frames, so a burst of small replies costs few syscalls.
//!
//! A bad frame (too large, wrong version, garbage) ends only that connection, with an error
//! naming the peer and the reason; the caller logs it.

use crate::frame::{self, FrameError, FrameReader};
use serde::{de::DeserializeOwned, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Why a call or a served connection ended.
///
/// The cause is part of the message and deliberately not a `source()`: error reports that
/// print the chain (`{:#}`) would otherwise say it twice.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: std::io::Error },
    #[error("bad frame from {peer}: {cause}")]
    Frame { peer: String, cause: FrameError },
    #[error("connection to {peer} closed")]
    Closed { peer: String },
    #[error("no reply from {peer} within {ms} ms")]
    Timeout { peer: String, ms: u64 },
}

/// How long a served connection may keep us waiting (see [`FrameReader::read_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// The first frame (the handshake) must arrive this soon after connecting.
    pub first: Duration,
    /// Silence allowed between frames after the first; `None` where a legitimate peer may
    /// idle for hours (a mount's session).
    pub idle: Option<Duration>,
    /// A frame, once its first byte is here, must be complete this soon (slow loris).
    pub frame: Duration,
}

impl Default for Deadlines {
    /// 10 s for the handshake, 30 s for a frame (an 8 MiB frame at 280 KiB/s), no idle limit.
    fn default() -> Self {
        Deadlines { first: Duration::from_secs(10), idle: None, frame: Duration::from_secs(30) }
    }
}

/// Frames waiting to be written are flushed in batches of at most this many bytes.
const WRITE_BATCH_BYTES: usize = 1 << 20;

/// What a handler makes of one request: the reply at once, or a future to run in its own task.
///
/// Answering at once (a read from memory) saves spawning a task and a context switch per
/// request; anything that waits (a Raft proposal, disk I/O) must be `Later`, or it would
/// stall every other request on the connection.
pub enum Handled<Rep, Fut> {
    Now(Rep),
    Later(Fut),
}

/// Serves one connection until the peer closes it or sends a bad frame; every request runs
/// in its own task (see [`serve_inline`] for handlers that can answer some at once).
///
/// Returns `Ok(())` on a clean close, otherwise an error naming the peer and the reason.
pub async fn serve<Req, Rep, H, Fut>(
    stream: TcpStream,
    peer: String,
    max_in_flight: usize,
    handler: H,
) -> Result<(), RpcError>
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Rep> + Send + 'static,
{
    serve_with(stream, peer, max_in_flight, Deadlines::default(), handler).await
}

/// [`serve`] with the caller's [`Deadlines`].
pub async fn serve_with<Req, Rep, H, Fut>(
    stream: TcpStream,
    peer: String,
    max_in_flight: usize,
    deadlines: Deadlines,
    handler: H,
) -> Result<(), RpcError>
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Rep> + Send + 'static,
{
    let handler = move |req| Handled::Later(handler(req));
    serve_inline_with(stream, peer, max_in_flight, deadlines, handler).await
}

/// Like [`serve`], but the handler may answer a request at once ([`Handled::Now`]) on the
/// connection's reader task; only [`Handled::Later`] futures get a task (at most
/// `max_in_flight` at once). Uses the default [`Deadlines`].
pub async fn serve_inline<Req, Rep, H, Fut>(
    stream: TcpStream,
    peer: String,
    max_in_flight: usize,
    handler: H,
) -> Result<(), RpcError>
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Req) -> Handled<Rep, Fut> + Send + 'static,
    Fut: Future<Output = Rep> + Send + 'static,
{
    serve_inline_with(stream, peer, max_in_flight, Deadlines::default(), handler).await
}

/// [`serve_inline`] with the caller's [`Deadlines`].
pub async fn serve_inline_with<Req, Rep, H, Fut>(
    stream: TcpStream,
    peer: String,
    max_in_flight: usize,
    deadlines: Deadlines,
    handler: H,
) -> Result<(), RpcError>
where
    Req: DeserializeOwned + Send + 'static,
    Rep: Serialize + Send + 'static,
    H: Fn(Req) -> Handled<Rep, Fut> + Send + 'static,
    Fut: Future<Output = Rep> + Send + 'static,
{
    assert!(max_in_flight > 0);
    stream.set_nodelay(true).ok();
    let (read_half, write_half) = stream.into_split();
    let (reply_tx, reply_rx) = mpsc::channel::<(u64, Rep)>(max_in_flight);
    let writer = tokio::spawn(write_loop(write_half, reply_rx, peer.clone()));
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut reader = BufReader::with_capacity(64 << 10, read_half);
    let mut buf = Vec::new();
    let (mut wait, mut first) = (Some(deadlines.first), true);
    let result = loop {
        let read = FrameReader::read_within(&mut reader, &mut buf, wait, deadlines.frame).await;
        match read {
            Ok(()) => {}
            Err(e) if e.is_clean_close() => break Ok(()),
            // Idle after its handshake: closed like a clean close (the peer reconnects when it
            // has something to say); silent before it is an error worth a log line.
            Err(FrameError::Silent { .. }) if !first => {
                tracing::debug!(%peer, "closing an idle connection");
                break Ok(());
            }
            Err(e) => break Err(frame_error(&peer, e)),
        }
        (wait, first) = (deadlines.idle, false);
        let request = match frame::decode_body::<Req>(&buf) {
            Ok(frame) => frame,
            Err(e) => break Err(frame_error(&peer, e)),
        };
        let id = request.request_id;
        let future = match handler(request.body) {
            Handled::Now(reply) => {
                // Fails only when the writer is gone, i.e. the connection is dead.
                let _sent = reply_tx.send((id, reply)).await;
                continue;
            }
            Handled::Later(future) => future,
        };
        let permit = slots.clone().acquire_owned().await.expect("semaphore never closed");
        let reply_tx = reply_tx.clone();
        tokio::spawn(async move {
            let reply = future.await;
            // The writer only goes away when the connection is dead; the reply has nowhere to go.
            let _sent = reply_tx.send((id, reply)).await;
            drop(permit);
        });
    };
    drop(reply_tx);
    // Let replies already computed reach the peer before the connection is closed.
    let _ = writer.await;
    result
}

fn frame_error(peer: &str, source: FrameError) -> RpcError {
    RpcError::Frame { peer: peer.to_string(), cause: source }
}

/// Writes frames (replies on a server, requests on a client) as they come, coalescing
/// whatever is queued into one write; closes the sending side when the queue ends.
async fn write_loop<T: Serialize>(
    mut out: OwnedWriteHalf,
    mut rx: mpsc::Receiver<(u64, T)>,
    peer: String,
) {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some((id, body)) = rx.recv().await {
        encode_logged(id, &body, &mut buf, &peer);
        while buf.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok((id, body)) => encode_logged(id, &body, &mut buf, &peer),
                Err(_) => break,
            }
        }
        if let Err(e) = out.write_all(&buf).await {
            tracing::debug!(%peer, error = %e, "write failed; closing connection");
            return;
        }
        buf.clear();
    }
    let _shutdown = out.shutdown().await;
}

fn encode_logged<T: Serialize>(id: u64, body: &T, buf: &mut Vec<u8>, peer: &str) {
    if let Err(e) = frame::encode(id, body, buf) {
        // Only a reply larger than the frame limit gets here: a bug in the sender's bounds.
        tracing::error!(%peer, request_id = id, error = %e, "reply could not be encoded; dropped");
    }
}

type Pending<Rep> = Arc<Mutex<HashMap<u64, oneshot::Sender<Rep>>>>;

/// The client side of a request/response connection. Cheap to clone; clones share the socket.
pub struct RpcClient<Req, Rep> {
    peer: Arc<str>,
    next_id: Arc<AtomicU64>,
    pending: Pending<Rep>,
    closed: Arc<AtomicBool>,
    tx: mpsc::Sender<(u64, Req)>,
}

impl<Req, Rep> Clone for RpcClient<Req, Rep> {
    fn clone(&self) -> Self {
        RpcClient {
            peer: self.peer.clone(),
            next_id: self.next_id.clone(),
            pending: self.pending.clone(),
            closed: self.closed.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Rep> RpcClient<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// Connects to `addr` ("host:port").
    pub async fn connect(addr: &str) -> Result<Self, RpcError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|cause| RpcError::Connect { addr: addr.to_string(), cause })?;
        Ok(Self::from_stream(stream, addr.to_string()))
    }

    /// Connects to `addr` within `limit`, with keepalive and `TCP_USER_TIMEOUT` set so that
    /// a peer gone with its host fails the connection in about a second
    /// ([`crate::net::connect`]).
    pub async fn connect_within(addr: &str, limit: std::time::Duration) -> Result<Self, RpcError> {
        let stream = crate::net::connect(addr, limit)
            .await
            .map_err(|cause| RpcError::Connect { addr: addr.to_string(), cause })?;
        Ok(Self::from_stream(stream, addr.to_string()))
    }

    /// Wraps an open connection. `peer` names the other side in errors.
    pub fn from_stream(stream: TcpStream, peer: String) -> Self {
        stream.set_nodelay(true).ok();
        let (read_half, write_half) = stream.into_split();
        let (tx, rx) = mpsc::channel::<(u64, Req)>(1024);
        let client = RpcClient {
            peer: peer.into(),
            next_id: Arc::new(AtomicU64::new(1)),
            pending: Arc::new(Mutex::new(HashMap::new())),
            closed: Arc::new(AtomicBool::new(false)),
            tx,
        };
        tokio::spawn(write_loop(write_half, rx, client.peer.to_string()));
        tokio::spawn(reply_read_loop::<Rep>(
            read_half,
            client.pending.clone(),
            client.closed.clone(),
            client.peer.to_string(),
        ));
        client
    }

    /// The address this client talks to.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// True once the connection failed or was closed; every later call fails at once.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req` and waits for its reply.
    pub async fn call(&self, req: Req) -> Result<Rep, RpcError> {
        let closed = || RpcError::Closed { peer: self.peer.to_string() };
        if self.is_closed() {
            return Err(closed());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        self.pending.lock().expect("pending map poisoned").insert(id, done_tx);
        if self.tx.send((id, req)).await.is_err() {
            self.pending.lock().expect("pending map poisoned").remove(&id);
            return Err(closed());
        }
        // The reader may have failed between our check and our insert: it drains the map on
        // exit, and marks `closed` before draining, so re-check to never wait forever.
        if self.is_closed() {
            self.fail_pending();
        }
        done_rx.await.map_err(|_| closed())
    }

    /// Like [`call`](Self::call) but gives up after `ms` milliseconds.
    pub async fn call_timeout(&self, req: Req, ms: u64) -> Result<Rep, RpcError> {
        match tokio::time::timeout(std::time::Duration::from_millis(ms), self.call(req)).await {
            Ok(result) => result,
            Err(_) => Err(RpcError::Timeout { peer: self.peer.to_string(), ms }),
        }
    }

    fn fail_pending(&self) {
        self.pending.lock().expect("pending map poisoned").clear();
    }
}

async fn reply_read_loop<Rep: DeserializeOwned>(
    read_half: tokio::net::tcp::OwnedReadHalf,
    pending: Pending<Rep>,
    closed: Arc<AtomicBool>,
    peer: String,
) {
    let mut reader = BufReader::with_capacity(64 << 10, read_half);
    let mut buf = Vec::new();
    loop {
        if let Err(e) = FrameReader::read_into(&mut reader, &mut buf).await {
            if !e.is_clean_close() {
                tracing::warn!(%peer, error = %e, "connection failed");
            }
            break;
        }
        match frame::decode_body::<Rep>(&buf) {
            Ok(frame) => {
                let waiter =
                    pending.lock().expect("pending map poisoned").remove(&frame.request_id);
                if let Some(waiter) = waiter {
                    // The caller may have given up (timeout); its reply is then dropped.
                    let _unwanted = waiter.send(frame.body);
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "bad reply frame; closing connection");
                break;
            }
        }
    }
    closed.store(true, Ordering::Release);
    pending.lock().expect("pending map poisoned").clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn echo_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                tokio::spawn(serve(stream, peer.to_string(), 16, |x: u64| async move {
                    // Reply out of order: later requests with smaller x finish first.
                    tokio::time::sleep(std::time::Duration::from_millis(x % 7)).await;
                    x * 2
                }));
            }
        });
        addr
    }

    #[tokio::test]
    async fn many_concurrent_calls_get_their_own_replies() {
        let addr = echo_server().await;
        let client: RpcClient<u64, u64> = RpcClient::connect(&addr).await.unwrap();
        let mut tasks = Vec::new();
        for x in 0..500u64 {
            let c = client.clone();
            tasks.push(tokio::spawn(async move { (x, c.call(x).await.unwrap()) }));
        }
        for t in tasks {
            let (x, y) = t.await.unwrap();
            assert_eq!(y, x * 2);
        }
    }

    #[tokio::test]
    async fn inline_and_spawned_replies_both_reach_their_callers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.unwrap();
            // Even numbers are answered at once, odd ones after a delay in their own task.
            serve_inline(stream, peer.to_string(), 4, |x: u64| {
                if x.is_multiple_of(2) {
                    return Handled::Now(x + 1000);
                }
                Handled::Later(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(x % 5)).await;
                    x + 2000
                })
            })
            .await
        });
        let client: RpcClient<u64, u64> = RpcClient::connect(&addr).await.unwrap();
        let tasks: Vec<_> = (0..200u64)
            .map(|x| {
                let c = client.clone();
                tokio::spawn(async move { (x, c.call(x).await.unwrap()) })
            })
            .collect();
        for t in tasks {
            let (x, y) = t.await.unwrap();
            assert_eq!(y, if x % 2 == 0 { x + 1000 } else { x + 2000 });
        }
    }

    #[tokio::test]
    async fn bad_frame_closes_only_that_connection() {
        let addr = echo_server().await;
        let good: RpcClient<u64, u64> = RpcClient::connect(&addr).await.unwrap();
        let mut bad = TcpStream::connect(&addr).await.unwrap();
        bad.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
        let mut rest = Vec::new();
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), bad.read_to_end(&mut rest))
            .await
            .expect("server must close a connection that sent an oversized frame")
            .unwrap();
        assert_eq!(n, 0, "no reply to a bad frame");
        assert_eq!(good.call(21).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn calls_fail_when_the_server_goes_away() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap() });
        let client: RpcClient<u64, u64> = RpcClient::connect(&addr).await.unwrap();
        let (stream, _) = accept.await.unwrap();
        let call = tokio::spawn({
            let c = client.clone();
            async move { c.call(1).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(stream);
        let result = tokio::time::timeout(std::time::Duration::from_secs(5), call)
            .await
            .expect("a pending call must fail when the connection drops")
            .unwrap();
        assert!(matches!(result, Err(RpcError::Closed { .. })), "{result:?}");
        assert!(client.is_closed());
        assert!(client.call(2).await.is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address_and_its_cause_once() {
        // A port that was just free: nothing listens there any more.
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let error = match RpcClient::<u64, u64>::connect(&addr).await {
            Ok(_) => panic!("nothing listens on {addr}"),
            Err(e) => e,
        };
        let text = error.to_string();
        assert!(text.starts_with(&format!("cannot connect to {addr}: ")), "{text}");
        // Reports that print the chain add each source(): the cause must not come twice.
        assert!(std::error::Error::source(&error).is_none(), "{text}");
        let cause = text.rsplit(": ").next().unwrap();
        assert_eq!(text.matches(cause).count(), 1, "{text}");
    }
}
