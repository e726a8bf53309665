//! [`Vip`]: the handle the master uses (`hold`, `release`, `status`), and the reconciler
//! task behind it that makes the interface match what is wanted.
//!
//! The reconciler runs at its own pace: it looks at the interface when what is wanted
//! changes, when netlink reports an address change on the interface, and every
//! [`VERIFY`] regardless (a lost netlink message must not leave the VIP missing); it sends
//! due announcements every [`TICK`]. A release is acted on at once, before anything else.

use crate::announce::{self, Sender};
use crate::config::{VipAddr, VipConfig};
use crate::error::VipError;
use crate::netlink::{self, Link, Netlink};
use crate::preflight;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often due announcements are sent.
const TICK: Duration = Duration::from_millis(20);
/// How often the interface is looked at without being asked to.
const VERIFY: Duration = Duration::from_millis(250);
/// The address's lifetime in the kernel, renewed every [`VERIFY`] while held: a holder that
/// dies (SIGKILL) or freezes (SIGSTOP) cannot release, but the kernel removes the VIP this
/// long after the last renewal, so a dead master's host stops answering ARP for it.
const LIFETIME_S: u32 = 2;
/// How long [`Vip::release_confirmed`] waits for the address to go.
const RELEASE_LIMIT: Duration = Duration::from_secs(2);

/// What the master wants of the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Hold,
    Release,
}

/// What the reconciler is told: hold until a deadline (`None`: until told otherwise), or
/// release. A deadline makes holding a lease: a holder whose master stalls or was frozen
/// (SIGSTOP) finds the deadline passed when it runs again and releases before anything else,
/// instead of renewing or announcing a VIP it no longer has the right to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Hold { until: Option<Instant> },
    Release,
}

impl Order {
    fn at(self, now: Instant) -> Desired {
        match self {
            Order::Hold { until: None } => Desired::Hold,
            Order::Hold { until: Some(until) } if now < until => Desired::Hold,
            _ => Desired::Release,
        }
    }
}

/// What `mfsha status` shows of the VIP on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipStatus {
    pub address: VipAddr,
    pub interface: String,
    /// The address is on the interface because this node holds it.
    pub held: bool,
    /// When `held` last changed (start counts as a change).
    pub since: SystemTime,
    /// When the last announcement went out, if any did.
    pub last_announcement: Option<SystemTime>,
    /// Announcements sent since start (each: both ARP forms, or one NA).
    pub announcements: u64,
    /// Times the VIP vanished from the interface while held and was put back.
    pub readded: u64,
    /// The last failure, if the last attempt failed (cleared by a success).
    pub last_error: Option<String>,
}

/// The VIP of one node. Dropping it releases the VIP (the task removes the address).
pub struct Vip {
    config: VipConfig,
    desired: watch::Sender<Order>,
    status: watch::Receiver<VipStatus>,
    task: JoinHandle<()>,
}

impl Vip {
    /// Checks the prerequisites (capabilities, interface, subnet), removes the VIP if it is on
    /// the interface (a node that starts holds nothing), and starts the reconciler, released.
    /// Sockets open in the calling thread's network namespace, on the current runtime.
    pub async fn start(config: VipConfig) -> Result<Vip, VipError> {
        config.validate().map_err(|reason| VipError::Config {
            vip: config.address,
            interface: config.interface.clone(),
            reason,
        })?;
        let socket_error = |what, cause| VipError::Socket {
            vip: config.address,
            interface: config.interface.clone(),
            what,
            cause,
        };
        let netlink = Netlink::open().map_err(|e| socket_error("opening a netlink socket", e))?;
        let link = preflight::check(&config, &netlink).await?;
        let sender = Sender::open(link.index)
            .map_err(|e| socket_error("opening the AF_PACKET socket", e))?;
        netlink.remove(link.index, config.address).await.map_err(|e| VipError::Netlink {
            vip: config.address,
            interface: config.interface.clone(),
            what: "removing a VIP left from before start",
            cause: e.to_string(),
        })?;
        let changes = netlink::watch(link.index)
            .map_err(|e| socket_error("opening the netlink address watch", e))?;
        let (desired, desired_rx) = watch::channel(Order::Release);
        let (status_tx, status) = watch::channel(VipStatus {
            address: config.address,
            interface: config.interface.clone(),
            held: false,
            since: SystemTime::now(),
            last_announcement: None,
            announcements: 0,
            readded: 0,
            last_error: None,
        });
        let reconciler = Reconciler {
            config: config.clone(),
            netlink,
            link,
            sender,
            desired: desired_rx,
            changes,
            status: status_tx,
            burst_left: 0,
            next_announcement: Instant::now(),
        };
        tracing::info!(vip = %config.address, interface = %config.interface, "vip ready (released)");
        let task = tokio::spawn(reconciler.run());
        Ok(Vip { config, desired, status, task })
    }

