//! The bound on RaftService messages a node has received and not yet handled.
//!
//! The IO thread routes each message to its node's serial queue; without a bound, a peer
//! that sends faster than the node handles (a flood, a bug, a wedged node's backlog) would
//! grow that queue without limit. [`Incoming::admit`] counts a message's bytes until its
//! [`IncomingPermit`] is dropped (after the node handled it, or with the event when the
//! queue refuses or drops it), and refuses a message that would pass the bound: the router
//! answers it `Busy`, and the sender's protocol treats it as a lost message (a replicator
//! probes again, an election times out). An empty budget always takes one message, so a
//! bound below one message's size slows a peer down but never shuts it out.
//!
//! Decides nothing about Raft and never blocks: a few atomic operations per message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{RaftError, Result};

/// Bytes of received, unhandled messages of one node (see the module documentation).
#[derive(Clone, Default)]
pub(crate) struct Incoming {
    bytes: Arc<AtomicUsize>,
}

/// Holds a message's bytes in its node's [`Incoming`] budget until dropped.
pub(crate) struct IncomingPermit {
    bytes: Arc<AtomicUsize>,
    len: usize,
}

impl Incoming {
    /// Takes `len` bytes of the budget of `max`: refused with `Busy` when other messages
    /// hold some and `len` more would pass `max`.
    pub fn admit(&self, len: usize, max: usize) -> Result<IncomingPermit> {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                let after = held.saturating_add(len);
                (held == 0 || after <= max).then_some(after)
            })
            .map_err(|_| RaftError::Busy)?;
        Ok(IncomingPermit {
            bytes: self.bytes.clone(),
            len,
        })
    }

    /// Bytes held now (tests, status).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

impl Drop for IncomingPermit {
    fn drop(&mut self) {
        self.bytes.fetch_sub(self.len, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_past_the_bound_are_refused_until_earlier_ones_are_handled() {
        let inc = Incoming::default();
        let a = inc.admit(600, 1000).unwrap();
        let b = inc.admit(400, 1000).unwrap();
        assert!(matches!(inc.admit(1, 1000), Err(RaftError::Busy)));
        assert_eq!(inc.bytes(), 1000, "a refused message holds nothing");
        drop(a);
        let c = inc.admit(600, 1000).unwrap();
        drop((b, c));
        assert_eq!(inc.bytes(), 0);
    }

    #[test]
    fn an_empty_budget_takes_one_message_of_any_size() {
        let inc = Incoming::default();
        let big = inc.admit(5000, 1000).unwrap();
        assert!(matches!(inc.admit(1, 1000), Err(RaftError::Busy)));
        drop(big);
        assert!(inc.admit(5000, 1000).is_ok());
        assert_eq!(inc.bytes(), 0);
    }
}
