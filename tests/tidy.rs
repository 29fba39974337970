//! Mechanical rules of STYLE.md, enforced: every source file opens with a `//!` module doc,
//! stays readable in one sitting, keeps functions short, and library code has no `unwrap()`
//! (an `expect` must name the invariant it relies on). Test code is exempt from the last two.

use std::path::{Path, PathBuf};

const LINE_WIDTH_MAX: usize = 100;
/// Library lines per file (tests beside the module not counted).
const FILE_CODE_LINES_MAX: usize = 700;
/// Lines per file, tests included.
const FILE_LINES_MAX: usize = 1200;
const FN_LINES_MAX: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs" || name.ends_with("_tests.rs") || name == "proptests.rs"
}

/// The library part of a file: everything before its `#[cfg(test)]` module.
fn code_part(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().collect();
    match lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
    {
        Some(i) => lines[..i].to_vec(),
        None => lines,
    }
}

/// (name, first line, length) of each function whose body closes at its own indentation.
fn functions(lines: &[&str]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let is_fn = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "pub(super) fn ",
            "const fn ",
            "unsafe fn ",
        ]
        .iter()
        .any(|p| t.starts_with(p));
        if !is_fn || t.ends_with(';') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            let name = t.split('(').next().unwrap_or(t).to_string();
            out.push((name, i + 1, end + 1));
        }
    }
    out
}

#[test]
fn source_files_follow_the_mechanical_style_rules() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "examples"] {
        if Path::new(dir).exists() {
            rust_files(Path::new(dir), &mut files);
        }
    }
    let mut problems = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let shown = path.display();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            problems.push(format!("{shown}: does not open with a //! module doc"));
        }
        for (n, line) in text.lines().enumerate() {
            if line.chars().count() > LINE_WIDTH_MAX {
                problems.push(format!(
                    "{shown}:{}: longer than {LINE_WIDTH_MAX} columns",
                    n + 1
                ));
            }
        }
        let total = text.lines().count();
        if total > FILE_LINES_MAX {
            problems.push(format!(
                "{shown}: {total} lines (max {FILE_LINES_MAX}); split it"
            ));
        }
        if !path.starts_with("src") || is_test_file(path) {
            continue;
        }
        let code = code_part(&text);
        if code.len() > FILE_CODE_LINES_MAX {
            problems.push(format!(
                "{shown}: {} library lines (max {FILE_CODE_LINES_MAX})",
                code.len()
            ));
        }
        for (n, line) in code.iter().enumerate() {
            let l = line.trim_start();
            if l.starts_with("//") {
                continue;
            }
            if l.contains(".unwrap()") {
                problems.push(format!("{shown}:{}: unwrap() in library code", n + 1));
            }
            if l.contains(".expect(") && !l.contains(".expect(\"invariant") {
                problems.push(format!(
                    "{shown}:{}: expect() must name its invariant",
                    n + 1
                ));
            }
        }
        for (name, start, len) in functions(&code) {
            if len > FN_LINES_MAX {
                problems.push(format!(
                    "{shown}:{start}: {name} is {len} lines (max {FN_LINES_MAX})"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "style problems:\n{}",
        problems.join("\n")
    );
}
