//! The queue under [`ExecQueue`](super::ExecQueue): many producers, one consumer, items kept
//! in linked blocks of [`BLOCK`] slots.
//!
//! One word, `tail`, holds all that producers, `stop` and the consumer must agree on: the
//! next position, `STOPPED` and `IDLE`. Every change to it is a read-modify-write, so these
//! changes have one order and need no fences:
//! - a producer reserves a position with one CAS that also clears `IDLE` (and learns from the
//!   old word whether the consumer must be scheduled), then writes its item and sets the
//!   slot's `ready` flag;
//! - `stop` sets `STOPPED` with a CAS: positions reserved before it are final, later pushes
//!   are refused without reserving, so the items that must still run are exactly those below
//!   the tail;
//! - the consumer, having taken everything below the tail it last read, sets `IDLE` with a
//!   CAS against that very word: it fails if anything was reserved or stopped since.
//!
//! The consumer finds items by their `ready` flags, counting forward from its head; it reads
//! `tail` only when nothing is ready there, to learn of a stop, of slots reserved and not yet
//! written, or that it may go idle. Taking an item is a plain load of its flag and a read of
//! the slot, with no atomic read-modify-write. A ready slot was reserved, and so before any
//! stop; a block comes to the producers with every flag false (zeroed, or reset when
//! recycled), so a flag is never stale.
//!
//! Each block has [`LAP`] positions: [`BLOCK`] slots and an end marker. The producer that
//! reserves a block's last slot links the next block (`next`, then `tail.block`) and moves
//! the tail past the marker; producers that find the tail on a marker wait for that. A
//! producer dereferences a block only after its CAS succeeded, and the consumer can pass the
//! reserved slot only once it is ready, so the block outlives the producer's use. The
//! consumer, past a block's last slot, recycles the block (one spare is kept, and freed when
//! the queue goes idle) or frees it: by then every producer that wrote into it has set its
//! `ready` flag, its last access.

use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize};

use crossbeam::utils::{Backoff, CachePadded};
use parking_lot::{Mutex, MutexGuard};

use crate::error::RaftError;

/// Positions per block: [`BLOCK`] slots and one end marker.
const LAP: usize = 64;
/// Slots per block.
const BLOCK: usize = LAP - 1;
/// `tail` flag: pushes are refused; the position is final.
const STOPPED: usize = 1;
/// `tail` flag: no consumer turn is scheduled; the next push or stop must schedule one.
const IDLE: usize = 2;
/// `tail` is `position << SHIFT | flags`.
const SHIFT: usize = 2;

/// Items before `pos` (end markers are positions but hold no item).
fn items_before(pos: usize) -> usize {
    pos - pos / LAP
}

struct Slot<T> {
    /// Set by the producer after writing `value`; the consumer reads `value` only after
    /// seeing it. Reset by the consumer when it recycles the block.
    ready: AtomicBool,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Block<T> {
    /// Set, before the tail moves past this block's end marker, by the producer that
    /// reserved the last slot.
    next: AtomicPtr<Block<T>>,
    slots: [Slot<T>; BLOCK],
}

impl<T> Block<T> {
    fn new() -> Box<Block<T>> {
        let layout = Layout::new::<Block<T>>();
        // SAFETY: the layout is not zero-sized: a `Block` holds a pointer.
        let raw = unsafe { alloc::alloc_zeroed(layout) }.cast::<Block<T>>();
        if raw.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: `raw` comes from the global allocator with `Block<T>`'s layout, as `Box`
        // needs, and all-zero bytes are a valid `Block`: a null `next`, every `ready` false,
        // and `MaybeUninit` values, which may hold any bytes.
        unsafe { Box::from_raw(raw) }
    }
}

/// What the consumer writes and producers read: kept off the producers' cache line.
struct Shared<T> {
    /// Items the consumer has taken, for `len` and the capacity check.
    taken: AtomicUsize,
    /// One recycled block, or null.
    spare: AtomicPtr<Block<T>>,
}

impl<T> Shared<T> {
    /// A block for the producer about to link one: the spare if there is one.
    fn new_block(&self) -> Box<Block<T>> {
        let spare = self.spare.swap(ptr::null_mut(), Acquire);
        if spare.is_null() {
            return Block::new();
        }
        // SAFETY: a non-null spare came from `Box::into_raw` in `retire`, and the swap made
        // this thread its only owner.
        unsafe { Box::from_raw(spare) }
    }

