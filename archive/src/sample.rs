//! Deterministic sample trees for the demo, tests and benchmarks: everything a file backup must
//! keep (nested and empty directories, empty files, modes, nanosecond mtimes, symlinks, a hard-link
//! group, a sparse file, names that are not UTF-8 or hold a newline), from a seed.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use filetime::FileTime;

/// A small, fast pseudo-random generator (xorshift64*): the same seed gives the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn write_random(path: &Path, rng: &mut Rng, len: usize) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(())
}

fn text(rng: &mut Rng, lines: usize) -> String {
    const WORDS: &[&str] = &[
        "ferry", "backup", "restore", "shard", "volume", "zstd", "tar", "cluster",
    ];
    (0..lines)
        .map(|i| {
            let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
            format!("{i:05} {w} {}\n", rng.next())
        })
        .collect()
}

/// Creates the sample tree under `root` (which must not exist or be empty) and says what it made.
pub fn generate(root: &Path, seed: u64) -> std::io::Result<String> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    fs::create_dir_all(root.join("docs/2026/11"))?;
    fs::create_dir_all(root.join("images"))?;
    fs::create_dir_all(root.join("empty-dir"))?;
    fs::create_dir_all(root.join("private"))?;
    let mut files = 0;
    for i in 0..40 {
        let p = root.join(format!("docs/2026/11/note-{i:02}.txt"));
        fs::write(&p, text(&mut rng, 20 + i))?;
        files += 1;
    }
    for i in 0..4 {
        write_random(
            &root.join(format!("images/photo-{i}.bin")),
            &mut rng,
            256 << 10,
        )?;
        files += 1;
    }
    fs::write(root.join("empty.txt"), b"")?;
    fs::write(root.join("private/key.pem"), text(&mut rng, 3))?;
    fs::set_permissions(
        root.join("private/key.pem"),
        fs::Permissions::from_mode(0o600),
    )?;
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700))?;
    fs::write(root.join("run.sh"), "#!/bin/sh\necho ferry\n")?;
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755))?;
    fs::write(root.join("original.dat"), text(&mut rng, 50))?;
    fs::hard_link(root.join("original.dat"), root.join("images/hardlink.dat"))?;
    std::os::unix::fs::symlink("docs/2026/11/note-00.txt", root.join("latest-note"))?;
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling-link"))?;
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1.txt")),
        b"not utf-8\n",
    )?;
    fs::write(root.join("line\nbreak.txt"), b"a newline in the name\n")?;
    // 64 MiB apparent size, 3 small data regions: a restore must keep the holes.
    let mut sparse = fs::File::create(root.join("disk.img"))?;
    for offset in [0u64, 32 << 20, (64 << 20) - 4096] {
        sparse.seek(SeekFrom::Start(offset))?;
        sparse.write_all(&[0xAB; 4096])?;
    }
    sparse.set_len(64 << 20)?;
    files += 9;
    // Fixed mtimes with nanoseconds, children before parents.
    let mut n = 0i64;
    let mut stamp = |p: &Path| -> std::io::Result<()> {
        n += 1;
        let t =
            FileTime::from_unix_time(1_700_000_000 + n * 3600, (n as u32 * 7_919) % 1_000_000_000);
        filetime::set_symlink_file_times(p, t, t)
    };
    let mut all = Vec::new();
    collect(root, &mut all)?;
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in &all {
        stamp(p)?;
    }
    stamp(root)?;
    Ok(format!(
        "{files} files, 6 directories, 2 symlinks, 1 hard link, a 64 MiB sparse file, non-UTF-8 names"
    ))
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(&path, out)?;
        }
        out.push(path);
    }
    Ok(())
}

/// Damages a sample tree the way accidents do: a deleted file, an overwritten file, a changed
/// mode. Says what it did.
pub fn damage(root: &Path) -> std::io::Result<String> {
    fs::remove_file(root.join("docs/2026/11/note-03.txt"))?;
    fs::write(root.join("images/photo-1.bin"), b"overwritten")?;
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o600))?;
    Ok("deleted docs/2026/11/note-03.txt, overwrote images/photo-1.bin, chmod 600 run.sh".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tree_and_damage_shows() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        generate(&a, 1).unwrap();
        generate(&b, 1).unwrap();
        assert_eq!(crate::compare_trees(&a, &b).unwrap(), Vec::<String>::new());
        damage(&b).unwrap();
        let diffs = crate::compare_trees(&a, &b).unwrap().join("\n");
        for damaged in ["note-03.txt", "photo-1.bin", "run.sh"] {
            assert!(
                diffs.contains(damaged),
                "{damaged} not reported in:\n{diffs}"
            );
        }
    }
}
