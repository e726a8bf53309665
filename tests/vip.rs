//! The VIP crate on a real veth pair between two network namespaces: the holder runs
//! `mfsha_vip` on a runtime inside its namespace, the peer captures what arrives with a raw
//! socket, and `ip` reads the holder's addresses.

use crate::netns::{show_mac, wait_until, Capture, Netns, NsRuntime};
use mfsha_vip::{Vip, VipConfig, VipError};
use std::time::{Duration, Instant};

/// A holder and a peer on one veth pair, 10.77.0.1/24 and 10.77.0.2/24 (and fd77::1/64,
/// fd77::2/64), and a runtime in the holder's namespace.
struct Pair {
    runtime: NsRuntime,
    holder: Netns,
    peer: Netns,
}

const DEV: &str = "vh0";
const PEER_DEV: &str = "vp0";

impl Pair {
    fn new() -> Pair {
        let holder = Netns::new("vh");
        let peer = Netns::new("vp");
        crate::netns::veth(&holder, DEV, &peer, PEER_DEV);
        holder.ip(&["addr", "add", "10.77.0.1/24", "dev", DEV]);
        peer.ip(&["addr", "add", "10.77.0.2/24", "dev", PEER_DEV]);
        holder.ip(&["addr", "add", "fd77::1/64", "dev", DEV, "nodad"]);
        peer.ip(&["addr", "add", "fd77::2/64", "dev", PEER_DEV, "nodad"]);
        let runtime = NsRuntime::new(&holder);
        Pair { runtime, holder, peer }
    }

