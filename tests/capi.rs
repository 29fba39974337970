//! The C ABI: the header matches the code (cbindgen), it is valid C, a real C program links
//! against the library and runs a node, and the ABI answers bad arguments with
//! `TRAFT_INVALID` instead of crashing.

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use traft::capi::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate_header() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    // Only the C ABI module: the rest of the crate is Rust API, not part of the header.
    let bindings = cbindgen::Builder::new()
        .with_src(root().join("src/capi.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

#[test]
fn the_committed_header_matches_the_code() {
    let fresh = generate_header();
    let path = root().join("include/traft.h");
    if std::env::var("TRAFT_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write header");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/traft.h is out of date with src/capi.rs; regenerate it with \
         `TRAFT_BLESS=1 cargo test --all-features --test capi`"
    );
}

#[test]
fn the_header_is_valid_c() {
    let out = Command::new("cc")
        .args(["-fsyntax-only", "-Wall", "-Werror", "-x", "c"])
        .arg(root().join("include/traft.h"))
        .output()
        .expect("a C compiler (cc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory holding the cdylib cargo built next to this test.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test path");
    exe.parent().expect("deps dir").to_path_buf()
}

#[test]
fn a_c_program_links_the_library_and_runs_a_node() {
    let lib = library_dir();
    assert!(
        lib.join("libtraft.so").exists(),
        "no libtraft.so in {}",
        lib.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let exe = tmp.path().join("counter");
    let out = Command::new("cc")
        .args(["-O1", "-Wall", "-Werror", "-std=c11"])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(root().join("examples/c/counter.c"))
        .arg(format!("-L{}", lib.display()))
        .args(["-ltraft", "-o"])
        .arg(&exe)
        .output()
        .expect("cc");
    assert!(
        out.status.success(),
        "compile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe)
        .arg(tmp.path().join("data"))
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("counter 10"), "{stdout}");
    assert!(stdout.contains("applied, counter now 10"), "{stdout}");
    // The snapshot the C state machine saved is what it loads after the restart.
    assert!(stdout.contains("snapshot: ok"), "{stdout}");
    assert!(
        stdout.contains("loaded counter 10 from the snapshot"),
        "{stdout}"
    );
    assert!(stdout.contains("counter 11 after the restart"), "{stdout}");
}

static APPLIED: AtomicU64 = AtomicU64::new(0);
static DONE_OK: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn apply(
    _ctx: *mut c_void,
    index: u64,
    _term: u64,
    data: *const u8,
    len: usize,
    response: *mut TraftResponse,
) {
    APPLIED.fetch_add(1, Ordering::SeqCst);
    let echo = format!("{index}:{len}");
    // SAFETY: the response pointer is valid during on_apply; `data` has `len` bytes.
    unsafe {
        let _ = std::slice::from_raw_parts(data, len);
        traft_response_set(response, echo.as_ptr(), echo.len());
    }
}

unsafe extern "C" fn done(_ctx: *mut c_void, status: TraftStatus, _r: *const u8, _l: usize) {
    if status == TraftStatus::TraftOk {
        DONE_OK.fetch_add(1, Ordering::SeqCst);
    }
}

/// The applied index a read completion saw (u64::MAX until it ran), and its status.
static READ_AT: AtomicU64 = AtomicU64::new(u64::MAX);
static READ_STATUS: AtomicI32 = AtomicI32::new(-1);

unsafe extern "C" fn read_done(_ctx: *mut c_void, status: TraftStatus, value: u64) {
    READ_STATUS.store(status as i32, Ordering::SeqCst);
    READ_AT.store(value, Ordering::SeqCst);
}

/// What a refused apply's completion saw: its status, and the name of its thread.
static REFUSED: std::sync::Mutex<Option<(TraftStatus, String)>> = std::sync::Mutex::new(None);

unsafe extern "C" fn refused_done(
    _ctx: *mut c_void,
    status: TraftStatus,
    _r: *const u8,
    _l: usize,
) {
    let name = std::thread::current().name().unwrap_or("").to_string();
    *REFUSED.lock().unwrap() = Some((status, name));
}

/// The status `traft_node_shutdown` answered inside a completion (-1 until it ran).
static SHUTDOWN_INSIDE: AtomicI32 = AtomicI32::new(-1);

unsafe extern "C" fn shutdown_inside(ctx: *mut c_void, _s: TraftStatus, _r: *const u8, _l: usize) {
    // SAFETY: `ctx` is the live node handle the test passed; the call must refuse, not free.
    let st = unsafe { traft_node_shutdown(ctx as *mut TraftNode) };
    SHUTDOWN_INSIDE.store(st as i32, Ordering::SeqCst);
}

#[test]
fn bad_arguments_are_invalid_and_a_node_runs_through_the_abi() {
    let addr = CString::new("127.0.0.1:0").unwrap();
    let mut server: *mut TraftServer = std::ptr::null_mut();
    // SAFETY: valid strings and out-pointers, or deliberately null ones.
    unsafe {
        assert_eq!(
            traft_server_start(std::ptr::null(), &mut server),
            TraftStatus::TraftInvalid
        );
        let bad = CString::new("not an address").unwrap();
        assert_eq!(
            traft_server_start(bad.as_ptr(), &mut server),
            TraftStatus::TraftInvalid
        );
        assert_eq!(
            traft_server_start(addr.as_ptr(), &mut server),
            TraftStatus::TraftOk
        );
    }
    // SAFETY: a live server handle.
    let port = unsafe { traft_server_port(server) };
    let peer = CString::new(format!("127.0.0.1:{port}:0")).unwrap();
    let group = CString::new("capi").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = CString::new(dir.path().to_str().unwrap()).unwrap();
    let fsm = TraftFsm {
        ctx: std::ptr::null_mut(),
        on_apply: Some(apply),
        on_leader_start: None,
        on_stop: None,
        on_snapshot_save: None,
        on_snapshot_load: None,
    };
    let mut node: *mut TraftNode = std::ptr::null_mut();
    // SAFETY: valid handles and strings (and a null group, refused).
    unsafe {
        let st = traft_node_start(
            server,
            std::ptr::null(),
            peer.as_ptr(),
            peer.as_ptr(),
            path.as_ptr(),
            fsm,
            200,
            &mut node,
        );
        assert_eq!(st, TraftStatus::TraftInvalid);
        // A peer served by another server is refused, not started on that one.
        let mut other: *mut TraftServer = std::ptr::null_mut();
        assert_eq!(
            traft_server_start(addr.as_ptr(), &mut other),
            TraftStatus::TraftOk
        );
        let elsewhere = CString::new(format!("127.0.0.1:{}:0", traft_server_port(other))).unwrap();
        let st = traft_node_start(
            server,
            group.as_ptr(),
            elsewhere.as_ptr(),
            elsewhere.as_ptr(),
            path.as_ptr(),
            fsm,
            200,
            &mut node,
        );
        assert_eq!(st, TraftStatus::TraftInvalid);
        traft_server_free(other);
        let st = traft_node_start(
            server,
            group.as_ptr(),
            peer.as_ptr(),
            peer.as_ptr(),
            path.as_ptr(),
            fsm,
            200,
            &mut node,
        );
        assert_eq!(st, TraftStatus::TraftOk);
    }
    let start = Instant::now();
    // SAFETY: a live node handle.
    while unsafe { traft_node_is_leader(node) } == 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "no leader");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut buf = [0 as c_char; 64];
    // SAFETY: a live handle and a 64-byte buffer.
    let n = unsafe { traft_node_leader(node, buf.as_mut_ptr(), buf.len()) };
    assert_eq!(n, peer.as_bytes().len());
    // Too small a buffer: the length it needs (as snprintf), nothing written.
    let mut small = [7 as c_char; 4];
    // SAFETY: a live handle and a 4-byte buffer.
    let need = unsafe { traft_node_leader(node, small.as_mut_ptr(), small.len()) };
    assert_eq!((need, small), (n, [7; 4]));
    for i in 0..20u8 {
        // SAFETY: a live handle and one readable byte.
        let st = unsafe { traft_node_apply(node, &i, 1, Some(done), std::ptr::null_mut()) };
        assert_eq!(st, TraftStatus::TraftOk);
    }
    // SAFETY: a null node is refused, not dereferenced.
    let st = unsafe {
        traft_node_apply(
            std::ptr::null(),
            std::ptr::null(),
            0,
            Some(done),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, TraftStatus::TraftInvalid);
    while DONE_OK.load(Ordering::SeqCst) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "completions missing"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(APPLIED.load(Ordering::SeqCst), 20);
    // A read through the ABI completes after the 20 applies (index 1 is the leader's no-op).
    // SAFETY: a live handle; the completion is a static function.
    let st = unsafe { traft_node_read_index(node, Some(read_done), std::ptr::null_mut()) };
    assert_eq!(st, TraftStatus::TraftOk);
    while READ_AT.load(Ordering::SeqCst) == u64::MAX {
        assert!(start.elapsed() < Duration::from_secs(10), "read missing");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        READ_STATUS.load(Ordering::SeqCst),
        TraftStatus::TraftOk as i32
    );
    assert!(READ_AT.load(Ordering::SeqCst) >= 21);
    // A lone voter's lease is always valid; bad peers and null nodes are refused.
    // SAFETY: a live handle, a NUL-terminated string, and a null node.
    unsafe {
        assert_eq!(traft_node_is_leader_lease_valid(node), 1);
        let bad = CString::new("nope").unwrap();
        let st = traft_node_add_peer(node, bad.as_ptr(), Some(read_done), std::ptr::null_mut());
        assert_eq!(st, TraftStatus::TraftInvalid);
        let st = traft_node_read_index(std::ptr::null(), None, std::ptr::null_mut());
        assert_eq!(st, TraftStatus::TraftInvalid);
        // Status as text, vote, and the configuration calls (a bad conf is refused; the
        // same single voter again commits).
        let mut text = [0 as c_char; 1024];
        let n = traft_node_status(node, text.as_mut_ptr(), text.len());
        assert!(n > 0 && n < text.len());
        let status = std::ffi::CStr::from_ptr(text.as_ptr()).to_str().unwrap();
        assert!(status.contains("role: Leader"), "{status}");
        assert_eq!(traft_node_vote(node, 5), TraftStatus::TraftInvalid);
        assert_eq!(traft_node_vote(node, 300), TraftStatus::TraftOk);
        let st = traft_node_change_peers(node, bad.as_ptr(), None, std::ptr::null_mut());
        assert_eq!(st, TraftStatus::TraftInvalid);
        READ_STATUS.store(-1, Ordering::SeqCst);
        let st =
            traft_node_change_peers(node, peer.as_ptr(), Some(read_done), std::ptr::null_mut());
        assert_eq!(st, TraftStatus::TraftOk);
    }
    while READ_STATUS.load(Ordering::SeqCst) == -1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "change_peers did not complete"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        READ_STATUS.load(Ordering::SeqCst),
        TraftStatus::TraftOk as i32
    );
    // A task the node refuses at once (over the 1 MiB entry limit) still completes on a
    // traft thread, never on the caller's inside the call (a caller holding a lock its
    // completion takes would deadlock).
    let big = vec![0u8; (1 << 20) + 1];
    // SAFETY: a live handle and `big.len()` readable bytes.
    let st = unsafe {
        traft_node_apply(
            node,
            big.as_ptr(),
            big.len(),
            Some(refused_done),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, TraftStatus::TraftOk);
    while REFUSED.lock().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "refusal missing");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (status, thread) = REFUSED.lock().unwrap().clone().unwrap();
    assert_eq!(status, TraftStatus::TraftInvalid);
    assert!(thread.starts_with("traft-"), "completed on {thread:?}");
    // Shutting a node down from a callback is refused: it would wait for its own thread.
    // SAFETY: a live handle passed as the completion's context, alive until the end.
    let st =
        unsafe { traft_node_apply(node, b"x".as_ptr(), 1, Some(shutdown_inside), node.cast()) };
    assert_eq!(st, TraftStatus::TraftOk);
    while SHUTDOWN_INSIDE.load(Ordering::SeqCst) == -1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "completion missing"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        SHUTDOWN_INSIDE.load(Ordering::SeqCst),
        TraftStatus::TraftInvalid as i32
    );
    // SAFETY: the node still runs and its handle is live.
    assert_eq!(unsafe { traft_node_is_leader(node) }, 1);
    // SAFETY: handles from the calls above, not used afterwards.
    unsafe {
        assert_eq!(traft_node_shutdown(node), TraftStatus::TraftOk);
        traft_server_free(server);
    }
    let msg = traft_status_str(1);
    // SAFETY: a static NUL-terminated string.
    let text = unsafe { std::ffi::CStr::from_ptr(msg) }.to_str().unwrap();
    assert_eq!(text, "not the leader");
}