    /// Wants the VIP held until told otherwise: added if missing, announced, re-added if
    /// removed.
    pub fn hold(&self) {
        self.order(Order::Hold { until: None });
    }

    /// Wants the VIP held until `until`, then released unless extended by another call (the
    /// master passes its lease's end).
    pub fn hold_until(&self, until: Instant) {
        self.order(Order::Hold { until: Some(until) });
    }

    /// Wants the VIP released: removed at once.
    pub fn release(&self) {
        self.order(Order::Release);
    }

    /// Wakes the reconciler only when hold turns into release or back; extending a
    /// deadline is read at its next tick.
    fn order(&self, order: Order) {
        let now = Instant::now();
        self.desired.send_if_modified(|current| {
            let changed = current.at(now) != order.at(now);
            *current = order;
            changed
        });
    }

    /// What is wanted now.
    pub fn desired(&self) -> Desired {
        self.desired.borrow().at(Instant::now())
    }

    /// Releases and waits until the address is off the interface.
    pub async fn release_confirmed(&self) -> Result<(), VipError> {
        self.release();
        let mut status = self.status.clone();
        let gone = tokio::time::timeout(RELEASE_LIMIT, status.wait_for(|s| !s.held)).await;
        match gone {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.stopped()),
            Err(_) => Err(VipError::Netlink {
                vip: self.config.address,
                interface: self.config.interface.clone(),
                what: "removing the VIP within 2 s",
                cause: self.status().last_error.unwrap_or_else(|| "no answer".into()),
            }),
        }
    }

    pub fn status(&self) -> VipStatus {
        self.status.borrow().clone()
    }

    /// The status as a channel that changes when it does.
    pub fn subscribe(&self) -> watch::Receiver<VipStatus> {
        self.status.clone()
    }

    /// Releases the VIP, then ends the reconciler.
    pub async fn stop(self) -> Result<(), VipError> {
        let released = self.release_confirmed().await;
        let Vip { desired, task, .. } = self;
        drop(desired);
        if task.await.is_err() {
            tracing::error!("the vip task panicked while stopping");
        }
        released
    }

    fn stopped(&self) -> VipError {
        VipError::Stopped { vip: self.config.address, interface: self.config.interface.clone() }
    }
}

/// The task that owns the sockets and makes the interface match [`Desired`].
struct Reconciler {
    config: VipConfig,
    netlink: Netlink,
    link: Link,
    sender: Sender,
    desired: watch::Receiver<Order>,
    changes: mpsc::Receiver<()>,
    status: watch::Sender<VipStatus>,
    /// Announcements of the current burst still to send.
    burst_left: u32,
    next_announcement: Instant,
}

