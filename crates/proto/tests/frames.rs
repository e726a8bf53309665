//! Frame round trips, each kind of bad frame, and random bytes fed to the decoder.

use mfsha_proto::client::{Answer, ClientOp, ClientReply, Request};
use mfsha_proto::cs::{CsToMaster, DiskInfo, FromMaster, MasterToCs};
use mfsha_proto::data::{DataReply, DataRequest};
use mfsha_proto::frame::{decode, decode_body, encode};
use mfsha_proto::logger::{LoggerToMaster, MasterToLogger};
use mfsha_proto::peer::PeerMessage;
use mfsha_proto::types::*;
use mfsha_proto::{
    read_frame, write_frame, Frame, FrameError, FrameReader, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(id: u64, body: T) {
    let mut buf = Vec::new();
    encode(id, &body, &mut buf).unwrap();
    let (frame, used) = decode::<T>(&buf).unwrap().expect("a whole frame");
    assert_eq!(used, buf.len());
    assert_eq!(frame, Frame { request_id: id, body });
}

fn sample_attr() -> Attr {
    Attr {
        ino: 42,
        kind: FileKind::File,
        mode: 0o644,
        uid: 1000,
        gid: 100,
        size: 1 << 40,
        nlink: 2,
        rdev: 0,
        atime: Timestamp::new(-5, 999_999_999),
        mtime: Timestamp::new(1 << 33, 1),
        ctime: Timestamp::new(0, 0),
        goal: 3,
        trash_seconds: 86_400,
    }
}

#[test]
fn client_messages_round_trip() {
    let req = |op| Request { session: 7, seq: 9, uid: 0, gid: 0, groups: Vec::new(), op };
    round_trip(1, req(ClientOp::Lookup { parent: 1, name: "ä/weird name".into() }));
    round_trip(
        2,
        req(ClientOp::SetAttr {
            ino: 5,
            set: SetAttr { size: Some(3), ..Default::default() },
            by_handle: true,
        }),
    );
    round_trip(
        3,
        req(ClientOp::SetXattr {
            ino: 5,
            name: "user.x".into(),
            value: serde_bytes::ByteBuf::from(vec![0, 1, 2]),
            flags: 1,
        }),
    );
    round_trip(u64::MAX, Ok::<_, Status>(ClientReply::Attr(sample_attr())));
    round_trip(4, Err::<ClientReply, _>(Status::NotLeader));
    let entries = vec![DirEntry { name: "a".into(), attr: sample_attr() }];
    round_trip(5, Ok::<_, Status>(ClientReply::Entries { entries, more: true }));
}

#[test]
fn chunkserver_data_logger_peer_messages_round_trip() {
    let disk = DiskInfo {
        path: "/d1".into(),
        total_bytes: 10,
        used_bytes: 5,
        chunks: 1,
        ..Default::default()
    };
    round_trip(
        0,
        CsToMaster::Register {
            host: None,
            port: 9422,
            labels: vec![],
            disks: vec![disk],
            server_id: 3,
            cluster: Some("mfsha".into()),
        },
    );
    round_trip(0, CsToMaster::Heartbeat { disks: vec![], writing: vec![1, u64::MAX] });
    round_trip(0, CsToMaster::Copy { chunk_id: 5, version: 6 });
    round_trip(0, CsToMaster::Gone { chunk_id: 5 });
    round_trip(0, CsToMaster::Chunks(vec![(1, 2, false), (u64::MAX, u32::MAX, true)]));
    round_trip(
        0,
        MasterToCs::Replicate {
            op: 1,
            chunk_id: 2,
            version: 3,
            source: ServerAddr { host: "h".into(), port: 1 },
        },
    );
    let data = serde_bytes::ByteBuf::from(vec![7u8; 65536]);
    round_trip(
        8,
        DataRequest::Write {
            chunk_id: 1,
            version: 1,
            offset: 0,
            data: data.clone(),
            chain: vec![ServerAddr { host: "h".into(), port: 1 }],
            hop: 0,
            token: mfsha_proto::chunk_token::ChunkToken { expires_ms: 9, mac: [3; 16] },
            crcs: vec![1],
        },
    );
    round_trip(8, Ok::<_, Status>(DataReply::Data { data, crcs: vec![2] }));
    round_trip(0, LoggerToMaster::Hello { name: "l1".into(), applied: 10, cluster: None });
    let cluster = Some("mfsha".into());
    round_trip(0, LoggerToMaster::Hello { name: "l1".into(), applied: 10, cluster });
    round_trip(0, MasterToLogger::Entries(vec![(1, 1, serde_bytes::ByteBuf::from(vec![1]))]));
    round_trip(0, PeerMessage::Raft(serde_bytes::ByteBuf::from(vec![1, 2, 3])));
}

fn sample_hint() -> LeaderHint {
    LeaderHint {
        term: 7,
        leader_id: 2,
        client: Some("m2:9421".into()),
        chunkserver: Some("[::1]:9420".into()),
        logger: None,
        cluster_id: "mfsha".into(),
    }
}

#[test]
fn leader_hints_terms_and_redirects_round_trip() {
    let who = Request::anonymous(ClientOp::WhoLeads);
    assert!(!ClientOp::WhoLeads.is_mutation());
    round_trip(1, who);
    round_trip(1, Answer::new(7, Ok(ClientReply::Leader(sample_hint()))));
    round_trip(2, Answer::new(u64::MAX, Err(Status::NotLeader)));
    round_trip(3, Answer::new(0, Ok(ClientReply::Leader(LeaderHint::default()))));
    round_trip(0, FromMaster { term: 7, msg: MasterToCs::Welcome { master_node: 2 } });
    let masters = vec![(1, "m1:9420".to_string()), (2, "m2:9420".to_string())];
    let hello = MasterToCs::Hello { master_node: 2, cluster: "mfsha".into(), masters };
    round_trip(0, FromMaster { term: 8, msg: hello });
    let delete = MasterToCs::Delete { op: 9, chunk_id: 1, version: 0 };
    round_trip(0, FromMaster { term: 1 << 40, msg: delete });
    round_trip(0, MasterToLogger::NotLeader { leader_hint: Some("m2:9419".into()) });
    round_trip(0, MasterToLogger::NotLeader { leader_hint: None });
    round_trip(0, MasterToLogger::Heartbeat);
    round_trip(0, FromMaster { term: 3, msg: MasterToCs::Heartbeat });
}

#[test]
fn a_partial_frame_asks_for_more_bytes() {
    let mut buf = Vec::new();
    encode(3, &ClientOp::StatFs, &mut buf).unwrap();
    for cut in 0..buf.len() {
        assert!(decode::<ClientOp>(&buf[..cut]).unwrap().is_none(), "cut at {cut}");
    }
}

#[test]
fn an_oversized_length_is_refused_before_allocating() {
    let len = (MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
    let err = decode::<ClientOp>(&[len[0], len[1], len[2], len[3], PROTOCOL_VERSION]).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { len, max } if len == MAX_FRAME_BYTES + 1 && max == MAX_FRAME_BYTES)
    );
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn a_frame_shorter_than_its_header_is_refused() {
    let err = decode::<ClientOp>(&[0, 0, 0, 3, PROTOCOL_VERSION, 0, 0]).unwrap_err();
    assert!(matches!(err, FrameError::TooShort { len: 3, .. }), "{err:?}");
}

#[test]
fn a_wrong_version_is_refused() {
    let mut buf = Vec::new();
    encode(3, &ClientOp::StatFs, &mut buf).unwrap();
    buf[4] = PROTOCOL_VERSION + 1;
    let err = decode::<ClientOp>(&buf).unwrap_err();
    assert!(
        matches!(err, FrameError::BadVersion { got, want } if got == PROTOCOL_VERSION + 1 && want == PROTOCOL_VERSION)
    );
}

#[test]
fn garbage_and_trailing_bytes_are_refused() {
    let mut body = vec![PROTOCOL_VERSION, 0, 0, 0, 0, 0, 0, 0, 1];
    body.push(250); // no ClientOp variant has this tag
    let err = decode_body::<ClientOp>(&body).unwrap_err();
    assert!(matches!(err, FrameError::Garbage { .. }), "{err:?}");
    assert!(err.to_string().contains("ClientOp"), "error names the expected type: {err}");

    let mut buf = Vec::new();
    encode(3, &ClientOp::StatFs, &mut buf).unwrap();
    buf.push(0);
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    let err = decode::<ClientOp>(&buf).unwrap_err();
    assert!(err.to_string().contains("trailing"), "{err}");
}

#[test]
fn encoding_a_too_large_message_fails_cleanly() {
    let data = serde_bytes::ByteBuf::from(vec![0u8; MAX_FRAME_BYTES]);
    let mut buf = vec![9u8];
    let err = encode(1, &DataReply::Data { data, crcs: Vec::new() }, &mut buf).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge { .. }));
    assert_eq!(buf, vec![9u8], "a failed encode leaves the buffer as it was");
}

