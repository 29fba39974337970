//! The CliService (braft's `cli_service` and `cli`): membership, leader transfer, snapshots
//! and leader lookup over the wire, for tools and for programs that administer a group from
//! another process.
//!
//! Server side: [`serve`] answers one request for a node on the server, by calling the
//! node's API (which only enqueues) from the IO thread and answering from the completion.
//! Client side: [`CliClient`] finds a group's leader among the peers of a configuration and
//! sends it the request, following one `NotLeader` redirect.
//!
//! Bodies (docs/PROTOCOL.md): every request starts with the common header
//! `group | sender | target` (the sender is the caller's listen address, the target the node
//! asked); then AddPeer, RemovePeer, TransferLeader: `PeerId`; ChangePeers, ResetPeer:
//! `Configuration`; Snapshot, GetLeader: nothing. Answers are empty, except GetLeader's:
//! the optional leader `PeerId`. Errors travel as their `RaftError` status.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::{RaftError, Result};
use crate::node::Node;
use crate::node_manager::NodeManager;
use crate::rpc::{Method, Request, Server};
use crate::types::codec::Reader;
use crate::types::{Configuration, GroupId, PeerId};

/// The CliService methods.
pub const METHODS: [Method; 7] = [
    Method::AddPeer,
    Method::RemovePeer,
    Method::ChangePeers,
    Method::ResetPeer,
    Method::Snapshot,
    Method::TransferLeader,
    Method::GetLeader,
];

/// What a request asks of its node.
enum Ask {
    AddPeer(PeerId),
    RemovePeer(PeerId),
    ChangePeers(Configuration),
    ResetPeer(Configuration),
    Snapshot,
    TransferLeader(PeerId),
    GetLeader,
}

fn decode(method: Method, body: &[u8]) -> Result<(String, PeerId, Ask)> {
    let mut r = Reader::new("CliService request", body);
    let group = GroupId::decode_str(&mut r)?.to_string();
    PeerId::decode(&mut r)?; // sender
    let peer = PeerId::decode(&mut r)?;
    let ask = match method {
        Method::AddPeer => Ask::AddPeer(PeerId::decode(&mut r)?),
        Method::RemovePeer => Ask::RemovePeer(PeerId::decode(&mut r)?),
        Method::ChangePeers => Ask::ChangePeers(Configuration::decode(&mut r)?),
        Method::ResetPeer => Ask::ResetPeer(Configuration::decode(&mut r)?),
        Method::Snapshot => Ask::Snapshot,
        Method::TransferLeader => Ask::TransferLeader(PeerId::decode(&mut r)?),
        Method::GetLeader => Ask::GetLeader,
        other => {
            return Err(RaftError::invalid(format!(
                "{other} is not a CliService method"
            )))
        }
    };
    r.finish()?;
    Ok((group, peer, ask))
}

/// Answers one CliService request (registered by `NodeManager::add_service`).
pub fn serve(req: Request) {
    let (group, peer, ask) = match decode(req.method, &req.body) {
        Ok(d) => d,
        Err(e) => return req.responder.respond(Err(e)),
    };
    let Some(node) = NodeManager::global().get(&group, &peer) else {
        return req.responder.respond(Err(RaftError::invalid(format!(
            "no node {group} {peer} here"
        ))));
    };
    if matches!(ask, Ask::GetLeader) {
        return req.responder.respond(Ok(vec![leader_of(&node)]));
    }
    let responder = req.responder;
    let empty = move |r: Result<()>| responder.respond(r.map(|_| Vec::new()));
    match ask {
        Ask::AddPeer(p) => node.add_peer(p, empty),
        Ask::RemovePeer(p) => node.remove_peer(p, empty),
        Ask::ChangePeers(c) => node.change_peers(c, empty),
        Ask::ResetPeer(c) => node.reset_peers(c, empty),
        Ask::Snapshot => node.snapshot(empty),
        Ask::TransferLeader(p) => node.transfer_leadership_to(p, empty),
        Ask::GetLeader => empty(Err(RaftError::invalid("GetLeader is answered above"))),
    }
}

/// GetLeader's answer: the leader `node` knows of, if any.
fn leader_of(node: &Node) -> Bytes {
    let mut buf = Vec::new();
    PeerId::encode_opt(node.leader_id().as_ref(), &mut buf);
    Bytes::from(buf)
}

