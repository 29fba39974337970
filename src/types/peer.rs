//! Peer and group identities: [`PeerId`] (braft's `ip:port:idx`) and [`GroupId`].
//!
//! A `PeerId` has exactly one binary encoding, used both on the wire and in `raft_meta`, and one
//! text form, parsed with errors that say what is wrong. Decoders never panic and never
//! allocate more than the input holds.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{RaftError, Result};
use crate::types::codec::{put_u16, put_u32, put_u8, Reader};

/// Encoding tag for "no peer" (an `Option<PeerId>` that is `None`).
const FAMILY_NONE: u8 = 0;
/// Encoding tag for an IPv4 peer.
const FAMILY_V4: u8 = 4;
/// Encoding tag for an IPv6 peer.
const FAMILY_V6: u8 = 6;

/// One peer of a replication group: a server's address plus an index.
///
/// Text form `ip:port:idx` (`[v6]:port:idx` for IPv6; `idx` defaults to 0 when omitted), as in
/// braft. The index lets a node whose disk was wiped rejoin as a *new* peer on the same address:
/// it has forgotten its vote, so it must not be mistaken for its old self.
///
/// Binary form (little-endian): `family u8 (4|6) | ip (4|16 bytes) | port u16 | idx u32`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    addr: SocketAddr,
    idx: u32,
}

impl PeerId {
    /// The largest encoded size of a `PeerId` (IPv6).
    pub const ENCODED_LEN_MAX: usize = 1 + 16 + 2 + 4;
    /// The smallest encoded size of a `PeerId` (IPv4).
    pub const ENCODED_LEN_MIN: usize = 1 + 4 + 2 + 4;

    /// A peer at `addr` with index `idx`.
    pub fn new(addr: SocketAddr, idx: u32) -> PeerId {
        PeerId { addr, idx }
    }

    /// The server address (where this peer's `Server` listens).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The index that tells apart peers sharing one address.
    pub fn idx(&self) -> u32 {
        self.idx
    }