impl Reconciler {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut verified = Instant::now();
        loop {
            let look = tokio::select! {
                changed = self.desired.changed() => match changed {
                    Ok(()) => true,
                    Err(_) => break, // the Vip was dropped
                },
                Some(()) = self.changes.recv() => true,
                // A deadline that passed while held is acted on at once.
                _ = tick.tick() => verified.elapsed() >= VERIFY
                    || (self.status.borrow().held && self.wanted() == Desired::Release),
            };
            if look {
                // Only the periodic look renews: a renewal is itself an address event.
                let renew = verified.elapsed() >= VERIFY;
                self.converge(renew).await;
                if renew {
                    verified = Instant::now();
                }
            }
            self.announce_if_due();
        }
        self.give_up_on_exit().await;
    }

    /// Adds or removes the address so the interface matches what is wanted.
    async fn converge(&mut self, renew: bool) {
        self.desired.borrow_and_update();
        let want = self.wanted();
        let present = match self.netlink.addresses(self.link.index).await {
            Ok(addresses) => addresses.iter().any(|a| a.ip == self.config.address.ip),
            Err(e) => return self.failed("listing the interface's addresses", e.to_string()),
        };
        match (want, present) {
            (Desired::Hold, false) => self.claim().await,
            (Desired::Hold, true) => {
                if !self.status.borrow().held {
                    self.set_held(true);
                    self.start_burst();
                }
                if renew {
                    self.renew().await;
                }
            }
            (Desired::Release, true) => self.remove().await,
            (Desired::Release, false) => {
                if self.status.borrow().held {
                    self.set_held(false);
                }
            }
        }
    }

    /// Extends the address's lifetime.
    async fn renew(&mut self) {
        if let Err(e) = self.netlink.add(self.link.index, self.config.address, LIFETIME_S).await {
            self.failed("renewing the VIP's lifetime", e.to_string());
        }
    }

    fn wanted(&self) -> Desired {
        self.desired.borrow().at(Instant::now())
    }

    async fn claim(&mut self) {
        if let Err(e) = self.netlink.add(self.link.index, self.config.address, LIFETIME_S).await {
            return self.failed("adding the VIP", e.to_string());
        }
        if self.status.borrow().held {
            tracing::warn!(vip = %self.config.address, interface = %self.config.interface,
                "the VIP was removed from under this holder; re-added and announcing again");
            self.status.send_modify(|s| s.readded += 1);
        } else {
            tracing::info!(vip = %self.config.address, interface = %self.config.interface, "VIP claimed");
            self.set_held(true);
        }
        self.start_burst();
        self.announce_if_due();
    }

    async fn remove(&mut self) {
        if let Err(e) = self.netlink.remove(self.link.index, self.config.address).await {
            return self.failed("removing the VIP", e.to_string());
        }
        tracing::info!(vip = %self.config.address, interface = %self.config.interface, "VIP released");
        self.burst_left = 0;
        self.set_held(false);
    }

    fn set_held(&self, held: bool) {
        self.status.send_modify(|s| {
            s.held = held;
            s.since = SystemTime::now();
            s.last_error = None;
        });
    }

    fn start_burst(&mut self) {
        self.burst_left = self.config.burst_count;
        self.next_announcement = Instant::now();
    }

    /// Sends the burst's next announcement or the refresh when due, while held.
    fn announce_if_due(&mut self) {
        let holding = self.wanted() == Desired::Hold && self.status.borrow().held;
        if !holding || Instant::now() < self.next_announcement {
            return;
        }
        for frame in announce::frames(&self.link, self.config.address.ip) {
            if let Err(e) = self.sender.send(&frame) {
                // Retried at the next tick: the schedule does not move.
                return self.failed("sending an announcement", e.to_string());
            }
        }
        self.status.send_modify(|s| {
            s.last_announcement = Some(SystemTime::now());
            s.announcements += 1;
        });
        self.next_announcement = match self.burst_left {
            0 | 1 => Instant::now() + Duration::from_millis(self.config.refresh_ms),
            _ => Instant::now() + self.config.burst_gap(),
        };
        self.burst_left = self.burst_left.saturating_sub(1);
    }

    fn failed(&self, what: &str, cause: String) {
        tracing::warn!(vip = %self.config.address, interface = %self.config.interface, %cause,
            "vip: {what} failed; retrying");
        self.status.send_modify(|s| s.last_error = Some(format!("{what}: {cause}")));
    }

    /// The handle is gone: never leave the VIP behind.
    async fn give_up_on_exit(&mut self) {
        if let Err(e) = self.netlink.remove(self.link.index, self.config.address).await {
            tracing::error!(vip = %self.config.address, interface = %self.config.interface,
                cause = %e, "cannot remove the VIP while stopping; remove it by hand");
            return;
        }
        self.set_held(false);
    }
}
