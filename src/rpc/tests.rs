//! Transport tests over loopback TCP: calls and their contract (`call_tests`), bad input
//! (`bad_input_tests`), the fault layer (`fault_tests`) and docs/PROTOCOL.md against the code
//! (`protocol_doc_tests`). Shared helpers live here.
//! Fairness between callers is measured in its own binary (`tests/rpc_fairness.rs`), where
//! no other test shares the CPU.

mod bad_input_tests;
mod call_tests;
mod fault_tests;
mod protocol_doc_tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slog::{Drain, Logger};

use super::*;
use crate::error::Result;
use crate::runtime::{Runtime, RuntimeOptions};

/// A runtime of its own per test: 2 IO loops, so connections cross loops.
pub(super) fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        io_threads: 2,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .unwrap()
}

pub(super) fn opts(rt: &Runtime) -> ServerOptions {
    ServerOptions {
        runtime: Some(rt.clone()),
        logger: crate::logging::discard_logger(),
        ..ServerOptions::new("127.0.0.1:0".parse().unwrap())
    }
}

pub(super) fn start(rt: &Runtime) -> Server {
    Server::start(opts(rt)).unwrap()
}

/// Answers every request of `method` with its own body, on the IO thread (responding only
/// enqueues, so a handler may do it inline).
pub(super) fn echo(server: &Server, method: Method) {
    server
        .register(method, |req: Request| {
            let body = req.body.clone();
            req.responder.respond(Ok(vec![body]));
        })
        .unwrap();
}

/// Makes one call with the default caller and waits for its completion.
pub(super) fn call_wait(
    server: &Server,
    to: SocketAddr,
    method: Method,
    body: Vec<Bytes>,
    timeout: Duration,
) -> Result<Bytes> {
    let (tx, rx) = crossbeam::channel::bounded(1);
    server.call_default(to, method, body, timeout, move |r| {
        let _ = tx.send(r);
    });
    rx.recv_timeout(timeout.min(Duration::from_secs(60)) + Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{method} call to {to} never completed"))
}

/// A logger that keeps every line with its key-values, to check what was logged.
#[derive(Clone, Default)]
pub(super) struct LogCapture(Arc<std::sync::Mutex<Vec<String>>>);

impl LogCapture {
    pub fn logger(&self) -> Logger {
        Logger::root(self.clone().fuse(), slog::o!())
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drain for LogCapture {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        r: &slog::Record,
        kv: &slog::OwnedKVList,
    ) -> std::result::Result<(), slog::Never> {
        use slog::KV;
        struct S(String);
        impl slog::Serializer for S {
            fn emit_arguments(&mut self, k: slog::Key, v: &std::fmt::Arguments) -> slog::Result {
                self.0.push_str(&format!(" {k}={v}"));
                Ok(())
            }
        }
        let mut s = S(format!("{} {}", r.level().as_short_str(), r.msg()));
        let _ = r.kv().serialize(r, &mut s);
        let _ = kv.serialize(r, &mut s);
        self.0.lock().unwrap().push(s.0);
        Ok(())
    }
}