    /// Frees the spare block, if any (a producer may take it first: the swap decides).
    fn free_spare(&self) {
        let spare = self.spare.swap(ptr::null_mut(), Acquire);
        if !spare.is_null() {
            // SAFETY: a non-null spare came from `Box::into_raw` in `retire`, and the swap
            // made this thread its only owner.
            drop(unsafe { Box::from_raw(spare) });
        }
    }

    /// Takes back a block the consumer has moved past.
    fn retire(&self, block: *mut Block<T>) {
        // SAFETY: the consumer has taken every slot of `block` (each producer's last access
        // to it was its `ready` store, which the consumer saw) and no producer reserves into
        // it again: the tail is past its end. So the consumer owns it.
        let mut block = unsafe { Box::from_raw(block) };
        block.next = AtomicPtr::new(ptr::null_mut());
        for slot in &mut block.slots {
            slot.ready = AtomicBool::new(false);
        }
        let old = self.spare.swap(Box::into_raw(block), Release);
        if !old.is_null() {
            // SAFETY: a non-null spare came from `Box::into_raw`, and the swap took it.
            drop(unsafe { Box::from_raw(old) });
        }
    }
}

/// A push refused: why, and the item handed back.
pub(super) type Refused<T> = (RaftError, T);

/// The multi-producer, single-consumer queue.
pub(super) struct Queue<T> {
    /// What every push reads, on one cache line.
    tail: CachePadded<Tail<T>>,
    /// The first block, set once by the producer that creates it, before `tail.block`.
    first: AtomicPtr<Block<T>>,
    shared: CachePadded<Shared<T>>,
    head: Mutex<Head<T>>,
}

struct Tail<T> {
    /// `position << SHIFT | STOPPED | IDLE`; see the module doc.
    word: AtomicUsize,
    /// The block of the tail position, once the first push created one. Changes only while
    /// the tail is on an end marker (the linking producer stores it before moving past).
    block: AtomicPtr<Block<T>>,
}

/// The consumer's position; only the holder of `Queue::head`'s lock moves it.
struct Head<T> {
    /// The block of `pos`; null until the consumer first finds items.
    block: *mut Block<T>,
    pos: usize,
    taken: usize,
    /// Items known to be reserved: below the tail as last read (`word`), or written slots
    /// counted since. `taken <= reserved`.
    reserved: usize,
    word: usize,
}

// SAFETY: a `Head` is the right to take the `T`s of its queue's blocks, from whichever thread
// holds the lock around it; that moves `T`s between threads, which `T: Send` allows.
unsafe impl<T: Send> Send for Head<T> {}

impl<T> Queue<T> {
    /// An empty, idle queue; it allocates its first block on the first push.
    pub(super) fn new() -> Queue<T> {
        Queue {
            tail: CachePadded::new(Tail {
                word: AtomicUsize::new(IDLE),
                block: AtomicPtr::new(ptr::null_mut()),
            }),
            first: AtomicPtr::new(ptr::null_mut()),
            shared: CachePadded::new(Shared {
                taken: AtomicUsize::new(0),
                spare: AtomicPtr::new(ptr::null_mut()),
            }),
            head: Mutex::new(Head {
                block: ptr::null_mut(),
                pos: 0,
                taken: 0,
                reserved: 0,
                word: IDLE,
            }),
        }
    }

