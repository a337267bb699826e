//! The parallel removal of a clean's trash ([`DirFd::remove_entries_parallel`]) removes
//! exactly what the sequential walk removes, counts each file once, stays within its
//! descriptors on a tree deeper than it shares, and reports a failure instead of
//! looping or losing it. Its resistance to planted links is raced in `secure_delete.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cachelock::safe_fs::{self, DirFd, Removed};

/// The thread counts tried: the sequential walk, the two cores of a laptop, more
/// threads than directories at some levels.
const THREADS: [usize; 4] = [1, 2, 3, 8];

/// Names, kinds, sizes, contents and link targets below `dir`, links not followed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(dir).expect("below").to_path_buf();
            let what = if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).expect("readlink").display())
            } else if meta.is_dir() {
                stack.push(path);
                "dir".to_string()
            } else {
                let content = fs::read(&path).expect("read");
                format!(
                    "file {} {}",
                    meta.nlink(),
                    String::from_utf8_lossy(&content)
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

/// Files and links below `dir` and the sum of their `lstat` sizes: what a removal of
/// `dir`'s contents must report.
fn expected(dir: &Path) -> Removed {
    let mut removed = Removed::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                stack.push(path);
            } else {
                removed.files += 1;
                removed.bytes += meta.len();
            }
        }
    }
    removed
}

/// A trash-like tree in `root` pointing at `outside` in every way a link can: wide
/// directories of files of different sizes, a deep chain, empty directories, links to
/// the outside directory and to a file in it, a dangling link, a hard link to an outside
/// file and a FIFO.
fn fill(root: &Path, outside: &Path) {
    for top in 0..3 {
        for d in 0..40 {
            let dir = root.join(format!("t{top}/d{d}"));
            fs::create_dir_all(&dir).expect("mkdir");
            for f in 0..(d % 7) * 5 {
                fs::write(dir.join(format!("f{f}")), "x".repeat(f * 3 + top)).expect("write");
            }
        }
        fs::create_dir_all(root.join(format!("t{top}/empty/inner"))).expect("mkdir");
    }
    let mut deep = root.join("deep");
    for level in 0..60 {
        deep = deep.join(format!("l{level}"));
        fs::create_dir_all(&deep).expect("mkdir");
        fs::write(deep.join("f"), format!("level {level}")).expect("write");
    }
    symlink(outside, root.join("t0/d3/to-outside")).expect("link");
    symlink(outside.join("precious"), root.join("t1/to-precious")).expect("link");
    symlink(root.join("nowhere"), root.join("t2/dangling")).expect("link");
    symlink(outside, root.join("link-at-top")).expect("link");
    fs::hard_link(outside.join("precious"), root.join("t2/d5/hard")).expect("hard link");
    let fifo = std::ffi::CString::new(root.join("t1/d1/fifo").to_string_lossy().as_bytes())
        .expect("cstring");
    // SAFETY: mkfifo(3) on a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    fs::write(root.join("file-at-top"), "top").expect("write");
}

fn outside_dir(base: &Path) -> PathBuf {
    let outside = base.join("outside");
    fs::create_dir_all(outside.join("sub")).expect("mkdir outside");
    fs::write(outside.join("precious"), "precious").expect("write");
    fs::write(outside.join("sub/f0"), "outside").expect("write");
    outside
}

fn remove_all(root: &Path, threads: usize, removed: &mut Removed) -> Result<(), String> {
    let dir = DirFd::open_root(root).expect("open the root");
    let names = dir.entries().expect("list the root");
    dir.remove_entries_parallel(names, threads, removed)
        .map_err(|e| e.to_string())
}