    /// Appends the binary encoding.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self.addr.ip() {
            IpAddr::V4(ip) => {
                put_u8(buf, FAMILY_V4);
                buf.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                put_u8(buf, FAMILY_V6);
                buf.extend_from_slice(&ip.octets());
            }
        }
        put_u16(buf, self.addr.port());
        put_u32(buf, self.idx);
    }

    /// Appends the encoding of an optional peer (`None` is a single zero byte).
    pub fn encode_opt(peer: Option<&PeerId>, buf: &mut Vec<u8>) {
        match peer {
            Some(p) => p.encode(buf),
            None => put_u8(buf, FAMILY_NONE),
        }
    }

    /// Reads one `PeerId`; "no peer" is an error here.
    pub fn decode(r: &mut Reader<'_>) -> Result<PeerId> {
        PeerId::decode_opt(r)?.ok_or_else(|| r.error("expected a peer id, found none"))
    }

    /// Reads an optional `PeerId` as written by [`PeerId::encode_opt`].
    pub fn decode_opt(r: &mut Reader<'_>) -> Result<Option<PeerId>> {
        let ip = match r.u8()? {
            FAMILY_NONE => return Ok(None),
            FAMILY_V4 => {
                let b = r.bytes(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            FAMILY_V6 => {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(r.bytes(16)?);
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            other => return Err(r.error(format!("unknown address family {other}"))),
        };
        let port = r.u16()?;
        let idx = r.u32()?;
        Ok(Some(PeerId::new(SocketAddr::new(ip, port), idx)))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.idx)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerId {
    type Err = RaftError;

    /// Parses `ip:port[:idx]` or `[ipv6]:port[:idx]`.
    fn from_str(s: &str) -> Result<PeerId> {
        let bad = |why: &str| {
            RaftError::invalid(format!(
                "bad peer id {s:?}: {why} (expected ip:port[:idx], e.g. 127.0.0.1:8100:0)"
            ))
        };
        let s = s.trim();
        // The address part ends at the port; for IPv6 the port follows "]:".
        let (addr_part, idx_part) = if s.starts_with('[') {
            let close = s
                .find("]:")
                .ok_or_else(|| bad("IPv6 address needs [..]:port"))?;
            match s[close + 2..].split_once(':') {
                Some((port, idx)) => (&s[..close + 2 + port.len()], Some(idx)),
                None => (s, None),
            }
        } else {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.len() {
                2 => (s, None),
                3 => (&s[..parts[0].len() + 1 + parts[1].len()], Some(parts[2])),
                _ => return Err(bad("wrong number of ':'-separated parts")),
            }
        };
        let addr: SocketAddr = addr_part
            .parse()
            .map_err(|_| bad("address is not a valid ip:port"))?;
        let idx = match idx_part {
            Some(i) => i
                .parse::<u32>()
                .map_err(|_| bad("idx is not a number in 0..=4294967295"))?,
            None => 0,
        };
        Ok(PeerId::new(addr, idx))
    }
}

/// The name of a replication group. Cheap to clone (shared).
///
/// 1 to [`GroupId::LEN_MAX`] bytes of `[A-Za-z0-9_.-]`, so it is safe in file paths and logs.
/// Binary form: `len u8 | bytes`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(Arc<str>);

impl GroupId {
    /// The longest group name accepted.
    pub const LEN_MAX: usize = 128;

    /// A group id, validated.
    pub fn new(name: &str) -> Result<GroupId> {
        GroupId::validate(name)?;
        Ok(GroupId(Arc::from(name)))
    }

    fn validate(name: &str) -> Result<()> {
        if name.is_empty() || name.len() > GroupId::LEN_MAX {
            return Err(RaftError::invalid(format!(
                "group id {name:?} must be 1..={} bytes",
                GroupId::LEN_MAX
            )));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
        if !name.chars().all(ok) {
            return Err(RaftError::invalid(format!(
                "group id {name:?} may contain only [A-Za-z0-9_.-]"
            )));
        }
        Ok(())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Appends the binary encoding.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        // validate() bounds the length to LEN_MAX, which fits a u8.
        const _: () = assert!(GroupId::LEN_MAX <= u8::MAX as usize);
        put_u8(buf, self.0.len() as u8);
        buf.extend_from_slice(self.0.as_bytes());
    }

    /// Reads the name without allocating, validated; for lookups on the hot path.
    pub fn decode_str<'a>(r: &mut Reader<'a>) -> Result<&'a str> {
        let len = r.u8()? as usize;
        let bytes = r.bytes(len)?;
        let name = std::str::from_utf8(bytes).map_err(|_| r.error("group id is not utf-8"))?;
        GroupId::validate(name).map_err(|e| r.error(e.to_string()))?;
        Ok(name)
    }

    /// Reads a group id.
    pub fn decode(r: &mut Reader<'_>) -> Result<GroupId> {
        Ok(GroupId(Arc::from(GroupId::decode_str(r)?)))
    }
}

/// Lookups by `&str` (a name decoded from a frame without allocating). Consistent with
/// `Hash` and `Eq`, which are those of the name.
impl std::borrow::Borrow<str> for GroupId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl FromStr for GroupId {
    type Err = RaftError;
    fn from_str(s: &str) -> Result<GroupId> {
        GroupId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_parses_braft_forms() {
        let p: PeerId = "127.0.0.1:8100:3".parse().unwrap();
        assert_eq!(p.addr(), "127.0.0.1:8100".parse().unwrap());
        assert_eq!(p.idx(), 3);
        assert_eq!(p.to_string(), "127.0.0.1:8100:3");
        let p: PeerId = "10.0.0.1:80".parse().unwrap();
        assert_eq!(p.idx(), 0);
        let p: PeerId = "[::1]:9000:7".parse().unwrap();
        assert_eq!(p.to_string(), "[::1]:9000:7");
        assert_eq!(p, p.to_string().parse().unwrap());
        let p: PeerId = "[::1]:9000".parse().unwrap();
        assert_eq!(p.idx(), 0);
    }

    #[test]
    fn peer_id_parse_errors_say_what_is_wrong() {
        for (bad, why) in [
            ("", "wrong number"),
            ("1.2.3.4", "wrong number"),
            ("1.2.3.4:x:0", "not a valid ip:port"),
            ("1.2.3.4:80:-1", "idx"),
            ("1.2.3.4:80:0:1", "wrong number"),
            ("[::1:80", "IPv6"),
            ("300.1.1.1:80:0", "not a valid"),
        ] {
            let err = bad.parse::<PeerId>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?} -> {err}");
        }
    }

    #[test]
    fn group_id_is_validated() {
        assert!(GroupId::new("counter_1.a-b").is_ok());
        assert!(GroupId::new("").is_err());
        assert!(GroupId::new("a/b").is_err());
        assert!(GroupId::new(&"x".repeat(129)).is_err());
    }
}
