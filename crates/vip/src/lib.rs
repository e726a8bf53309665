/*!
The cluster's virtual IP on the node that leads: claimed, announced, watched and released.

This crate owns one thing: making an interface hold an address, or not, as it is told, and
telling the segment when it moves. [`Vip::start`] checks the prerequisites (CAP_NET_ADMIN,
CAP_NET_RAW, the interface, the VIP in the interface's subnet) and fails with an error saying
what to fix; then a reconciler task does what [`Vip::hold`] / [`Vip::release`] last asked:

- **claim**: add the address through rtnetlink (idempotent), then announce it from an
  AF_PACKET socket: gratuitous ARP in request and reply form (IPv4) or an unsolicited
  neighbour advertisement (IPv6), a burst (default 5 within 1 s) and a refresh while held
  (default every 60 s);
- **watch**: netlink address events on the interface (and a look every 250 ms) put back and
  re-announce a VIP removed from under the holder, within a second;
- **release**: remove the address, at once. Dropping the [`Vip`] releases too;
- **dead-man switch**: the address is added with a 2 s lifetime, renewed every 250 ms while
  held, so the kernel itself removes the VIP of a holder that was killed or frozen (a
  process cannot release what it no longer runs to release).

```no_run
# async fn example() -> Result<(), mfsha_vip::VipError> {
use mfsha_vip::{Vip, VipConfig};
let config = VipConfig::new("192.168.10.100/24".parse().unwrap(), "eth0");
let vip = Vip::start(config).await?;
vip.hold(); // this node leads
vip.release_confirmed().await?; // it no longer does
# Ok(()) }
```

It knows nothing of Raft or metadata, and must not: *when* to hold is the master's fencing
decision (leader with a valid lease, after the previous leader's lease must have run out),
made in `master-ha`. Keeping the crate to "hold / release" lets it be tested in a network
namespace on its own, and keeps the safety argument in one place. Netlink and raw sockets are
used directly, never `ip` or `arping`: no helper script can hang, fail silently or be missing.

Sockets open in the network namespace of the thread that calls [`Vip::start`].
*/

mod announce;
mod config;
mod error;
mod holder;
mod netlink;
mod preflight;

pub use config::{VipAddr, VipAddrError, VipConfig};
pub use error::VipError;
pub use holder::{Desired, Vip, VipStatus};