#[tokio::test]
async fn stream_reads_distinguish_clean_close_from_truncation() {
    let mut buf = Vec::new();
    write_frame(&mut buf, 11, &ClientOp::StatFs).await.unwrap();
    let mut whole = &buf[..];
    let frame: Frame<ClientOp> = read_frame(&mut whole).await.unwrap();
    assert_eq!(frame.request_id, 11);
    let mut empty: &[u8] = &[];
    assert!(matches!(read_frame::<_, ClientOp>(&mut empty).await, Err(FrameError::Closed)));
    let mut cut = &buf[..buf.len() - 1];
    assert!(matches!(read_frame::<_, ClientOp>(&mut cut).await, Err(FrameError::Truncated)));
    let mut cut_len = &buf[..2];
    assert!(matches!(read_frame::<_, ClientOp>(&mut cut_len).await, Err(FrameError::Truncated)));
}

/// One buffer is reused for every frame of a connection and grows without being zero-filled:
/// a frame after a larger one must not see the larger one's tail, nor a later one a stale gap.
#[tokio::test]
async fn a_reused_read_buffer_holds_exactly_each_frame() {
    let sizes = [300_000usize, 10, 70_000, 0, 300_001];
    let mut stream = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let data = vec![i as u8 + 1; n];
        let reply =
            DataReply::Data { data: serde_bytes::ByteBuf::from(data), crcs: vec![n as u32] };
        write_frame(&mut stream, i as u64, &reply).await.unwrap();
    }
    let mut reader = &stream[..];
    let mut buf = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        FrameReader::read_into(&mut reader, &mut buf).await.unwrap();
        let frame: Frame<DataReply> = decode_body(&buf).unwrap();
        assert_eq!(frame.request_id, i as u64);
        let data = serde_bytes::ByteBuf::from(vec![i as u8 + 1; n]);
        assert_eq!(frame.body, DataReply::Data { data, crcs: vec![n as u32] });
    }
    assert!(matches!(FrameReader::read_into(&mut reader, &mut buf).await, Err(FrameError::Closed)));
}

