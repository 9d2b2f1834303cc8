//! The tree's size rules, checked on the source: no function over 120 lines (tests included),
//! and `src/config.rs` stays a composition (under 630 lines) rather than a list of settings.

use std::path::{Path, PathBuf};

const MAX_FUNCTION_LINES: usize = 120;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source with comments, strings and character literals blanked (newlines kept), so braces
/// inside them do not count.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, part: &[u8]| {
        out.extend(part.iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }))
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"r\"") || rest.starts_with(b"r#") && !ident_before {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let start = 2 + hashes;
            let end = rest[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| start + p + close.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' && rest.len() > 3 && (rest[2] == b'\'' || rest[1] == b'\\') {
            let end = rest[2..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(rest.len(), |p| p + 3);
            blank(&mut out, &rest[..end]);
            i += end;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (name, first line, length) of every function longer than `max` lines.
fn long_functions(src: &str, max: usize) -> Vec<(String, usize, usize)> {
    let code = code_only(src);
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let modifiers = [
            "pub",
            "pub(crate)",
            "pub(super)",
            "async",
            "const",
            "unsafe",
        ];
        if !words[..at].iter().all(|w| modifiers.contains(w)) || at + 1 >= words.len() {
            continue;
        }
        let name: String = words[at + 1]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i64, false);
        for (j, body) in lines.iter().enumerate().skip(i) {
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !opened && body.trim_end().ends_with(';') {
                break;
            }
            if opened && depth == 0 {
                if j - i + 1 > max {
                    found.push((name.clone(), i + 1, j - i + 1));
                }
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_in_the_tree_is_over_120_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "actors/src",
        "actors/tests",
        "actors/benches",
        "tests",
        "benches",
    ] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    assert!(
        files.len() > 50,
        "the tree was read ({} files)",
        files.len()
    );
    let mut long = Vec::new();
    for file in &files {
        let src = std::fs::read_to_string(file).unwrap();
        for (name, line, len) in long_functions(&src, MAX_FUNCTION_LINES) {
            let rel = file
                .strip_prefix(root)
                .unwrap_or(file)
                .display()
                .to_string();
            long.push(format!("{rel}:{line} {name}: {len} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_a_long_function_and_ignores_braces_in_strings() {
    let body = "    let x = \"{{{\";\n".repeat(130);
    let src = format!("fn long() {{\n{body}}}\nfn short() {{ let c = '{{'; }}\n");
    assert_eq!(
        long_functions(&src, 120),
        vec![("long".to_string(), 1, 132)]
    );
}

#[test]
fn the_configuration_is_a_composition() {
    let config = include_str!("../src/config.rs");
    assert!(
        config.lines().count() < 630,
        "src/config.rs has {} lines: settings belong in their service's settings type",
        config.lines().count()
    );
}
