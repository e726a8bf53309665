/*!
Virtual IP management for the Raft leader (rtnetlink + gratuitous ARP).

This crate will own claiming the cluster's virtual IP when this master becomes leader and
releasing it when it stops being leader, so chunkservers, metaloggers and clients only ever need
the one address. It must never depend on Raft or the metadata model: the master tells it
"you are leader now" / "you are not", and it reconciles the interface on a timer.

Status: reserved for the VIP issue; nothing here is used yet.
*/
