//! A container's binds and the mount points they need on this machine.
//! There is no container image, so a `mountPath` the machine lacks is made
//! (an empty directory, or an empty file for a file), recorded, and
//! removed by `cluster down` while it is still empty.

use std::path::{Path, PathBuf};

/// One bind of a container: `source` on this machine at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Makes the binds' mount points that do not exist yet on this machine (a
/// directory, or an empty file for a file), appending each path made to
/// `record`, from which `cluster down` removes them again.
pub fn make_mount_points(binds: &[Bind], record: &Path) -> Result<(), String> {
    let mut made = Vec::new();
    for b in binds {
        let mut missing: Vec<&Path> = b.target.ancestors().take_while(|p| !p.exists()).collect();
        missing.reverse();
        for (i, p) in missing.iter().enumerate() {
            let last = i + 1 == missing.len();
            let result = if last && b.source.is_file() {
                std::fs::write(p, b"")
            } else {
                std::fs::create_dir(p)
            };
            result.map_err(|e| format!("mount point {}: {e}", p.display()))?;
            made.push(p.display().to_string());
        }
    }
    if !made.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)
            .map_err(|e| format!("{}: {e}", record.display()))?;
        for p in made {
            writeln!(f, "{p}").map_err(|e| format!("{}: {e}", record.display()))?;
        }
    }
    Ok(())
}

/// Removes the mount points `record` lists, deepest first, each only if it
/// is still an empty directory or an empty file; returns those removed.
pub fn remove_mount_points(record: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(record) else {
        return Vec::new();
    };
    let mut paths: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    paths.sort_by_key(|p| std::cmp::Reverse(Path::new(p).components().count()));
    paths.dedup();
    paths
        .into_iter()
        .filter(|p| {
            let path = Path::new(p);
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir(path).is_ok(),
                Ok(m) if m.is_file() && m.len() == 0 => std::fs::remove_file(path).is_ok(),
                _ => false,
            }
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_made_are_recorded_and_removed_deepest_first_while_empty() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record");
        let file = dir.path().join("source-file");
        std::fs::write(&file, b"x").unwrap();
        let binds = [
            Bind {
                source: dir.path().to_path_buf(),
                target: dir.path().join("a/b/c"),
                read_only: false,
            },
            Bind {
                source: file,
                target: dir.path().join("a/f"),
                read_only: true,
            },
        ];
        make_mount_points(&binds, &record).unwrap();
        assert!(dir.path().join("a/b/c").is_dir());
        assert!(dir.path().join("a/f").is_file());
        // Something of someone else's keeps its directory.
        std::fs::write(dir.path().join("a/b/kept"), b"").unwrap();
        let removed = remove_mount_points(&record);
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!dir.path().join("a/b/c").exists());
        assert!(dir.path().join("a/b/kept").exists());
    }
}
