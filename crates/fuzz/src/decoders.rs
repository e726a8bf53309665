//! The targets' bodies: each decodes as its daemon does, then checks the answer.

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use mfsha_proto::frame::{self, Frame, HEADER_BYTES};
use mfsha_proto::{client, cs, data, logger, peer, types::Reply};
use protobuf::Message as _;
use serde::{de::DeserializeOwned, Serialize};

/// Decodes `data` as a stream of `T` frames, as a connection's reader does, and checks that
/// each whole frame encodes back to one that decodes to the same value.
fn frames<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) -> Vec<Frame<T>> {
    let mut decoded = Vec::new();
    let mut rest = data;
    while let Ok(Some((frame, used))) = frame::decode::<T>(rest) {
        assert!(used >= 4 + HEADER_BYTES && used <= rest.len(), "decode used {used} bytes");
        round_trip(&frame);
        rest = &rest[used..];
        decoded.push(frame);
    }
    decoded
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(frame: &Frame<T>) {
    let mut out = Vec::new();
    frame::encode(frame.request_id, &frame.body, &mut out).expect("a decoded frame encodes");
    let (again, used) = frame::decode::<T>(&out)
        .expect("a re-encoded frame decodes")
        .expect("a re-encoded frame is whole");
    assert_eq!(used, out.len());
    assert_eq!(&again, frame, "the frame changed on its way through encode and decode");
}

pub fn client_port(data: &[u8]) {
    frames::<client::Request>(data);
    frames::<client::Answer>(data);
}

pub fn chunkserver_port(data: &[u8]) {
    frames::<cs::CsToMaster>(data);
    frames::<cs::FromMaster>(data);
}

pub fn data_port(data: &[u8]) {
    frames::<data::DataRequest>(data);
    frames::<Reply<data::DataReply>>(data);
}

pub fn logger_port(data: &[u8]) {
    frames::<logger::LoggerToMaster>(data);
    frames::<logger::MasterToLogger>(data);
}

/// Peer frames, then the raft-rs message each `Raft` frame carries (and the input itself as
/// one, so the fuzzer reaches the protobuf decoder without building frames around it).
pub fn peer_port(data: &[u8]) {
    for frame in frames::<peer::PeerMessage>(data) {
        if let peer::PeerMessage::Raft(bytes) = frame.body {
            raft_message(&bytes);
        }
    }
    raft_message(data);
}

/// The message must come back the same through encode and decode in every field raft-rs
/// reads. Unknown fields are left out of the comparison: rust-protobuf keeps them in a hash
/// map, so their order on the wire changes from one encoding to the next, and its `==` tells
/// an empty map (left by a merged submessage) from none. Both were found by the fuzzer
/// (`fuzz/corpus/peer_port/unknown-fields-merged`, `…/unknown-fields-reordered`).
fn raft_message(bytes: &[u8]) {
    let Ok(message) = raft::eraftpb::Message::parse_from_bytes(bytes) else { return };
    let encoded = message.write_to_bytes().expect("a decoded raft message encodes");
    let again = raft::eraftpb::Message::parse_from_bytes(&encoded).expect("and decodes");
    assert_eq!(
        known_fields(again),
        known_fields(message),
        "the raft message changed through encode and decode"
    );
}

/// The message without the unknown fields of it and of each submessage raft-rs has.
fn known_fields(mut m: raft::eraftpb::Message) -> raft::eraftpb::Message {
    use protobuf::UnknownFields;
    m.unknown_fields = UnknownFields::new();
    for entry in m.entries.iter_mut() {
        entry.unknown_fields = UnknownFields::new();
    }
    if let Some(snapshot) = m.snapshot.as_mut() {
        snapshot.unknown_fields = UnknownFields::new();
        if let Some(meta) = snapshot.metadata.as_mut() {
            meta.unknown_fields = UnknownFields::new();
            if let Some(conf) = meta.conf_state.as_mut() {
                conf.unknown_fields = UnknownFields::new();
            }
        }
    }
    m
}

/// A committed entry: apply decodes it with postcard, exactly as here.
pub fn raft_entry(data: &[u8]) {
    let Ok(entry) = postcard::from_bytes::<mfsha_meta::Entry>(data) else { return };
    let encoded = postcard::to_allocvec(&entry).expect("a decoded entry encodes");
    let again = postcard::from_bytes::<mfsha_meta::Entry>(&encoded).expect("and decodes");
    assert_eq!(again, entry, "the entry changed through encode and decode");
}

/// A snapshot from the leader. With the first byte odd the rest gets a valid checksum, as a
/// forged or buggy snapshot would have: the loader must still refuse what is inconsistent.
pub fn snapshot(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else { return };
    let mut bytes = body.to_vec();
    if mode & 1 == 1 {
        bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    }
    let Ok(state) = mfsha_meta::State::from_snapshot(&bytes) else { return };
    if let Err(problems) = state.check_invariants() {
        panic!("a snapshot that breaks the invariants loaded: {problems:?}");
    }
    let again =
        mfsha_meta::State::from_snapshot(&state.to_snapshot()).expect("a re-snapshot loads");
    assert_eq!(again.digest(), state.digest(), "the state changed through a snapshot");
}

/// A chunk file: its name as the scan reads it, then its header (with the first byte odd,
/// the header's checksum made valid so the fuzzer gets past it) and CRC table.
pub fn chunk_header(data: &[u8]) {
    use mfsha_chunk::format;
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some((id, version)) = format::parse_file_name(name) {
            assert_eq!(format::file_name(id, version), name, "a chunk name parsed as another");
        }
    }
    let Some((&mode, bytes)) = data.split_first() else { return };
    let mut header = bytes.to_vec();
    if mode & 1 == 1 && header.len() >= 24 {
        let crc = crc32c::crc32c(&header[..20]);
        header[20..24].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok((id, version)) = format::decode_header(&header) {
        assert_eq!(format::decode_header(&format::encode_header(id, version)), Ok((id, version)));
    }
    let table = &bytes[..bytes.len() / 4 * 4];
    assert_eq!(format::encode_crcs(&format::decode_crcs(table)), table);
}

/// The first byte picks the daemon; the rest is its YAML. A refusal names the file.
pub fn config(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(text) else { return };
    let path = Path::new("/etc/mfsha/fuzz.yaml");
    let error = match which % 3 {
        0 => mfsha_master_ha::config::parse(path, text).err(),
        1 => mfsha_chunk::config::parse(path, text).err(),
        _ => mfsha_logger::config::parse(path, text).err(),
    };
    if let Some(error) = error {
        let message = error.to_string();
        assert!(
            message.contains("/etc/mfsha/fuzz.yaml"),
            "error does not name the file: {message}"
        );
    }
}

/// An exports file, then the lookups a session start makes with it.
pub fn exports(data: &[u8]) {
    use mfsha_master_ha::exports::{Accounts, Exports};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let accounts = Accounts::from_text(
        "root:x:0:0::/root:/bin/sh\nmfs:x:998:998::/:/bin/false\n",
        "mfs:x:998:\n",
    );
    match Exports::parse(Path::new("/etc/mfsha/mfsexports.cfg"), text, &accounts) {
        Err(error) => {
            let lines = text.split('\n').count();
            assert!(error.line >= 1 && error.line <= lines, "line {} of {lines}", error.line);
            assert!(error.column >= 1, "column {} of line {}", error.column, error.line);
        }
        Ok(exports) => {
            let addresses = [
                IpAddr::V4(Ipv4Addr::new(192, 168, 200, 7)),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ];
            for ip in addresses {
                for dir in ["/", "/a/b", ".", ""] {
                    let _ = exports.find(ip, dir);
                }
            }
        }
    }
}