    /// Appends `item` unless the queue is stopped (`Stopped`) or holds `capacity` items not
    /// yet taken (`Busy`). `Ok(true)`: the queue was idle, the caller must schedule the
    /// consumer.
    #[inline]
    pub(super) fn push(&self, item: T, capacity: Option<usize>) -> Result<bool, Refused<T>> {
        let backoff = Backoff::new();
        let mut next_block = None;
        let mut word = self.tail.word.load(Acquire);
        loop {
            if word & STOPPED != 0 {
                return Err((RaftError::Stopped, item));
            }
            let pos = word >> SHIFT;
            let offset = pos % LAP;
            let block = self.tail.block.load(Acquire);
            if offset == BLOCK || block.is_null() {
                // The next block is being linked (or the first one must be created).
                if block.is_null() {
                    self.create_first_block();
                }
                backoff.snooze();
                word = self.tail.word.load(Acquire);
                continue;
            }
            if let Some(cap) = capacity {
                // `taken` only grows, so a stale reading can only refuse, never over-fill.
                // Read only when bounded: the consumer writes this line for every item.
                let queued = items_before(pos).saturating_sub(self.shared.taken.load(Acquire));
                if queued >= cap {
                    return Err((RaftError::Busy, item));
                }
            }
            if offset + 1 == BLOCK && next_block.is_none() {
                next_block = Some(self.shared.new_block());
            }
            let reserved = (pos + 1) << SHIFT;
            match self
                .tail
                .word
                .compare_exchange_weak(word, reserved, AcqRel, Acquire)
            {
                Ok(_) => {
                    if offset + 1 == BLOCK {
                        let next = next_block.take().unwrap_or_else(|| self.shared.new_block());
                        self.link(block, next);
                    }
                    // SAFETY: the CAS reserved `pos` for this push alone. `block` is the
                    // block of `pos`: it was read after `word` (Acquire, so no older block),
                    // and it changes only after the tail passes this block's end marker,
                    // which would have failed the CAS. The consumer frees it only after
                    // seeing this slot ready.
                    unsafe {
                        let slot = &(*block).slots[offset];
                        (*slot.value.get()).write(item);
                        slot.ready.store(true, Release);
                    }
                    return Ok(word & IDLE != 0);
                }
                Err(now) => {
                    word = now;
                    backoff.spin();
                }
            }
        }
    }

    /// Called by the producer that reserved the last slot of `block`: links `next` after it
    /// and moves the tail past the end marker, on which every other push waits meanwhile.
    fn link(&self, block: *mut Block<T>, next: Box<Block<T>>) {
        let next = Box::into_raw(next);
        // SAFETY: `block` holds this producer's reserved slot, so the consumer cannot have
        // freed it (see `push`).
        unsafe { (*block).next.store(next, Release) };
        self.tail.block.store(next, Release);
        // The tail sits on the marker; only flags (STOPPED, IDLE) may change meanwhile, and
        // adding keeps them.
        self.tail.word.fetch_add(1 << SHIFT, Release);
    }

    /// Creates the first block unless another push did; `tail.block` is set after `first`,
    /// so a consumer that sees an item also sees `first`.
    fn create_first_block(&self) {
        if !self.first.load(Acquire).is_null() {
            return; // another push created it and is about to set `tail.block`
        }
        let block = Box::into_raw(Block::new());
        match self
            .first
            .compare_exchange(ptr::null_mut(), block, AcqRel, Acquire)
        {
            Ok(_) => self.tail.block.store(block, Release),
            // SAFETY: `block` came from `Box::into_raw` above and was never shared.
            Err(_) => drop(unsafe { Box::from_raw(block) }),
        }
    }

