//! [`Outbox`]: the frames queued for one socket, in lanes served round robin, and
//! [`OutState`], the part of a connection other threads touch (under its owner's mutex).
//!
//! A lane is one caller (requests) or one method (responses). Frames of one lane leave in the
//! order they were queued; lanes take turns one frame at a time, and a lane that becomes
//! non-empty goes to the front of the turn order (a sparse lane, such as a group's
//! heartbeats, never waits behind more than the one bulk frame being written). Pure data: no
//! IO, no locks of its own.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use mio::Token;

use super::frame::{FrameHeader, HEADER_LEN};

/// Empty lanes kept (with their allocation) for reuse; beyond this, empty lanes are dropped.
const IDLE_LANES_KEPT: usize = 64;

/// One frame ready to go: its encoded header and its body as shared chunks (never copied).
pub(crate) struct OutFrame {
    pub header: [u8; HEADER_LEN],
    pub body: Vec<Bytes>,
    /// Invariant: `len == HEADER_LEN + sum of body chunk lengths`.
    pub len: usize,
}

impl OutFrame {
    /// A frame of `header` and `body`; `header.body_len` must be the body's length.
    pub fn new(header: &FrameHeader, body: Vec<Bytes>) -> OutFrame {
        let body_len: usize = body.iter().map(Bytes::len).sum();
        debug_assert_eq!(body_len, header.body_len as usize, "{header:?}");
        OutFrame {
            header: header.encode(),
            body,
            len: HEADER_LEN + body_len,
        }
    }

    /// The length of a frame with a body of `body_len` bytes.
    pub fn len_for(body_len: usize) -> usize {
        HEADER_LEN + body_len
    }

    /// A copy sharing the body chunks (for the fault layer's duplicates).
    pub fn share(&self) -> OutFrame {
        OutFrame {
            header: self.header,
            body: self.body.clone(),
            len: self.len,
        }
    }
}

/// Queued frames by lane.
#[derive(Default)]
pub(crate) struct Outbox {
    /// Invariant: a lane id is in `ring` exactly once iff its queue here is non-empty.
    lanes: HashMap<u64, VecDeque<OutFrame>>,
    /// Lanes with frames, in the order they get their next turn.
    ring: VecDeque<u64>,
    /// Invariant: the sum of `len` over every queued frame.
    queued_bytes: usize,
}

impl Outbox {
    /// True if `bytes` more may be queued under the bound `queued_bytes_max`. An empty outbox
    /// always takes one frame (the frame size has its own maximum).
    pub fn has_room(&self, bytes: usize, queued_bytes_max: usize) -> bool {
        self.queued_bytes == 0 || self.queued_bytes + bytes <= queued_bytes_max
    }

    /// Queues `frame` at the back of `lane`.
    pub fn push(&mut self, lane: u64, frame: OutFrame) {
        self.queued_bytes += frame.len;
        let q = self.lanes.entry(lane).or_default();
        if q.is_empty() {
            // A lane waking up goes first: it was sparse, so it cannot starve the others.
            self.ring.push_front(lane);
        }
        q.push_back(frame);
    }

    /// Moves frames to `out`, one per lane per turn, until at least `budget_bytes` were
    /// taken or nothing is left.
    pub fn take(&mut self, budget_bytes: usize, out: &mut VecDeque<OutFrame>) {
        let mut taken = 0;
        while taken < budget_bytes {
            let Some(lane) = self.ring.pop_front() else {
                break;
            };
            let q = self
                .lanes
                .get_mut(&lane)
                .expect("invariant: a lane in the ring has a queue");
            let frame = q
                .pop_front()
                .expect("invariant: a lane in the ring has frames");
            if q.is_empty() {
                if self.lanes.len() > IDLE_LANES_KEPT {
                    self.lanes.remove(&lane);
                }
            } else {
                self.ring.push_back(lane);
            }
            taken += frame.len;
            self.queued_bytes -= frame.len;
            out.push_back(frame);
        }
    }

    /// Drops every queued frame.
    pub fn clear(&mut self) {
        self.lanes.clear();
        self.ring.clear();
        self.queued_bytes = 0;
    }

