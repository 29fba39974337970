//! [`NodeManager`] (braft's NodeManager): the process-wide map from group and peer to node,
//! and `add_service`, which registers traft's four services on a transport [`Server`].
//!
//! RaftService handlers run on the IO threads: they read only the envelope (group and target
//! peer) to route the body to its node's queue, acknowledge it at the transport level, and
//! return; decoding, checksum checks and the protocol run on the node's queue. FileService
//! `GetFile` goes to the owning node's snapshot queue on the disk pool; CliService requests
//! call the node's API, which only enqueues, and answer from its completion (`cli`). The
//! Stat service answers with the text status of every node on the server, built on the raft
//! pool (it takes each node's core lock, which an IO thread must not wait for).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use crate::error::{RaftError, Result};
use crate::node::Node;
use crate::pool::{Job, PoolHandle};
use crate::rpc::{Method, Request, Server};
use crate::types::codec::Reader;
use crate::types::{GroupId, PeerId};

/// Every node and every served address of this process.
#[derive(Default)]
pub struct NodeManager {
    /// Nodes by group, then peer. Lock order: `nodes` and `servers` are never held together.
    nodes: RwLock<HashMap<GroupId, Vec<Node>>>,
    servers: RwLock<HashMap<SocketAddr, Arc<Server>>>,
}

static GLOBAL: OnceLock<NodeManager> = OnceLock::new();

const RAFT_METHODS: [Method; 5] = [
    Method::PreVote,
    Method::RequestVote,
    Method::AppendEntries,
    Method::InstallSnapshot,
    Method::TimeoutNow,
];

/// One Stat request, answered on the raft pool.
struct StatJob {
    req: Mutex<Option<Request>>,
    addr: SocketAddr,
}

impl Job for StatJob {
    fn run(self: Arc<Self>, _pool: &PoolHandle) -> bool {
        // Bound first, so the lock is not held while the answer is built and sent.
        let req = self.req.lock().take();
        if let Some(req) = req {
            let text = NodeManager::global().stat_text(self.addr);
            req.responder.respond(Ok(vec![Bytes::from(text)]));
        }
        false
    }
}

impl NodeManager {
    /// The process-wide manager.
    pub fn global() -> &'static NodeManager {
        GLOBAL.get_or_init(NodeManager::default)
    }

    /// Registers RaftService, RaftStat, CliService and FileService on `server`; nodes whose
    /// peer address is `server.local_addr()` can then be initialized. Fails if the server (or
    /// another on its address) was added already.
    pub fn add_service(&self, server: &Arc<Server>) -> Result<()> {
        let addr = server.local_addr();
        {
            let mut servers = self.servers.write();
            if servers.contains_key(&addr) {
                return Err(RaftError::AlreadyExists {
                    what: format!("services on {addr}"),
                });
            }
            servers.insert(addr, server.clone());
        }
        for m in RAFT_METHODS {
            server.register(m, move |req: Request| NodeManager::global().route(req))?;
        }
        server.register(Method::GetFile, move |req: Request| {
            NodeManager::global().route_file(req)
        })?;
        let raft_pool = server.runtime().raft_pool();
        server.register(Method::Stat, move |req: Request| {
            // Building the status takes every node's core lock: not on the IO thread.
            let job = Arc::new(StatJob {
                req: Mutex::new(Some(req)),
                addr,
            });
            if let Err(e) = raft_pool.schedule(job.clone()) {
                let req = job.req.lock().take();
                if let Some(req) = req {
                    req.responder.respond(Err(e));
                }
            }
        })?;
        for m in crate::cli::METHODS {
            server.register(m, crate::cli::serve)?;
        }
        Ok(())
    }

    /// Forgets the server at `addr` (after it is shut down).
    pub fn remove_service(&self, addr: SocketAddr) {
        self.servers.write().remove(&addr);
    }

    pub(crate) fn server_for(&self, addr: SocketAddr) -> Option<Arc<Server>> {
        self.servers.read().get(&addr).cloned()
    }

    /// Adds a node; the same group and peer twice is an error.
    pub(crate) fn add(&self, node: Node) -> Result<()> {
        let mut nodes = self.nodes.write();
        let peers = nodes.entry(node.group().clone()).or_default();
        if peers.iter().any(|n| n.peer() == node.peer()) {
            return Err(RaftError::AlreadyExists {
                what: format!("node {} {}", node.group(), node.peer()),
            });
        }
        peers.push(node);
        Ok(())
    }

    /// Removes a node (at shutdown).
    pub(crate) fn remove(&self, group: &GroupId, peer: &PeerId) {
        let mut nodes = self.nodes.write();
        if let Some(peers) = nodes.get_mut(group) {
            peers.retain(|n| n.peer() != *peer);
            if peers.is_empty() {
                nodes.remove(group);
            }
        }
    }

    /// The node for `group` and `peer`, if this process runs it.
    pub fn get(&self, group: &str, peer: &PeerId) -> Option<Node> {
        let nodes = self.nodes.read();
        nodes
            .get(group)?
            .iter()
            .find(|n| n.peer() == *peer)
            .cloned()
    }

    /// Every node whose peer is served at `addr`.
    pub fn nodes_at(&self, addr: SocketAddr) -> Vec<Node> {
        let nodes = self.nodes.read();
        let mut out: Vec<Node> = nodes
            .values()
            .flatten()
            .filter(|n| n.peer().addr() == addr)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.group(), a.peer()).cmp(&(b.group(), b.peer())));
        out
    }

    /// Routes a RaftService request to its node's queue (on an IO thread: no blocking).
    fn route(&self, req: Request) {
        let target = {
            let mut r = Reader::new("RaftService envelope", &req.body);
            GroupId::decode_str(&mut r).and_then(|group| {
                PeerId::decode(&mut r)?;
                let to = PeerId::decode(&mut r)?;
                Ok(self.get(group, &to))
            })
        };
        match target {
            Ok(Some(node)) => {
                let delivered = crate::node::deliver(node.shared(), req.body);
                req.responder.respond(delivered.map(|()| Vec::new()));
            }
            Ok(None) => req
                .responder
                .respond(Err(RaftError::invalid("no such node here"))),
            Err(e) => req.responder.respond(Err(e)),
        }
    }

    /// FileService: hands a `GetFile` to the node owning the snapshot (its queue on the disk
    /// pool reads and answers; the IO thread only routes).
    fn route_file(&self, req: Request) {
        let owner = {
            let mut r = Reader::new("GetFile", &req.body);
            GroupId::decode_str(&mut r).and_then(|group| {
                PeerId::decode(&mut r)?; // sender
                let owner = PeerId::decode(&mut r)?;
                Ok(self.get(group, &owner))
            })
        };
        match owner {
            Ok(Some(node)) => node.serve_file(req),
            Ok(None) => req
                .responder
                .respond(Err(RaftError::invalid("no such node here"))),
            Err(e) => req.responder.respond(Err(e)),
        }
    }

    fn stat_text(&self, addr: SocketAddr) -> String {
        let mut text = String::new();
        for node in self.nodes_at(addr) {
            text.push_str(&node.status().to_string());
            text.push('\n');
        }
        if text.is_empty() {
            text.push_str("no nodes\n");
        }
        text
    }
}
