//! Every crate a user depends on can be published: each file its sources compile in
//! (`include_str!`, `include!`, `include_bytes!`) lies inside that crate's own directory, which
//! `cargo package` ships whole (none of the manifests narrows it with `include` / `exclude`).
//! The generator's templates were once read from the workspace root, outside `sata-codegen`.

use std::path::{Path, PathBuf};

/// The crates users depend on, by directory.
const CRATES: [&str; 4] = [".", "codegen", "codegen/macros", "runtime"];

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

/// The literal paths of `include_str!("..")`-like macros in `source`.
fn included(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for mac in ["include_str!(\"", "include_bytes!(\"", "include!(\""] {
        let mut rest = source;
        while let Some(at) = rest.find(mac) {
            rest = &rest[at + mac.len()..];
            if let Some(end) = rest.find('"') {
                found.push(rest[..end].to_string());
            }
        }
    }
    found
}

#[test]
fn compiled_in_files_live_inside_their_crate() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for krate in CRATES {
        let root = workspace.join(krate).canonicalize().unwrap();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        for key in ["include", "exclude"] {
            assert!(
                !manifest
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
                "{krate}/Cargo.toml narrows the package with `{key}`"
            );
        }
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        for file in files {
            let source = std::fs::read_to_string(&file).unwrap();
            for path in included(&source) {
                let target = file.parent().unwrap().join(&path);
                let target = target
                    .canonicalize()
                    .unwrap_or_else(|e| panic!("{}: {path}: {e}", file.display()));
                assert!(
                    target.starts_with(&root),
                    "{} compiles in {}, outside its crate {krate}",
                    file.display(),
                    target.display()
                );
                checked += 1;
            }
        }
    }
    // The five templates and the host-execution header.
    assert!(checked >= 6, "only {checked} included files found");
}