    /// The peer reaches a TCP listener on `ip` in the holder's namespace: the address really
    /// works on the segment.
    fn assert_reachable(&self, ip: &str) {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let listener = self.runtime.run(async move { std::net::TcpListener::bind((ip, 0)) });
        let listener = listener.unwrap_or_else(|e| panic!("listen on the VIP {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let connected = crate::netns::connect_from(&self.peer, addr);
        assert!(connected.is_ok(), "the peer connects to {addr}: {connected:?}");
    }

    fn start(&self, config: VipConfig) -> Result<Vip, VipError> {
        self.runtime.run(Vip::start(config))
    }
}

fn config(address: &str) -> VipConfig {
    VipConfig::new(address.parse().unwrap(), DEV)
}

fn gratuitous_arps(capture: &Capture, vip: [u8; 4], op: u16) -> Vec<crate::netns::Arp> {
    let arps = capture.frames().iter().filter_map(|f| f.arp()).collect::<Vec<_>>();
    arps.into_iter().filter(|a| a.op == op && a.sender_ip == vip && a.target_ip == vip).collect()
}

#[test]
fn a_held_vip_is_added_announced_in_both_arp_forms_and_removed_on_release() {
    let pair = Pair::new();
    let capture = Capture::start(&pair.peer, PEER_DEV);
    let vip = pair.start(config("10.77.0.100/24")).expect("vip starts");
    assert!(!pair.holder.has_address(DEV, "10.77.0.100/24"), "started released");
    let claimed = Instant::now();
    vip.hold();
    let added =
        wait_until(Duration::from_secs(1), || pair.holder.has_address(DEV, "10.77.0.100/24"));
    assert!(added.is_some(), "VIP on {DEV} within 1 s: {:?}", pair.holder.addresses(DEV));
    std::thread::sleep(Duration::from_millis(1300));
    let mac = pair.holder.mac(DEV);
    let requests = gratuitous_arps(&capture, [10, 77, 0, 100], 1);
    let replies = gratuitous_arps(&capture, [10, 77, 0, 100], 2);
    assert_eq!(requests.len(), 5, "five gratuitous requests: {requests:?}");
    assert_eq!(replies.len(), 5, "five gratuitous replies: {replies:?}");
    for arp in requests.iter().chain(&replies) {
        assert_eq!(show_mac(&arp.sender_mac), show_mac(&mac), "sender MAC is the holder's");
    }
    assert!(requests.iter().all(|a| a.target_mac == [0; 6]), "request form: target MAC zero");
    assert!(replies.iter().all(|a| a.target_mac == mac), "reply form: target MAC ours");
    let arp_times: Vec<Instant> = capture
        .frames()
        .iter()
        .filter(|f| f.arp().is_some_and(|a| a.sender_ip == [10, 77, 0, 100]))
        .map(|f| f.at)
        .collect();
    let spread = *arp_times.last().unwrap() - arp_times[0];
    assert!(spread <= Duration::from_millis(1000), "the burst fits in 1 s: {spread:?}");
    assert!(arp_times[0] - claimed < Duration::from_millis(300), "first announcement at once");
    pair.assert_reachable("10.77.0.100");
    let status = vip.status();
    assert!(
        status.held && status.announcements == 5 && status.last_announcement.is_some(),
        "{status:?}"
    );
    pair.runtime.run(async move { vip.release_confirmed().await.map(|()| vip) }).expect("released");
    assert!(!pair.holder.has_address(DEV, "10.77.0.100/24"), "release removes the VIP");
}

#[test]
fn a_vip_deleted_by_hand_is_back_and_announced_within_a_second() {
    let pair = Pair::new();
    let vip = pair.start(config("10.77.0.100/24")).expect("vip starts");
    vip.hold();
    wait_until(Duration::from_secs(1), || pair.holder.has_address(DEV, "10.77.0.100/24"))
        .expect("claimed");
    std::thread::sleep(Duration::from_millis(1100)); // the first burst is over
    let capture = Capture::start(&pair.peer, PEER_DEV);
    let deleted = Instant::now();
    pair.holder.ip(&["addr", "del", "10.77.0.100/24", "dev", DEV]);
    let back =
        wait_until(Duration::from_secs(2), || pair.holder.has_address(DEV, "10.77.0.100/24"));
    let back = back.expect("the VIP comes back");
    assert!(back < Duration::from_secs(1), "back in {back:?}");
    let announced = wait_until(Duration::from_secs(1), || {
        !gratuitous_arps(&capture, [10, 77, 0, 100], 1).is_empty()
    });
    let first = capture.frames().iter().find(|f| f.arp().is_some()).map(|f| f.at - deleted);
    assert!(
        announced.is_some() && first.unwrap() < Duration::from_secs(1),
        "re-announced within 1 s: {first:?}"
    );
    assert_eq!(vip.status().readded, 1);
    drop(vip); // dropping releases
    let gone =
        wait_until(Duration::from_secs(1), || !pair.holder.has_address(DEV, "10.77.0.100/24"));
    assert!(gone.is_some(), "a dropped Vip removes its address");
}

#[test]
fn an_ipv6_vip_is_announced_with_unsolicited_neighbour_advertisements() {
    let pair = Pair::new();
    let capture = Capture::start(&pair.peer, PEER_DEV);
    let vip = pair.start(config("fd77::64/64")).expect("vip starts");
    vip.hold();
    wait_until(Duration::from_secs(1), || pair.holder.has_address(DEV, "fd77::64/64"))
        .expect("claimed");
    std::thread::sleep(Duration::from_millis(1200));
    let target: [u8; 16] = "fd77::64".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let adverts: Vec<_> = capture
        .frames()
        .iter()
        .filter_map(|f| f.neighbour_advert())
        .filter(|a| a.0 == target)
        .collect();
    assert!(adverts.len() >= 5, "five unsolicited NAs for the VIP: {}", adverts.len());
    let mac = pair.holder.mac(DEV);
    assert!(
        adverts.iter().all(|(_, override_flag, lladdr)| *override_flag && *lladdr == Some(mac)),
        "{adverts:?}"
    );
    pair.assert_reachable("fd77::64");
    pair.runtime.run(async move { vip.stop().await }).expect("stopped");
    assert!(!pair.holder.has_address(DEV, "fd77::64/64"), "stop removes the VIP");
}

#[test]
fn a_vip_left_on_the_interface_is_removed_at_start() {
    let pair = Pair::new();
    pair.holder.ip(&["addr", "add", "10.77.0.100/24", "dev", DEV]);
    let vip = pair.start(config("10.77.0.100/24")).expect("vip starts");
    assert!(!pair.holder.has_address(DEV, "10.77.0.100/24"), "a node that starts holds nothing");
    assert!(!vip.status().held);
}

#[test]
fn start_errors_name_the_missing_interface_subnet_and_capabilities() {
    let pair = Pair::new();
    let missing = VipConfig::new("10.77.0.100/24".parse().unwrap(), "nosuch0");
    let error = pair.start(missing).err().expect("a missing interface fails").to_string();
    assert!(error.contains("no interface \"nosuch0\""), "{error}");
    let on_lo = VipConfig::new("10.77.0.100/24".parse().unwrap(), "lo");
    let error = pair.start(on_lo).err().expect("an interface without a MAC fails").to_string();
    assert!(error.contains("lo has no Ethernet address"), "{error}");
    let error =
        pair.start(config("10.78.0.100/24")).err().expect("outside the subnet fails").to_string();
    assert!(
        error.contains("outside every subnet of vh0") && error.contains("10.77.0.1/24"),
        "{error}"
    );
    for (capability, name) in [
        (caps::Capability::CAP_NET_RAW, "CAP_NET_RAW"),
        (caps::Capability::CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    ] {
        let error = pair
            .runtime
            .run(async move {
                // Capabilities are per thread: drop it on a thread of our own, in the namespace.
                let worker = std::thread::spawn(move || {
                    caps::drop(None, caps::CapSet::Effective, capability)
                        .expect("drop a capability");
                    let runtime =
                        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    runtime.block_on(Vip::start(config("10.77.0.100/24"))).err()
                });
                worker.join().unwrap()
            })
            .expect("a missing capability fails")
            .to_string();
        assert!(error.contains(name) && error.contains("AmbientCapabilities"), "{error}");
    }
}

#[test]
fn the_kernel_removes_the_vip_of_a_holder_that_stopped_renewing_it() {
    let pair = Pair::new();
    let vip = pair.start(config("10.77.0.100/24")).expect("vip starts");
    vip.hold();
    wait_until(Duration::from_secs(1), || pair.holder.has_address(DEV, "10.77.0.100/24"))
        .expect("claimed");
    let Pair { runtime, holder, peer: _peer } = pair;
    drop(runtime); // the holder's tasks vanish without releasing, as in a SIGKILL
    let died = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    assert!(holder.has_address(DEV, "10.77.0.100/24"), "nothing removed it yet");
    let gone = wait_until(Duration::from_secs(5), || !holder.has_address(DEV, "10.77.0.100/24"));
    assert!(gone.is_some(), "the kernel expires the VIP");
    let after = died.elapsed();
    assert!(after < Duration::from_millis(3500), "expired {after:?} after the holder stopped");
    drop(vip);
}

#[test]
fn a_hold_with_a_deadline_releases_by_itself_when_it_passes() {
    let pair = Pair::new();
    let vip = pair.start(config("10.77.0.100/24")).expect("vip starts");
    let ordered = Instant::now();
    vip.hold_until(ordered + Duration::from_millis(400));
    wait_until(Duration::from_millis(300), || pair.holder.has_address(DEV, "10.77.0.100/24"))
        .expect("claimed");
    let gone =
        wait_until(Duration::from_secs(2), || !pair.holder.has_address(DEV, "10.77.0.100/24"));
    assert!(gone.is_some(), "released when the deadline passed");
    let at = ordered.elapsed();
    assert!(
        at >= Duration::from_millis(400) && at < Duration::from_millis(600),
        "released at {at:?}"
    );
    assert_eq!(vip.desired(), mfsha_vip::Desired::Release);
}
