//! Starting inputs: real messages and files of each kind, so the fuzzer mutates from inputs
//! that get past the first checks (frame version, snapshot magic, chunk header checksum).

use mfsha_meta::{Entry, Op, State};
use mfsha_proto::client::{Answer, ClientOp, ClientReply, Request};
use mfsha_proto::cs::{CsToMaster, DiskInfo, FromMaster, MasterToCs};
use mfsha_proto::data::{ChunkToken, DataReply, DataRequest};
use mfsha_proto::logger::{LoggerToMaster, MasterToLogger};
use mfsha_proto::peer::PeerMessage;
use mfsha_proto::types::{ServerAddr, Status, Timestamp};
use protobuf::Message as _;
use serde::Serialize;
use serde_bytes::ByteBuf;

use crate::Target;

/// The seeds of `target`.
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    match target {
        Target::ClientPort => client_port(),
        Target::ChunkserverPort => chunkserver_port(),
        Target::DataPort => data_port(),
        Target::LoggerPort => logger_port(),
        Target::PeerPort => peer_port(),
        Target::RaftEntry => entries().iter().map(|e| postcard::to_allocvec(e).unwrap()).collect(),
        Target::Snapshot => snapshots(),
        Target::ChunkHeader => chunk_headers(),
        Target::Config => configs(),
        Target::Exports => exports(),
    }
}

fn frame<T: Serialize>(request_id: u64, body: &T) -> Vec<u8> {
    let mut out = Vec::new();
    mfsha_proto::frame::encode(request_id, body, &mut out).expect("a seed encodes");
    out
}

fn client_port() -> Vec<Vec<u8>> {
    let hello = ClientOp::Hello {
        session: None,
        client_info: "host:/mnt/mfs".into(),
        subdir: "/".into(),
        proof: Some([7; 32]),
        token: 99,
        version: [0, 1, 0],
    };
    let lookup = Request {
        session: 3,
        seq: 0,
        uid: 1000,
        gid: 1000,
        groups: vec![4, 24],
        op: ClientOp::Lookup { parent: 1, name: "a".into() },
    };
    let mkdir = ClientOp::Mkdir { parent: 1, name: "d".into(), mode: 0o755, umask: 0o22 };
    vec![
        frame(1, &Request::anonymous(hello)),
        frame(2, &lookup),
        frame(3, &Request { seq: 1, op: mkdir, ..lookup.clone() }),
        frame(4, &Answer::new(2, Ok(ClientReply::Session { session: 3, root: 1 }))),
        frame(5, &Answer::new(2, Err(Status::NotFound))),
        frame(6, &Answer::new(2, Ok(ClientReply::Names(vec!["x".into()])))),
    ]
}

fn chunkserver_port() -> Vec<Vec<u8>> {
    let disk = DiskInfo { path: "/srv/mfs".into(), total_bytes: 1 << 40, ..Default::default() };
    let register = CsToMaster::Register {
        host: Some("10.0.0.2".into()),
        port: 9422,
        labels: vec!["ssd".into()],
        disks: vec![disk.clone()],
        server_id: 17,
        cluster: Some("c1".into()),
    };
    let source = ServerAddr { host: "10.0.0.3".into(), port: 9422 };
    vec![
        frame(0, &register),
        frame(0, &CsToMaster::Chunks(vec![(5, 1, false), (6, 2, true)])),
        frame(0, &CsToMaster::Heartbeat { disks: vec![disk], writing: vec![5] }),
        frame(0, &CsToMaster::Lost(vec![9])),
        frame(
            0,
            &FromMaster { term: 4, msg: MasterToCs::Create { op: 1, chunk_id: 5, version: 1 } },
        ),
        frame(
            0,
            &FromMaster {
                term: 4,
                msg: MasterToCs::Replicate { op: 2, chunk_id: 5, version: 1, source },
            },
        ),
        frame(
            0,
            &FromMaster {
                term: 4,
                msg: MasterToCs::Hello {
                    master_node: 1,
                    cluster: "c1".into(),
                    masters: vec![(1, "m1:9420".into())],
                },
            },
        ),
    ]
}

fn data_port() -> Vec<Vec<u8>> {
    let chain = vec![
        ServerAddr { host: "10.0.0.2".into(), port: 9422 },
        ServerAddr { host: "10.0.0.3".into(), port: 9422 },
    ];
    let token = ChunkToken { expires_ms: 1_800_000_000_000, mac: [3; 16] };
    let write = DataRequest::Write {
        chunk_id: 5,
        version: 1,
        offset: 65536,
        data: ByteBuf::from(vec![0xab; 64]),
        chain: chain.clone(),
        hop: 0,
        token,
        crcs: mfsha_proto::data::block_crcs(65536, &[0xab; 64]),
    };
    let read = DataReply::Data {
        data: ByteBuf::from(vec![1, 2, 3]),
        crcs: mfsha_proto::data::block_crcs(0, &[1, 2, 3]),
    };
    vec![
        frame(1, &DataRequest::Read { chunk_id: 5, version: 1, offset: 0, size: 4096, token }),
        frame(2, &write),
        frame(3, &DataRequest::Sync { chunk_id: 5, version: 1, chain, hop: 1, token }),
        frame(4, &DataRequest::Stat { chunk_id: 5, token: ChunkToken::default() }),
        frame(5, &Ok::<_, Status>(read)),
        frame(6, &Ok::<_, Status>(DataReply::Stat { version: 1, length: 4096 })),
        frame(7, &Err::<DataReply, _>(Status::Access)),
    ]
}

