//! Two transport servers on loopback: one serves `Stat` from a queue on the raft pool (as a
//! node serves its requests), the other calls it from its own caller queue. Prints the reply.
//!
//! Run: `cargo run --example rpc_echo`.

use std::time::Duration;

use bytes::Bytes;
use traft::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use traft::rpc::{Caller, Method, Request, Server, ServerOptions};
use traft::Runtime;

fn main() -> traft::Result<()> {
    let rt = Runtime::global()?;
    let opts = |rt: &Runtime| ServerOptions {
        runtime: Some(rt.clone()),
        ..ServerOptions::new("127.0.0.1:0".parse().expect("a socket address"))
    };
    let callee = Server::start(opts(&rt))?;
    let caller_server = Server::start(opts(&rt))?;

    // Requests go to a serial queue on the raft pool; the handler (on the IO thread) only
    // enqueues. The queue answers through each request's responder.
    let requests = ExecQueue::start(
        &rt.raft_pool(),
        ExecQueueOptions::new("stat-requests"),
        |batch: &mut Batch<'_, Request>| {
            for req in batch {
                let text = format!("{} bytes from {}", req.body.len(), req.from);
                req.responder.respond(Ok(vec![Bytes::from(text)]));
            }
        },
    );
    callee.register_queue(Method::Stat, requests)?;

    // Completions run on this caller's queue on the raft pool, one at a time, in order.
    let (caller, _queue) = Caller::start(&rt.raft_pool(), "example-caller");
    let (tx, rx) = crossbeam::channel::bounded(1);
    let body = vec![
        Bytes::from_static(b"header|"),
        Bytes::from_static(b"payload"),
    ];
    caller_server.call(
        &caller,
        callee.local_addr(),
        Method::Stat,
        body,
        Duration::from_secs(1),
        {
            move |result| {
                let _ = tx.send(result);
            }
        },
    );
    let reply = rx.recv().expect("the call completes exactly once")?;
    println!("reply: {}", String::from_utf8_lossy(&reply));
    caller_server.shutdown();
    callee.shutdown();
    Ok(())
}