    /// Refuses pushes from now on. `None` if already stopped; `Some(true)` if the queue was
    /// idle: the caller must schedule the consumer, which runs what is queued and then sees
    /// the stop.
    pub(super) fn stop(&self) -> Option<bool> {
        let mut word = self.tail.word.load(Acquire);
        loop {
            if word & STOPPED != 0 {
                return None;
            }
            let stopped = (word | STOPPED) & !IDLE;
            match self
                .tail
                .word
                .compare_exchange_weak(word, stopped, AcqRel, Acquire)
            {
                Ok(_) => return Some(word & IDLE != 0),
                Err(now) => word = now,
            }
        }
    }

    /// True once `stop` was called.
    pub(super) fn is_stopped(&self) -> bool {
        self.tail.word.load(Acquire) & STOPPED != 0
    }

    /// Items pushed and not yet taken by the consumer.
    pub(super) fn len(&self) -> usize {
        // `taken` first: the tail read after it is at least as far.
        let taken = self.shared.taken.load(Acquire);
        items_before(self.tail.word.load(Acquire) >> SHIFT).saturating_sub(taken)
    }

    /// The consumer's side, locked for one turn.
    pub(super) fn consume(&self) -> Consuming<'_, T> {
        Consuming {
            queue: self,
            head: self.head.lock(),
        }
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        let Queue {
            tail,
            first,
            shared,
            head,
            ..
        } = self;
        let head = head.get_mut();
        // No producer is left (`&mut self`), so every reserved slot is written.
        head.reserved = items_before(*tail.word.get_mut() >> SHIFT);
        if head.block.is_null() {
            head.block = *first.get_mut();
        }
        while head.taken < head.reserved {
            // SAFETY: `head` is this queue's, and `taken < reserved`.
            drop(unsafe { head.take(shared) });
        }
        let mut block = head.block;
        while !block.is_null() {
            // SAFETY: the blocks from the head on were never freed or retired, and no one
            // else can reach them any more.
            let owned = unsafe { Box::from_raw(block) };
            block = owned.next.load(Relaxed);
        }
        shared.free_spare();
    }
}

impl<T> Head<T> {
    /// Written slots from the head on, at most `limit`, without taking them. A written slot
    /// was reserved, and so before any stop.
    fn count_ready(&self, limit: usize) -> usize {
        let (mut block, mut pos, mut n) = (self.block, self.pos, 0);
        if block.is_null() {
            return 0;
        }
        while n < limit {
            if pos % LAP == BLOCK {
                // SAFETY: blocks from the head on are freed only by the consumer, after it
                // moves past them; `next`, once set, is such a block.
                let next = unsafe { (*block).next.load(Acquire) };
                if next.is_null() {
                    break;
                }
                block = next;
                pos += 1;
            }
            // SAFETY: as above; reading a flag of a slot not yet reserved is harmless.
            let ready = unsafe { (*block).slots[pos % LAP].ready.load(Acquire) };
            if !ready {
                break;
            }
            n += 1;
            pos += 1;
        }
        n
    }

    /// Takes the item at the head. The slot may be reserved and not yet written: waits for
    /// its producer, which is between its CAS and its `ready` store.
    ///
    /// # Safety
    /// `self` is the head of the queue whose `shared` is given, and `taken < reserved`.
    #[inline]
    unsafe fn take(&mut self, shared: &Shared<T>) -> T {
        debug_assert!(self.taken < self.reserved);
        if self.pos % LAP == BLOCK {
            // SAFETY: an item lies beyond this end marker, so the tail read into `reserved`
            // (Acquire) is past it: the producer linked `next` before moving it there.
            let next = unsafe { (*self.block).next.load(Acquire) };
            debug_assert!(!next.is_null());
            shared.retire(self.block);
            self.block = next;
            self.pos += 1;
        }
        // SAFETY: `pos` was reserved (`taken < reserved`) in `block`, which only the consumer
        // frees, and later than this.
        let slot = unsafe { &(*self.block).slots[self.pos % LAP] };
        let backoff = Backoff::new();
        while !slot.ready.load(Acquire) {
            backoff.snooze();
        }
        // SAFETY: `ready` (Acquire) says the producer wrote the value, and the consumer
        // moves past this position now, so the value is read once.
        let item = unsafe { (*slot.value.get()).assume_init_read() };
        self.pos += 1;
        self.taken += 1;
        shared.taken.store(self.taken, Release);
        item
    }
}