/// Administers groups from a process of its own, through a [`Server`] it sends from.
pub struct CliClient {
    server: Arc<Server>,
    timeout: Duration,
}

impl CliClient {
    /// A client sending through `server`, each call waiting at most `timeout`.
    pub fn new(server: Arc<Server>, timeout: Duration) -> CliClient {
        CliClient { server, timeout }
    }

    /// Calls `method` on node `peer` of `group` and waits for the answer.
    fn call(&self, group: &GroupId, peer: PeerId, method: Method, args: &[u8]) -> Result<Bytes> {
        let mut body = Vec::with_capacity(80 + args.len());
        group.encode(&mut body);
        PeerId::new(self.server.local_addr(), 0).encode(&mut body);
        peer.encode(&mut body);
        body.extend_from_slice(args);
        let (tx, rx) = crossbeam::channel::bounded(1);
        self.server.call_default(
            peer.addr(),
            method,
            vec![Bytes::from(body)],
            self.timeout,
            move |r| {
                let _ = tx.send(r);
            },
        );
        rx.recv().unwrap_or(Err(RaftError::Stopped))
    }

    /// The leader `peer` knows of (`None` if it knows none).
    pub fn leader_known_to(&self, group: &GroupId, peer: PeerId) -> Result<Option<PeerId>> {
        let answer = self.call(group, peer, Method::GetLeader, &[])?;
        let mut r = Reader::new("GetLeader answer", &answer);
        let leader = PeerId::decode_opt(&mut r)?;
        r.finish()?;
        Ok(leader)
    }

    /// The leader of `group`, asking the peers of `conf` in turn (braft's `get_leader`).
    pub fn get_leader(&self, group: &GroupId, conf: &Configuration) -> Result<PeerId> {
        let mut last = RaftError::NotLeader { leader: None };
        for peer in conf.all_peers() {
            match self.leader_known_to(group, peer) {
                Ok(Some(leader)) => return Ok(leader),
                Ok(None) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends `method` to the leader of `group`, following one redirect.
    fn to_leader(
        &self,
        group: &GroupId,
        conf: &Configuration,
        method: Method,
        args: &[u8],
    ) -> Result<()> {
        let leader = self.get_leader(group, conf)?;
        match self.call(group, leader, method, args) {
            Err(RaftError::NotLeader { leader: Some(next) }) if next != leader => {
                self.call(group, next, method, args).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }

    /// Adds `peer` as a voter of `group` (whose peers `conf` names).
    pub fn add_peer(&self, group: &GroupId, conf: &Configuration, peer: PeerId) -> Result<()> {
        self.to_leader(group, conf, Method::AddPeer, &encode_peer(peer))
    }

    /// Removes `peer` from `group`.
    pub fn remove_peer(&self, group: &GroupId, conf: &Configuration, peer: PeerId) -> Result<()> {
        self.to_leader(group, conf, Method::RemovePeer, &encode_peer(peer))
    }

    /// Moves `group` from `conf` to `new`.
    pub fn change_peers(
        &self,
        group: &GroupId,
        conf: &Configuration,
        new: &Configuration,
    ) -> Result<()> {
        let mut args = Vec::new();
        new.encode(&mut args);
        self.to_leader(group, conf, Method::ChangePeers, &args)
    }

    /// Hands the leadership of `group` to `to`.
    pub fn transfer_leader(&self, group: &GroupId, conf: &Configuration, to: PeerId) -> Result<()> {
        self.to_leader(group, conf, Method::TransferLeader, &encode_peer(to))
    }

    /// Makes node `peer` of `group` take a snapshot now.
    pub fn snapshot(&self, group: &GroupId, peer: PeerId) -> Result<()> {
        self.call(group, peer, Method::Snapshot, &[]).map(|_| ())
    }

    /// Forces node `peer`'s configuration to `conf` without consensus (see
    /// [`Node::reset_peers`]).
    pub fn reset_peer(&self, group: &GroupId, peer: PeerId, conf: &Configuration) -> Result<()> {
        let mut args = Vec::new();
        conf.encode(&mut args);
        self.call(group, peer, Method::ResetPeer, &args).map(|_| ())
    }
}

fn encode_peer(peer: PeerId) -> Vec<u8> {
    let mut buf = Vec::new();
    peer.encode(&mut buf);
    buf
}
