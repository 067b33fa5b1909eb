//! The layering of docs/architecture.md, enforced: a module of the library names only
//! modules declared before it in src/lib.rs (the data-flow order), never a later stage.
//! Test code (`#[cfg(test)]` and the test-only files) may reach further.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::harness::repo;

/// The modules of `lib_rs`, in the order declared.
fn declared_order(lib_rs: &str) -> Vec<String> {
    lib_rs
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

/// The top-level modules of the crate that `code` names (`crate::x` and
/// `use crate::{x, y::z}`), with the line of each; comments and test code left out.
fn named_modules(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_group = false;
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or("");
        if line.trim_start().starts_with("#[cfg(test)]") {
            break; // the rest of the file is tests
        }
        let mut rest = line;
        if in_group {
            // Inside `use crate::{ ... }`: every item's first segment is a module.
            for item in rest.split(',') {
                let item = item.trim().trim_start_matches('{');
                let name: String = item
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
            if rest.contains("};") {
                in_group = false;
            }
            continue;
        }
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}');
                for item in group[..end.unwrap_or(group.len())].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push((n + 1, name));
                    }
                }
                if end.is_none() {
                    in_group = true;
                }
                break;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((n + 1, name));
        }
    }
    out
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The imports of a later stage: `FILE:LINE: a uses b, declared after it`.
fn violations(order: &[String], files: &[(String, PathBuf, String)]) -> Vec<String> {
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut found = Vec::new();
    for (module, path, code) in files {
        let Some(&mine) = rank.get(module.as_str()) else {
            continue;
        };
        for (line, used) in named_modules(code) {
            if let Some(&theirs) = rank.get(used.as_str())
                && theirs > mine
            {
                found.push(format!(
                    "{}:{line}: {module} uses {used}, which src/lib.rs declares after it",
                    path.display()
                ));
            }
        }
    }
    found
}

#[test]
fn no_module_imports_a_later_stage() {
    let src = repo().join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let order = declared_order(&lib);
    assert!(order.len() > 10, "src/lib.rs declares {order:?}");
    assert_eq!(order.first().map(String::as_str), Some("files"));
    assert_eq!(order.last().map(String::as_str), Some("cli"));
    let mut files = Vec::new();
    for module in &order {
        let mut paths = vec![src.join(format!("{module}.rs"))];
        rust_files(&src.join(module), &mut paths);
        for path in paths {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name == "tests.rs" || name == "testkit.rs" || !path.is_file() {
                continue; // test-only files
            }
            let code = std::fs::read_to_string(&path).unwrap();
            files.push((module.clone(), path, code));
        }
    }
    assert!(files.len() > 50, "read only {} files", files.len());
    let found = violations(&order, &files);
    assert!(
        found.is_empty(),
        "a stage imports a later one (move the code, or the module in src/lib.rs if the \
         order is wrong, and say so in docs/architecture.md):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_every_form_of_import() {
    let order: Vec<String> = ["config", "run", "render"].map(String::from).to_vec();
    let file =
        |module: &str, code: &str| (module.to_string(), PathBuf::from("x.rs"), code.to_string());
    let files = [
        file("run", "use crate::render::heatmap;\n"),
        file("run", "use crate::{config::Location, render::escape};\n"),
        file("run", "use crate::{\n    config,\n    render::x,\n};\n"),
        file("run", "fn f() { crate::render::x(); }\n"),
        file(
            "config",
            "let a = crate::config::X; let b = crate::run::Y;\n",
        ),
        // Allowed: earlier stages, comments, tests.
        file("render", "use crate::run::Run;\nuse crate::config;\n"),
        file("run", "// see crate::render\n/// [`crate::render::x`]\n"),
        file("run", "#[cfg(test)]\nmod tests { use crate::render::x; }\n"),
    ];
    let found = violations(&order, &files);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(found[0].contains("x.rs:1: run uses render"), "{}", found[0]);
    assert!(found[2].contains("x.rs:3: run uses render"), "{}", found[2]);
    assert!(found[4].contains("config uses run"), "{}", found[4]);
}
