//! Property tests of every shared encoding: round trip, and truncated or random input is an
//! error, never a panic.

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::codec::Reader;
use super::*;

fn peer() -> impl Strategy<Value = PeerId> {
    let v4 = (any::<[u8; 4]>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, idx)| {
        PeerId::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port), idx)
    });
    let v6 = (any::<[u8; 16]>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, idx)| {
        PeerId::new(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port), idx)
    });
    prop_oneof![v4, v6]
}

fn configuration() -> impl Strategy<Value = Configuration> {
    (
        proptest::collection::btree_set(peer(), 0..6),
        proptest::collection::btree_set(peer(), 0..4),
        proptest::collection::btree_set(peer(), 0..6),
    )
        .prop_map(|(voters, learners, old)| {
            let learners: BTreeSet<PeerId> = learners.difference(&voters).copied().collect();
            Configuration::from_parts(voters, learners, old).unwrap()
        })
}

/// Decodes every strict prefix of `bytes` with `decode`: each must be an error.
fn every_prefix_fails<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&mut Reader<'_>) -> crate::Result<T>,
) {
    for cut in 0..bytes.len() {
        let mut r = Reader::new("test", &bytes[..cut]);
        let res = decode(&mut r).and_then(|v| r.finish().map(|_| v));
        assert!(
            res.is_err(),
            "prefix of {cut}/{} bytes decoded: {res:?}",
            bytes.len()
        );
    }
}

proptest! {
    #[test]
    fn peer_id_round_trips_in_binary_and_text(p in peer()) {
        let mut buf = Vec::new();
        p.encode(&mut buf);
        let mut r = Reader::new("PeerId", &buf);
        prop_assert_eq!(PeerId::decode(&mut r).unwrap(), p);
        r.finish().unwrap();
        prop_assert_eq!(p.to_string().parse::<PeerId>().unwrap(), p);
        every_prefix_fails(&buf, PeerId::decode);
    }

    #[test]
    fn optional_peer_round_trips(p in proptest::option::of(peer())) {
        let mut buf = Vec::new();
        PeerId::encode_opt(p.as_ref(), &mut buf);
        let mut r = Reader::new("PeerId", &buf);
        prop_assert_eq!(PeerId::decode_opt(&mut r).unwrap(), p);
        r.finish().unwrap();
        every_prefix_fails(&buf, PeerId::decode_opt);
    }

    #[test]
    fn entry_type_round_trips_and_unknown_bytes_are_refused(v in any::<u8>()) {
        match EntryType::from_u8(v) {
            Ok(kind) => prop_assert_eq!(kind as u8, v),
            Err(e) => {
                prop_assert!(!(1..=3).contains(&v), "{v} refused: {e}");
                let is_decode = matches!(e, RaftError::Decode { .. });
                prop_assert!(is_decode, "{e}");
            }
        }
    }

    #[test]
    fn group_id_round_trips(name in "[A-Za-z0-9_.-]{1,128}") {
        let g = GroupId::new(&name).unwrap();
        let mut buf = Vec::new();
        g.encode(&mut buf);
        let mut r = Reader::new("GroupId", &buf);
        prop_assert_eq!(GroupId::decode(&mut r).unwrap(), g);
        r.finish().unwrap();
        every_prefix_fails(&buf, GroupId::decode);
    }

    #[test]
    fn log_id_round_trips(index in any::<u64>(), term in any::<u64>()) {
        let id = LogId::new(index, term);
        let mut buf = Vec::new();
        id.encode(&mut buf);
        prop_assert_eq!(buf.len(), LogId::ENCODED_LEN);
        prop_assert_eq!(LogId::decode(&mut Reader::new("LogId", &buf)).unwrap(), id);
        every_prefix_fails(&buf, LogId::decode);
    }

    #[test]
    fn configuration_round_trips(c in configuration()) {
        let mut buf = Vec::new();
        c.encode(&mut buf);
        let mut r = Reader::new("Configuration", &buf);
        prop_assert_eq!(Configuration::decode(&mut r).unwrap(), c);
        r.finish().unwrap();
        every_prefix_fails(&buf, Configuration::decode);
    }

    #[test]
    fn decoders_never_panic_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        let _ = PeerId::decode_opt(&mut Reader::new("r", &bytes));
        let _ = GroupId::decode(&mut Reader::new("r", &bytes));
        let _ = LogId::decode(&mut Reader::new("r", &bytes));
        let _ = Configuration::decode(&mut Reader::new("r", &bytes));
        let _ = EntryType::from_u8(bytes.first().copied().unwrap_or(0));
        let _ = std::str::from_utf8(&bytes).map(|s| s.parse::<PeerId>());
    }

    #[test]
    fn mutated_configurations_decode_or_fail_cleanly(
        c in configuration(),
        pos in any::<usize>(),
        byte in any::<u8>()
    ) {
        let mut buf = Vec::new();
        c.encode(&mut buf);
        if !buf.is_empty() {
            let i = pos % buf.len();
            buf[i] = byte;
        }
        let _ = Configuration::decode(&mut Reader::new("c", &buf));
    }
}