#[test]
fn parallel_removal_removes_everything_and_counts_each_file_once() {
    let base = tempfile::tempdir().expect("tempdir");
    let outside = outside_dir(base.path());
    let before = snapshot(&outside);
    for threads in THREADS {
        let root = base.path().join(format!("trash-{threads}"));
        fs::create_dir(&root).expect("mkdir");
        fill(&root, &outside);
        let want = expected(&root);
        assert!(want.files > 500, "a tree worth sharing: {want:?}");
        let mut removed = Removed::default();
        remove_all(&root, threads, &mut removed).expect("removal");
        assert_eq!(removed, want, "{threads} threads");
        assert_eq!(fs::read_dir(&root).expect("list").count(), 0, "{threads}");
        assert_eq!(
            snapshot(&outside),
            before,
            "{threads} threads: outside changed"
        );
    }
}

#[test]
fn a_tree_deeper_than_the_shared_directories_is_removed_within_them() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("trash");
    // Every level of the chain stays open while the one below is removed: past
    // `SHARED_DIRS` levels the rest is walked by one thread, one descriptor per level.
    let mut deep = root.join("deep");
    for level in 0..safe_fs::SHARED_DIRS + 100 {
        deep = deep.join("d");
        if level % 50 == 0 {
            fs::create_dir_all(&deep).expect("mkdir");
            for side in 0..4 {
                fs::create_dir(deep.join(format!("side{side}"))).expect("mkdir");
                fs::write(deep.join(format!("side{side}/f")), "x").expect("write");
            }
        }
    }
    fs::create_dir_all(&deep).expect("mkdir");
    fs::write(deep.join("bottom"), "bottom").expect("write");
    let want = expected(&root);
    let mut removed = Removed::default();
    remove_all(&root, 2, &mut removed).expect("removal");
    assert_eq!(removed, want);
    assert_eq!(fs::read_dir(&root).expect("list").count(), 0);
}

/// The directory the hook below works in (one test at a time sets it).
static GROWING: Mutex<Option<PathBuf>> = Mutex::new(None);
static ADDED: AtomicU64 = AtomicU64::new(0);

/// Makes `<root>/a` gain an entry after every listing of it: opening `a` puts `b` back
/// in it, and opening `a/b` (after `a` was listed) adds a file to `a`, so `a` is never
/// empty when its removal comes.
fn keep_growing(opened: &Path) {
    let Ok(guard) = GROWING.lock() else { return };
    let Some(root) = guard.as_ref() else { return };
    if opened == root.join("a") {
        let _ = fs::create_dir(root.join("a/b"));
    } else if opened == root.join("a/b") {
        let n = ADDED.fetch_add(1, Ordering::SeqCst);
        fs::write(root.join(format!("a/added-{n}")), "late").expect("add a file");
    }
}

#[test]
fn a_directory_that_keeps_gaining_entries_is_reported_not_removed_forever() {
    let base = tempfile::tempdir().expect("tempdir");
    for threads in THREADS {
        let root = base.path().join(format!("trash-{threads}"));
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        for other in 0..30 {
            let dir = root.join(format!("other{other}"));
            fs::create_dir(&dir).expect("mkdir");
            fs::write(dir.join("f"), "x").expect("write");
        }
        let added_before = ADDED.load(Ordering::SeqCst);
        *GROWING.lock().expect("lock") = Some(root.clone());
        *safe_fs::AFTER_OPEN_DIR.write().expect("lock") = Some(keep_growing);
        let mut removed = Removed::default();
        let result = remove_all(&root, threads, &mut removed);
        *safe_fs::AFTER_OPEN_DIR.write().expect("lock") = None;
        *GROWING.lock().expect("lock") = None;
        let added = ADDED.load(Ordering::SeqCst) - added_before;
        let error = result.expect_err("a directory that never empties is an error");
        let a = root.join("a");
        assert!(
            error.contains("kept changing") && error.contains(&a.display().to_string()),
            "{threads} threads: {error}"
        );
        assert!(added > 1, "{threads} threads: the hook ran ({added})");
        // Given up on, with the one file added after its last listing still in it;
        // every file unlinked before the failure is counted.
        let left: Vec<_> = fs::read_dir(&a)
            .expect("`a` is still there")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 1, "{threads} threads: {left:?}");
        assert!(
            removed.files >= added - 1,
            "{threads} threads: {added} files added, {} counted",
            removed.files
        );
    }
}