    /// True when no frame is queued.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Bytes queued.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    pub fn check_invariants(&self) {
        let mut bytes = 0;
        for (lane, q) in &self.lanes {
            let in_ring = self.ring.iter().filter(|l| *l == lane).count();
            assert_eq!(in_ring, usize::from(!q.is_empty()), "lane {lane}");
            bytes += q.iter().map(|f| f.len).sum::<usize>();
        }
        assert_eq!(
            self.ring.len(),
            self.lanes.values().filter(|q| !q.is_empty()).count()
        );
        assert_eq!(bytes, self.queued_bytes);
    }
}

/// The send side of a connection as other threads see it, kept under its owner's mutex.
#[derive(Default)]
pub(crate) struct OutState {
    /// Frames not yet taken by the IO thread.
    pub outbox: Outbox,
    /// Invariant: true iff the IO thread is bound to look at the outbox again: a notify is
    /// pending, a read pass in progress will flush when it ends, the socket waits for
    /// writable with frames outstanding, or the connection is not yet established (it
    /// flushes once it is). A pusher notifies only when it turns this from false to true,
    /// so a burst of frames costs one notification.
    pub flush_requested: bool,
    /// The socket's token on its IO loop, once registered and connected.
    pub token: Option<Token>,
    /// Set when the socket closed: pushes are dropped.
    pub closed: bool,
}

impl OutState {
    /// Queues `frame` on `lane`. Returns the token to notify, if the IO thread must be woken.
    pub fn push(&mut self, lane: u64, frame: OutFrame) -> Option<Token> {
        if self.closed {
            return None;
        }
        self.outbox.push(lane, frame);
        if self.flush_requested {
            return None;
        }
        self.flush_requested = true;
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::frame::FrameKind;
    use crate::rpc::method::{Method, Status};

    fn frame(id: u64, body_len: usize) -> OutFrame {
        let h = FrameHeader {
            kind: FrameKind::Request,
            method: Method::AppendEntries,
            status: Status::Ok,
            correlation_id: id,
            body_len: body_len as u32,
        };
        OutFrame::new(&h, vec![Bytes::from(vec![0u8; body_len])])
    }

    fn ids(out: &VecDeque<OutFrame>) -> Vec<u64> {
        out.iter()
            .map(|f| u64::from_le_bytes(f.header[10..18].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn lanes_keep_their_order_and_take_turns() {
        let mut ob = Outbox::default();
        for i in 0..4 {
            ob.push(1, frame(10 + i, 100));
        }
        ob.push(2, frame(20, 1));
        ob.push(2, frame(21, 1));
        ob.check_invariants();
        let mut out = VecDeque::new();
        ob.take(usize::MAX, &mut out);
        // Lane 2 woke up last, so it goes first; then turns alternate.
        assert_eq!(ids(&out), vec![20, 10, 21, 11, 12, 13]);
        assert!(ob.is_empty());
        assert_eq!(ob.queued_bytes(), 0);
        ob.check_invariants();
    }

    #[test]
    fn a_sparse_lane_waits_behind_at_most_one_bulk_frame() {
        let mut ob = Outbox::default();
        for i in 0..100 {
            ob.push(1, frame(i, 64 * 1024));
        }
        let mut out = VecDeque::new();
        ob.take(1, &mut out);
        assert_eq!(ids(&out), vec![0]);
        ob.push(7, frame(700, 10));
        out.clear();
        ob.take(1, &mut out);
        assert_eq!(ids(&out), vec![700]);
        ob.check_invariants();
    }

    #[test]
    fn room_is_bounded_but_an_empty_outbox_takes_one_frame() {
        let mut ob = Outbox::default();
        assert!(ob.has_room(10_000, 100));
        ob.push(1, frame(1, 10));
        assert!(ob.has_room(100 - 32, 100));
        assert!(!ob.has_room(100, 100));
    }

    #[test]
    fn push_asks_for_one_notification_per_burst() {
        let mut st = OutState {
            token: Some(Token(3)),
            ..OutState::default()
        };
        assert_eq!(st.push(1, frame(1, 1)), Some(Token(3)));
        assert_eq!(st.push(1, frame(2, 1)), None);
        st.closed = true;
        assert_eq!(st.push(1, frame(3, 1)), None);
        assert_eq!(st.outbox.queued_bytes(), 2 * (HEADER_LEN + 1));
    }
}