/// The consumer's side of a queue, for one turn.
pub(super) struct Consuming<'a, T> {
    queue: &'a Queue<T>,
    head: MutexGuard<'a, Head<T>>,
}

impl<T> Consuming<'_, T> {
    /// Items known to be reserved and not yet taken. When none are left from earlier
    /// counts, counts the written slots from the head on, at most `limit`. Never reads the
    /// tail: that is the producers' cache line, and a consumer that keeps up would otherwise
    /// read it for every few items.
    pub(super) fn ready(&mut self, limit: usize) -> usize {
        let head = &mut *self.head;
        if head.taken == head.reserved {
            head.reserved += head.count_ready(limit);
        }
        head.reserved - head.taken
    }

    /// Reads the tail: returns the items reserved and not yet taken, some perhaps not yet
    /// written (`Batch` waits for those), and records the reading for `stopped` and
    /// `try_idle`.
    pub(super) fn sync(&mut self) -> usize {
        self.read_tail();
        self.head.reserved - self.head.taken
    }

    fn read_tail(&mut self) {
        let head = &mut *self.head;
        let word = self.queue.tail.word.load(Acquire);
        head.word = word;
        // Written slots counted beyond this reading are reserved too; the tail read later
        // is at least as far.
        head.reserved = head.reserved.max(items_before(word >> SHIFT));
        if head.block.is_null() && head.reserved > 0 {
            // Whoever reserved saw `tail.block` set, which comes after `first`.
            head.block = self.queue.first.load(Acquire);
        }
    }

    /// True if the last reading of the tail (by `sync`) was stopped.
    pub(super) fn stopped(&self) -> bool {
        self.head.word & STOPPED != 0
    }

    /// With nothing available, marks the queue idle unless the tail changed since the last
    /// reading (an item was reserved, or a stop came: the CAS against that reading fails).
    /// True if idle: the consumer's turn must end, and the next push or stop gets `true` and
    /// schedules a new one. An idle queue keeps only the block its tail is in: the spare is
    /// freed (a queue with thousands of siblings should not hold two blocks while idle).
    pub(super) fn try_idle(&mut self) -> bool {
        debug_assert_eq!(self.head.taken, self.head.reserved);
        let word = self.head.word;
        let idle = self
            .queue
            .tail
            .word
            .compare_exchange(word, word | IDLE, AcqRel, Acquire)
            .is_ok();
        if idle {
            self.queue.shared.free_spare();
        }
        idle
    }

    /// A batch of at most `max` of the available items; `stopped` marks the final call.
    pub(super) fn batch(&mut self, max: usize, stopped: bool) -> Batch<'_, T> {
        let left = (self.head.reserved - self.head.taken).min(max);
        Batch {
            shared: &self.queue.shared,
            head: &mut self.head,
            left,
            stopped,
        }
    }
}

/// One batch of items handed to the consumer: iterate it to take them in order.
pub struct Batch<'a, T> {
    shared: &'a Shared<T>,
    head: &'a mut Head<T>,
    /// Invariant: `left <= head.reserved - head.taken`.
    left: usize,
    stopped: bool,
}

impl<T> Batch<'_, T> {
    /// True on the final call after [`ExecQueue::stop`](super::ExecQueue::stop); such a
    /// batch is empty.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Items still to take from this batch.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl<T> Iterator for Batch<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // SAFETY: `Consuming::batch` paired `head` with its own queue's `shared`, and `left`
        // was positive, so `taken < reserved`.
        Some(unsafe { self.head.take(self.shared) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
