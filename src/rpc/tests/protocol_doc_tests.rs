//! docs/PROTOCOL.md matches the code: every method and status number in its tables, and its
//! worked hex examples decode to what the page says they are.

use super::*;
use crate::error::RaftError;
use crate::rpc::frame::{Decoder, Frame, FrameKind};
use crate::types::codec::Reader;
use crate::types::{GroupId, PeerId};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap()
}

/// The rows of the table under `heading` whose first cell is a number, as cells.
fn numbered_rows(doc: &str, heading: &str) -> Vec<Vec<String>> {
    let section = doc
        .split(heading)
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    section
        .lines()
        .filter_map(|l| {
            let cells: Vec<String> = l.split('|').map(|c| c.trim().to_string()).collect();
            (cells.len() > 3 && cells[1].parse::<u16>().is_ok()).then(|| cells[1..].to_vec())
        })
        .collect()
}

#[test]
fn the_method_table_lists_every_method_with_its_number_and_service() {
    let rows = numbered_rows(&doc(), "## Methods");
    let documented: Vec<(u16, String, String)> = rows
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].clone(), r[2].clone()))
        .collect();
    let code: Vec<(u16, String, String)> = Method::ALL
        .iter()
        .map(|m| (m.as_u16(), m.service().to_string(), m.to_string()))
        .collect();
    assert_eq!(documented, code);
}

#[test]
fn the_status_table_lists_every_status_with_its_number() {
    let rows = numbered_rows(&doc(), "## Statuses");
    let documented: Vec<(u16, String)> = rows
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].clone()))
        .collect();
    let code: Vec<(u16, String)> = Status::ALL
        .iter()
        .map(|s| (s.as_u16(), format!("{s:?}")))
        .collect();
    assert_eq!(documented, code);
}

fn hex_examples(doc: &str) -> Vec<Frame> {
    doc.split("```hex\n")
        .skip(1)
        .map(|block| {
            let hex = block.split("```").next().unwrap();
            let bytes: Vec<u8> = hex
                .split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect();
            let mut d = Decoder::new(1 << 20);
            d.feed(&bytes);
            let f = d.next_frame().unwrap().expect("a whole frame");
            assert!(!d.has_partial_frame(), "one frame per example");
            f
        })
        .collect()
}

#[test]
fn the_worked_examples_decode_to_what_the_page_says() {
    let ex = hex_examples(&doc());
    assert_eq!(ex.len(), 3);
    // 1: an AppendEntries request with the common header.
    let h = ex[0].header;
    assert_eq!(
        (h.kind, h.method, h.status),
        (FrameKind::Request, Method::AppendEntries, Status::Ok)
    );
    assert_eq!(h.correlation_id, 7);
    let mut r = Reader::new("example", &ex[0].body);
    assert_eq!(GroupId::decode(&mut r).unwrap().as_str(), "g1");
    assert_eq!(
        PeerId::decode(&mut r).unwrap().to_string(),
        "127.0.0.1:8100:0"
    );
    assert_eq!(
        PeerId::decode(&mut r).unwrap().to_string(),
        "127.0.0.1:8101:0"
    );
    assert_eq!(r.bytes(r.remaining()).unwrap(), b"hi");
    // 2: its NotLeader answer.
    let h = ex[1].header;
    assert_eq!(
        (h.kind, h.status, h.correlation_id),
        (FrameKind::Response, Status::NotLeader, 7)
    );
    let leader: PeerId = "127.0.0.1:8102:0".parse().unwrap();
    assert_eq!(
        method::error_from_wire(h.status, &ex[1].body),
        RaftError::NotLeader {
            leader: Some(leader)
        }
    );
    // 3: the hello.
    let h = ex[2].header;
    assert_eq!((h.method, h.correlation_id), (Method::Hello, 0));
    let mut r = Reader::new("hello", &ex[2].body);
    assert_eq!(
        PeerId::decode(&mut r).unwrap().to_string(),
        "127.0.0.1:8100:0"
    );
}
