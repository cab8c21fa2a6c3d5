//! Code versions: the macro's token hash, the manual `version`, and the
//! contents of the files declared with `files = [..]`.

use crate::error::{Error, Result};
use crate::node::NodeDef;
use std::path::{Path, PathBuf};

/// The files a node's `files` globs match now, sorted.
pub fn matched_files(node: &NodeDef) -> Result<Vec<PathBuf>> {
    let base = Path::new(node.base_dir);
    let mut paths = Vec::new();
    for pattern in node.files {
        let full = base.join(pattern);
        let full = full.to_string_lossy();
        let entries = glob::glob(&full).map_err(|e| Error::Glob {
            node: node.name.to_owned(),
            glob: pattern.to_string(),
            message: e.to_string(),
        })?;
        for entry in entries {
            let path = entry.map_err(|e| Error::File {
                node: node.name.to_owned(),
                path: e.path().to_owned(),
                source: std::io::Error::other(e.to_string()),
            })?;
            if path.is_file() {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// The current code version of a node: 16 hex digits.
pub fn code_version(node: &NodeDef) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(node.code_hash.as_bytes());
    hasher.update(&node.version.to_le_bytes());
    let base = Path::new(node.base_dir);
    for path in matched_files(node)? {
        let contents = std::fs::read(&path).map_err(|source| Error::File {
            node: node.name.to_owned(),
            path: path.clone(),
            source,
        })?;
        // Paths relative to the crate, so a moved checkout keeps its versions.
        let name = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(contents.len() as u64).to_le_bytes());
        hasher.update(&contents);
    }
    Ok(hasher.finalize().to_hex()[..16].to_owned())
}