fn logger_port() -> Vec<Vec<u8>> {
    let part = MasterToLogger::SnapshotPart {
        index: 10,
        term: 2,
        offset: 0,
        data: ByteBuf::from(vec![9; 32]),
        last: true,
        crc32c: 0x1234_5678,
    };
    let entries = MasterToLogger::Entries(vec![(11, 2, ByteBuf::from(vec![1, 2]))]);
    vec![
        frame(0, &LoggerToMaster::Hello { name: "logger".into(), applied: 10, cluster: None }),
        frame(0, &LoggerToMaster::Ack { index: 11 }),
        frame(0, &part),
        frame(0, &entries),
        frame(0, &MasterToLogger::NotLeader { leader_hint: Some("m2:9419".into()) }),
    ]
}

fn peer_port() -> Vec<Vec<u8>> {
    let mut append = raft::eraftpb::Message::default();
    append.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    (append.to, append.from, append.term, append.index, append.commit) = (2, 1, 3, 10, 9);
    let mut entry = raft::eraftpb::Entry::default();
    (entry.index, entry.term, entry.data) = (11, 3, vec![1, 2, 3].into());
    append.mut_entries().push(entry);
    let raft_bytes = append.write_to_bytes().expect("a raft message encodes");
    vec![
        frame(0, &PeerMessage::Hello { from: 1, to: 2, cluster: "c1".into() }),
        frame(0, &PeerMessage::Raft(ByteBuf::from(raft_bytes.clone()))),
        frame(
            0,
            &PeerMessage::SnapshotPart { total: 8, offset: 0, bytes: ByteBuf::from(vec![5; 8]) },
        ),
        frame(0, &PeerMessage::SnapshotDone { delivered: false, reason: "too large".into() }),
        raft_bytes,
    ]
}

fn entries() -> Vec<Entry> {
    let now = Timestamp::new(1_700_000_000, 5);
    let entry = |op| Entry { now, client: None, op };
    vec![
        entry(Op::Noop),
        entry(Op::Mkdir {
            parent: 1,
            name: "d".into(),
            ino: 2,
            mode: 0o755,
            umask: 0o22,
            uid: 0,
            gid: 0,
        }),
        entry(Op::Symlink {
            parent: 2,
            name: "l".into(),
            ino: 3,
            target: "../x".into(),
            uid: 1,
            gid: 1,
        }),
        entry(Op::Rename {
            parent: 2,
            name: "l".into(),
            new_parent: 1,
            new_name: "m".into(),
            flags: 0,
        }),
        entry(Op::Unlink { parent: 1, name: "m".into() }),
    ]
}

/// An empty namespace's snapshot and one after the entries above (the mode byte 0: as is).
fn snapshots() -> Vec<Vec<u8>> {
    let mut state = State::new(Timestamp::new(1_700_000_000, 0));
    let mut blobs = vec![state.to_snapshot()];
    for (index, entry) in entries().iter().enumerate() {
        let _ = state.apply(index as u64 + 1, entry);
    }
    blobs.push(state.to_snapshot());
    blobs.into_iter().map(|blob| [&[0u8][..], &blob].concat()).collect()
}

fn chunk_headers() -> Vec<Vec<u8>> {
    use mfsha_chunk::format;
    let mut header = vec![0u8];
    header.extend_from_slice(&format::encode_header(0x1234, 7));
    header.extend_from_slice(&format::encode_crcs(&[format::zero_block_crc(); 4]));
    vec![header, format::file_name(0x1234, 7).into_bytes()]
}

/// The configs the package ships (`deploy/`), each behind the byte that picks its daemon.
fn configs() -> Vec<Vec<u8>> {
    let shipped = [
        (0u8, include_str!("../../../deploy/master.yaml")),
        (0, include_str!("../../../deploy/appliance-vip/master1.yaml")),
        (1, include_str!("../../../deploy/chunkserver.yaml")),
        (2, include_str!("../../../deploy/logger.yaml")),
        (2, include_str!("../../../deploy/appliance-vip/logger.yaml")),
    ];
    shipped.into_iter().map(|(which, text)| [&[which][..], text.as_bytes()].concat()).collect()
}

/// The shipped exports file, and one line of each address form with most options.
fn exports() -> Vec<Vec<u8>> {
    let text = "192.168.200.0/24 / rw,alldirs,mapall=mfs:mfs,password=111111\n\
                10.0.0.1-10.0.0.9 /a ro,maproot=0:0,md5pass=0123456789abcdef0123456789abcdef\n\
                10.1.0.0/255.255.0.0 . rw,admin,umask=022,mingoal=1,maxgoal=3\n\
                * / ro,mintrashtime=1h,maxtrashtime=2d,minversion=1.2.3,ignoregid\n";
    vec![
        include_str!("../../../deploy/mfsexports.cfg").as_bytes().to_vec(),
        text.as_bytes().to_vec(),
    ]
}
