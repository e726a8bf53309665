//! The client listener: accepts connections, runs each through the framed RPC server, and
//! drains in-flight requests on shutdown.

use super::{client, Service};
use crate::config::ClientLimits;
use mfsha_proto::client::{Answer, ClientOp, ClientReply, Request};
use mfsha_proto::gate::{within_fd_limit, Gate, GateLimits};
use mfsha_proto::rpc::{self, Handled, RpcError};
use mfsha_proto::types::{Ino, Reply, Status};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::Instrument;

/// The shutdown signal shared by every listener and connection.
pub use mfsha_raft::Shutdown;

/// Counts requests being handled so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One running request; dropping it marks the request done.
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Marks a request as running until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// Requests running now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no request is running, or `limit` passed; returns how many still run.
    pub async fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count();
            }
        }
    }
}

/// The client port: one task per connection, each request answered by [`client::answer_now`] or,
/// if it must wait, [`client::handle_waiting`] in its own task.
pub struct ClientListener {
    listener: TcpListener,
    service: Arc<Service>,
    limits: ClientLimits,
    gate: Arc<Gate>,
    in_flight: Arc<InFlight>,
}

impl ClientListener {
    pub fn new(listener: TcpListener, service: Arc<Service>, limits: ClientLimits) -> Self {
        let caps = GateLimits {
            per_address: limits.max_connections_per_address,
            total: limits.max_connections,
        };
        // Half the descriptors at most: the peer, chunkserver and logger ports and RocksDB's
        // files need the rest.
        let gate = Gate::new("client", within_fd_limit(caps, 0.5));
        ClientListener { listener, service, limits, gate, in_flight: Arc::new(InFlight::default()) }
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The in-flight request counter, to wait on after shutdown.
    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    /// Accepts connections until `shutdown` triggers. Open connections stop reading new
    /// requests at shutdown; requests already running finish (see [`InFlight::wait_idle`]).
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = shutdown.triggered() => break,
            };
            match accepted {
                Ok((stream, peer)) => self.start_connection(stream, peer, shutdown.clone()),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on a full fd table.
                    tracing::warn!(error = %e, "accepting a client connection failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracing::info!("client listener stopped accepting");
    }

    fn start_connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
    ) {
        // Refused connections are closed at once; the gate logs them (client.max_connections
        // and client.max_connections_per_address).
        let Ok(admitted) = self.gate.admit(peer) else { return };
        let service = self.service.clone();
        let in_flight = self.in_flight.clone();
        let max_in_flight = self.limits.max_in_flight_per_connection;
        let span = tracing::info_span!("client", %peer);
        tokio::spawn(
            async move {
                serve_connection(service.clone(), stream, peer, max_in_flight, in_flight, shutdown)
                    .await;
                drop(admitted);
            }
            .instrument(span),
        );
    }
}

/// The master's permission checks for the (mapped) caller, after [`super::perm::adjust`] has
/// changed what Linux changes rather than refuses; root needs no state lock.
fn check_permission(
    service: &Service,
    connection: &super::session::Connection,
    request: &mut Request,
) -> Result<(), Status> {
    if request.uid == 0 {
        return Ok(());
    }
    let (uid, gid, groups, session) = (request.uid, request.gid, &request.groups, request.session);
    let ignore_gid = super::access::ignores_gid(connection);
    let holds_open = match request.op {
        ClientOp::SetAttr { ino, by_handle: true, .. }
        | ClientOp::ReadChunk { ino, .. }
        | ClientOp::WriteChunk { ino, .. }
        | ClientOp::WriteChunkEnd { ino, .. } => service.opens.count(session, ino).1,
        _ => false,
    };
    let who = super::perm::Caller { uid, gid, groups, session, ignore_gid, holds_open };
    let op = &mut request.op;
    service.meta.read(|state| {
        super::perm::adjust(state, &who, op);
        super::perm::check(state, &who, op)
    })
}

/// The reply stamped with this master's current Raft term (see [`Answer`]).
fn answer(service: &Service, reply: Reply<ClientReply>) -> Answer {
    Answer::new(service.leadership.now().term, reply)
}

/// The answer to a change that succeeded carries the attributes of the directories it
/// changed (see [`Answer::dirs`]), read now from the applied state.
fn with_dirs(service: &Service, mut answer: Answer, dirs: &[Ino]) -> Answer {
    if answer.reply.is_ok() && !dirs.is_empty() {
        answer.dirs =
            service.meta.read(|s| dirs.iter().filter_map(|d| s.getattr(*d).ok()).collect());
    }
    answer
}

async fn serve_connection(
    service: Arc<Service>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    max_in_flight: usize,
    in_flight: Arc<InFlight>,
    shutdown: Shutdown,
) {
    let connection = Arc::new(service.sessions.connect(peer.to_string()));
    tracing::debug!("client connected");
    let handler = {
        let (service, connection) = (service.clone(), connection.clone());
        move |mut request: Request| {
            let (started, op) = (Instant::now(), request.op.name());
            // The exports first: who may ask, as which uid (see `access`).
            if let Err(refused) = super::access::admit(&service, &connection, &mut request) {
                let refused = Err(refused);
                service.client_metrics.record(op, started, &refused);
                return Handled::Now(answer(&service, refused));
            }
            // Then the master's own permission checks (see `perm`).
            if let Err(refused) = check_permission(&service, &connection, &mut request) {
                let refused = Err(refused);
                service.client_metrics.record(op, started, &refused);
                return Handled::Now(answer(&service, refused));
            }
            // Reads are answered on the connection's own task: no spawn, no context switch.
            if let Some(reply) = client::answer_now(&service, &connection, &request) {
                service.client_metrics.record(op, started, &reply);
                return Handled::Now(answer(&service, reply));
            }
            // Counted before the handler task is spawned, so shutdown cannot miss it.
            let running = in_flight.enter();
            let (service, connection) = (service.clone(), connection.clone());
            let dirs = request.op.changed_dirs();
            Handled::Later(async move {
                let reply = client::handle_waiting(&service, &connection, request).await;
                service.client_metrics.record(op, started, &reply);
                drop(running);
                with_dirs(&service, answer(&service, reply), &dirs)
            })
        }
    };
    // A master that stops leading closes every client connection, so mounts go to the new
    // leader at once; requests still running are dropped (a mount retries them there with
    // the same seq, and the replicated reply window answers a retry of one that committed).
    let leadership = service.leadership.clone();
    let served = tokio::select! {
        served = rpc::serve_inline(stream, peer.to_string(), max_in_flight, handler) => served,
        () = shutdown.triggered() => Ok(()),
        () = leadership.next_step_down() => {
            tracing::info!("closing client connection: this master stopped leading");
            Ok(())
        }
    };
    match served {
        Ok(()) => tracing::debug!("client disconnected"),
        Err(e @ RpcError::Frame { .. }) => {
            tracing::warn!(error = %e, "closed client connection after a bad frame")
        }
        Err(e) => tracing::warn!(error = %e, "client connection failed"),
    }
    service.sessions.disconnect(&connection);
}