/// A peer that announces the largest frame and sends a few bytes of it costs a few bytes, not
/// 8 MiB: the buffer grows as bytes arrive (10,000 such peers once meant 80 GB of zeroed pages).
#[tokio::test]
async fn an_announced_frame_costs_only_the_bytes_that_arrived() {
    let mut stream = (MAX_FRAME_BYTES as u32).to_be_bytes().to_vec();
    stream.extend_from_slice(&[PROTOCOL_VERSION; 100]);
    let mut reader = &stream[..];
    let mut buf = Vec::new();
    let read = FrameReader::read_into(&mut reader, &mut buf).await;
    assert!(matches!(read, Err(FrameError::Truncated)), "{read:?}");
    assert!(buf.capacity() < 64 << 10, "{} bytes reserved for 100 received", buf.capacity());
}

/// A sender that starts a frame and then stalls is cut off at the frame deadline; one that
/// sends nothing at the first-byte deadline, each with its own error.
#[tokio::test]
async fn a_stalled_frame_and_a_silent_peer_time_out() {
    let limit = std::time::Duration::from_millis(100);
    let (mut ours, theirs) = tokio::io::duplex(1 << 16);
    let mut reader = tokio::io::BufReader::new(theirs);
    let mut buf = Vec::new();
    let silent = FrameReader::read_within(&mut reader, &mut buf, Some(limit), limit).await;
    assert!(matches!(silent, Err(FrameError::Silent { .. })), "{silent:?}");
    tokio::io::AsyncWriteExt::write_all(&mut ours, &1000u32.to_be_bytes()).await.unwrap();
    let stalled = FrameReader::read_within(&mut reader, &mut buf, Some(limit), limit).await;
    assert!(matches!(stalled, Err(FrameError::TimedOut { .. })), "{stalled:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    /// Random bytes never panic the decoder, and whatever it accepts re-encodes to the same frame.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_random::<Request>(&bytes);
        check_random::<Result<ClientReply, Status>>(&bytes);
        check_random::<CsToMaster>(&bytes);
        check_random::<MasterToCs>(&bytes);
        check_random::<DataRequest>(&bytes);
        check_random::<MasterToLogger>(&bytes);
    }

    /// A valid frame with one random byte changed never panics the decoder.
    #[test]
    fn mutated_frames_never_panic(pos in any::<usize>(), byte in any::<u8>(), name in "[a-z]{0,40}") {
        let mut buf = Vec::new();
        let req = Request { session: 1, seq: 2, uid: 3, gid: 4, groups: vec![5, 6], op: ClientOp::Lookup { parent: 1, name } };
        encode(5, &req, &mut buf).unwrap();
        let i = pos % buf.len();
        buf[i] = byte;
        check_random::<Request>(&buf);
    }
}

fn check_random<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    if let Ok(Some((frame, used))) = decode::<T>(bytes) {
        assert!(used <= bytes.len());
        let mut again = Vec::new();
        encode(frame.request_id, &frame.body, &mut again).unwrap();
        let (back, _) = decode::<T>(&again).unwrap().unwrap();
        assert_eq!(back, frame);
    }
}
