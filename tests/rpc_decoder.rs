//! The frame decoder against random and mutated byte streams (issue 5, point 4): it never
//! panics, and never allocates more than the maximum frame (a forged length is checked
//! before anything is reserved). Its own binary, because it installs a global allocator that
//! records the largest single allocation made while the decoder runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use traft::rpc::frame::{encode_frame, Decoder, FrameHeader, FrameKind, HEADER_LEN, READ_CHUNK};
use traft::rpc::{Method, Status};

struct Recording;

thread_local! {
    /// Set while the decoder runs on this thread.
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    /// The largest single allocation made on this thread while watching.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only records sizes.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    if WATCHING.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

#[global_allocator]
static ALLOC: Recording = Recording;

/// The maximum frame the property tests decode with (1 MiB, above one read chunk).
const FRAME_MAX: usize = 1 << 20;

/// Feeds `stream` to a fresh decoder in `chunks`-sized pieces, taking frames as they
/// complete, until the end or the first error. Returns (frames, errored, largest allocation
/// made by the decoder on this thread).
fn decode_all(stream: &[u8], chunk: usize) -> (usize, bool, usize) {
    LARGEST.with(|l| l.set(0));
    let mut d = Decoder::new(FRAME_MAX);
    let (mut frames, mut errored) = (0, false);
    'feed: for piece in stream.chunks(chunk.max(1)) {
        WATCHING.with(|w| w.set(true));
        d.feed(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.body.len() + HEADER_LEN <= FRAME_MAX);
                    frames += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    errored = true;
                    WATCHING.with(|w| w.set(false));
                    break 'feed;
                }
            }
        }
        WATCHING.with(|w| w.set(false));
    }
    (frames, errored, LARGEST.with(Cell::get))
}

fn frame_bytes(method: Method, corr: u64, body: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        kind: FrameKind::Request,
        method,
        status: Status::Ok,
        correlation_id: corr,
        body_len: body.len() as u32,
    };
    encode_frame(&h, body)
}

/// A stream of valid frames of random methods and body sizes.
fn valid_stream() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        0..Method::ALL.len(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..3000),
    );
    prop::collection::vec(frame, 1..12).prop_map(|frames| {
        frames
            .into_iter()
            .flat_map(|(m, corr, body)| frame_bytes(Method::ALL[m], corr, &body))
            .collect()
    })
}

/// A mutation: overwrite a byte, cut the stream, or splice in random bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..40))
            .prop_map(|(i, v)| Mutation::Splice(i, v)),
    ]
}

fn apply(stream: &mut Vec<u8>, m: &Mutation) {
    if stream.is_empty() {
        return;
    }
    match m {
        Mutation::Set(i, b) => {
            let i = i % stream.len();
            stream[i] = *b;
        }
        Mutation::Truncate(i) => stream.truncate(i % stream.len()),
        Mutation::Splice(i, v) => {
            let i = i % stream.len();
            stream.splice(i..i, v.iter().copied());
        }
    }
}

/// The decoder's allocation bound: one read chunk, or one whole frame when larger.
const ALLOCATION_MAX: usize = if FRAME_MAX > READ_CHUNK {
    FRAME_MAX
} else {
    READ_CHUNK
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn valid_streams_decode_completely_in_any_chunking(s in valid_stream(), chunk in 1usize..5000) {
        let frames_expected = count_frames(&s);
        let (frames, errored, largest) = decode_all(&s, chunk);
        prop_assert!(!errored);
        prop_assert_eq!(frames, frames_expected);
        prop_assert!(largest <= ALLOCATION_MAX, "allocated {}", largest);
    }

    #[test]
    fn mutated_streams_never_panic_or_overallocate(
        s in valid_stream(),
        muts in prop::collection::vec(mutation(), 1..6),
        chunk in 1usize..5000,
    ) {
        let mut s = s;
        for m in &muts {
            apply(&mut s, m);
        }
        let (_, _, largest) = decode_all(&s, chunk);
        prop_assert!(largest <= ALLOCATION_MAX, "allocated {}", largest);
    }

    #[test]
    fn random_bytes_never_panic_or_overallocate(
        s in prop::collection::vec(any::<u8>(), 0..20_000),
        chunk in 1usize..5000,
    ) {
        let (_, _, largest) = decode_all(&s, chunk);
        prop_assert!(largest <= ALLOCATION_MAX, "allocated {}", largest);
    }

    #[test]
    fn a_header_with_any_length_allocates_at_most_the_maximum(
        len in any::<u32>(),
        tail in 0usize..100,
    ) {
        // A valid header claiming `len` body bytes, then a little of the body.
        let mut s = frame_bytes(Method::AppendEntries, 1, &[]);
        s[18..22].copy_from_slice(&len.to_le_bytes());
        s.extend(std::iter::repeat_n(0u8, tail));
        let (_, errored, largest) = decode_all(&s, 7);
        prop_assert_eq!(errored, len as usize + HEADER_LEN > FRAME_MAX);
        prop_assert!(largest <= ALLOCATION_MAX, "allocated {} for a claimed {}", largest, len);
    }
}

/// Frames in a valid stream, counted by walking the length fields.
fn count_frames(s: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while at + HEADER_LEN <= s.len() {
        let len = u32::from_le_bytes(s[at + 18..at + 22].try_into().unwrap()) as usize;
        at += HEADER_LEN + len;
        n += 1;
    }
    n
}

#[test]
fn the_recording_allocator_sees_a_large_allocation() {
    // The checker can fail: an allocation made while watching is recorded.
    LARGEST.with(|l| l.set(0));
    WATCHING.with(|w| w.set(true));
    let v: Vec<u8> = Vec::with_capacity(ALLOCATION_MAX + 1);
    WATCHING.with(|w| w.set(false));
    drop(std::hint::black_box(v));
    assert!(LARGEST.with(Cell::get) > ALLOCATION_MAX);
}
