//! Deletion cannot be redirected out of the cache by links.
//!
//! A writer of the cache (the attacker of the README's trust model) swaps directories
//! inside the cache for symbolic links to an outside "canary" directory and back,
//! continuously, while every deletion path runs: clean (uv's and cachelock's),
//! prune, the environment trash, a run's temporary-cache removal, prune's removal of
//! leaked temporary caches, and the removal of a clean's trash by several threads; in process through the library, and through the real
//! `cachelock` binary for clean and prune. The canary tree (names, kinds, sizes,
//! contents, mtimes, link targets) must be exactly as before after every round.
//!
//! The swapper never runs while a round's cache is being filled: the main thread and
//! the swapper hand over through channels, so nothing is ordered by a sleep. The
//! deterministic tests plant a link at one chosen component, or swap one between two
//! calls, and check the outside directory.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use cachelock::cache::{self, create_scaffold, delete_entries, lock_temp_cache};
use cachelock::safe_fs::{DirFd, OwnedTree, Removed};

use common::Dirs;

/// Everything that identifies an entry of the canary tree.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    fn walk(base: &Path, dir: &Path, out: &mut Snapshot) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let rel = path.strip_prefix(base).unwrap_or(&path).to_path_buf();
            let what = if meta.is_dir() {
                walk(base, &path, out);
                format!("dir mtime={}.{}", meta.mtime(), meta.mtime_nsec())
            } else if meta.file_type().is_symlink() {
                format!("link -> {:?}", fs::read_link(&path).ok())
            } else {
                let mut content = Vec::new();
                let _ = fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut content));
                format!(
                    "file size={} mtime={}.{} nlink={} content={:?}",
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    meta.nlink(),
                    String::from_utf8_lossy(&content)
                )
            };
            out.insert(rel, what);
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// The outside directory: the names a cache has, so that a redirected deletion of any
/// of them would hit it.
fn make_canary(dir: &Path) {
    let files = [
        "web/cachelock-env",
        "web/lib/a.py",
        "web/lib/sub/b.py",
        "api/cachelock-env",
        "lib/a.py",
        "lib/c.py",
        "sub/b.py",
        "k1/f1",
        "web.build-abc/cachelock-env",
        "web.build-abc/lib/d.py",
        "CACHEDIR.TAG",
        ".gitignore",
        "cachelock-env",
        "a.py",
        "d.py",
        "f1",
        "f2",
        "precious",
    ];
    for f in files {
        let path = dir.join(f);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir canary");
        fs::write(&path, format!("outside file {f}\n")).expect("write canary");
    }
    for sub in ["", "lib", "k1"] {
        for i in 0..3 {
            let path = dir.join(sub).join(format!("m{i}.py"));
            fs::write(&path, format!("outside file {sub}/m{i}.py\n")).expect("write canary");
        }
    }
}

/// What differs between two snapshots: (deleted, changed, added).
fn damage(before: &Snapshot, after: &Snapshot) -> (usize, usize, usize) {
    let deleted = before.keys().filter(|k| !after.contains_key(*k)).count();
    let changed = before
        .iter()
        .filter(|(k, v)| after.get(*k).is_some_and(|w| w != *v))
        .count();
    let added = after.keys().filter(|k| !before.contains_key(*k)).count();
    (deleted, changed, added)
}

/// The directories (relative to a cache root) that the swapper swaps.
const SWAPPED: [&str; 9] = [
    "environments",
    "builds",
    "environments/web",
    "environments/web/lib",
    "environments/api/lib",
    "builds/web.build-abc",
    "builds/web.build-abc/lib",
    "archive-v0",
    "archive-v0/k1",
];

/// Fills a cache root (by path: the swapper is paused).
fn populate(root: &Path) {
    let files = [
        "environments/web/cachelock-env",
        "environments/web/lib/a.py",
        "environments/web/lib/sub/b.py",
        "environments/web.lock",
        "environments/api/cachelock-env",
        "environments/api/lib/c.py",
        "builds/web.build-abc/cachelock-env",
        "builds/web.build-abc/lib/d.py",
        "archive-v0/k1/f1",
        "archive-v0/k1/f2",
        "CACHEDIR.TAG",
        ".gitignore",
        ".lock",
    ];
    for f in files {
        let path = root.join(f);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir cache");
        // A scaffold's own files (a temporary cache's tag) are kept.
        if fs::symlink_metadata(&path).is_err() {
            fs::write(&path, "inside\n").expect("write cache");
        }
    }
    // Flat directories of many files, each raced by swaps of its own and its parents'
    // components while it is emptied.
    for dir in [
        "environments/web/lib",
        "environments/api/lib",
        "archive-v0/k1",
    ] {
        for i in 0..FLAT {
            let path = root.join(dir).join(format!("m{i}.py"));
            if fs::symlink_metadata(&path).is_err() {
                fs::write(&path, "inside\n").expect("write cache");
            }
        }
    }
    fs::create_dir_all(root.join(".cleans")).expect("mkdir .cleans");
}

/// Files in each flat directory of a populated cache.
const FLAT: usize = 12;

/// Tears a half-deleted or swapped cache down completely between rounds (the swapper is
/// paused; links are removed, not followed).
fn reset(root: &Path) {
    if fs::symlink_metadata(root).is_ok() {
        fs::remove_dir_all(root).expect("reset the cache");
    }
}

enum Order {
    /// Swap inside this root until told to stop.
    Race(PathBuf),
    Quit,
}

/// A thread that swaps the [`SWAPPED`] directories of a root for links to the canary
/// and back, from `Race` until the stop flag, then restores what it swapped and
/// acknowledges.
struct Swapper {
    orders: mpsc::Sender<Order>,
    acks: mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Swapper {
    fn new(canary: PathBuf) -> Swapper {
        let (orders, rx) = mpsc::channel::<Order>();
        let (ack_tx, acks) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (stop2, swaps2) = (stop.clone(), swaps.clone());
        let handle = thread::spawn(move || {
            let mut turn = 0usize;
            while let Ok(Order::Race(root)) = rx.recv() {
                // Acknowledge the start, so that the deletion begins with the swapper
                // running.
                let _ = ack_tx.send(());
                while !stop2.load(Ordering::SeqCst) {
                    let dir = root.join(SWAPPED[turn % SWAPPED.len()]);
                    turn += 1;
                    let aside = dir.with_extension("swapped-aside");
                    if fs::rename(&dir, &aside).is_err() {
                        // Gone (deleted): give the deletion the core.
                        thread::yield_now();
                        continue;
                    }
                    if symlink(&canary, &dir).is_ok() {
                        swaps2.fetch_add(1, Ordering::Relaxed);
                        // Unlinks the link (never follows it); a clean may have done so.
                        let _ = fs::remove_file(&dir);
                    }
                    let _ = fs::rename(&aside, &dir);
                }
                let _ = ack_tx.send(());
            }
        });
        Swapper {
            orders,
            acks,
            stop,
            swaps,
            handle: Some(handle),
        }
    }

    /// Runs `f` while the swapper swaps inside `root`.
    fn race<T>(&self, root: &Path, f: impl FnOnce() -> T) -> T {
        self.stop.store(false, Ordering::SeqCst);
        self.orders
            .send(Order::Race(root.to_path_buf()))
            .expect("swapper alive");
        self.acks.recv().expect("swapper started");
        let result = f();
        self.stop.store(true, Ordering::SeqCst);
        self.acks.recv().expect("swapper stopped");
        result
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.orders.send(Order::Quit);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The deletion paths raced.
#[derive(Clone, Copy, Debug)]
enum Path_ {
    /// uv's clean: everything but `.lock` and `.cleans/`, no environment locks.
    CleanUv,
    /// cachelock's clean: under environment locks, environments go to the trash first.
    CleanCachelock,
    /// prune: environments and builds only, under environment locks.
    Prune,
    /// Environment trash removal on its own: environments renamed into `builds/` and
    /// removed there (prune of a cache with environments only).
    EnvTrash,
    /// A `--no-cache` run's temporary cache, removed when the run ends.
    TempCache,
    /// prune's removal of leaked temporary caches.
    LeakedTemp,
    /// The removal of a clean's trash by several threads
    /// (`DirFd::remove_entries_parallel`, 4 threads), of a whole cache.
    Parallel,
    /// `cachelock clean` (the binary).
    BinClean,
    /// `cachelock prune` (the binary; also removes leaked temporary caches in TMPDIR).
    BinPrune,
}

#[derive(Debug, Default)]
struct Tally {
    rounds: u64,
    ok: u64,
    errors: Vec<String>,
    removed_files: u64,
    deleted_outside: usize,
    changed_outside: usize,
    added_outside: usize,
}

/// Runs `which` for `rounds` rounds, or (with `min_files`) until at least that many
/// files were removed under the race.
fn run_path(
    which: Path_,
    rounds: u64,
    min_files: u64,
    swapper: &Swapper,
    d: &Dirs,
    canary: &Path,
) -> Tally {
    let mut before = snapshot(canary);
    assert!(before.len() > 15, "the canary is populated: {before:?}");
    let mut tally = Tally::default();
    let cache_root = d.cache();
    let tmp = d.tmp();
    while tally.rounds < rounds || tally.removed_files < min_files {
        tally.rounds += 1;
        let result: Result<u64, String> = match which {
            Path_::CleanUv | Path_::CleanCachelock | Path_::Prune | Path_::EnvTrash => {
                reset(&cache_root);
                populate(&cache_root);
                if let Path_::EnvTrash = which {
                    fs::remove_dir_all(cache_root.join("archive-v0")).expect("trim");
                    fs::remove_dir_all(cache_root.join("builds/web.build-abc")).expect("trim");
                }
                let (scaffold, env_locks) = match which {
                    Path_::CleanUv => (true, false),
                    Path_::CleanCachelock => (true, true),
                    _ => (false, true),
                };
                swapper
                    .race(&cache_root, || {
                        delete_entries(&cache_root, scaffold, env_locks)
                    })
                    .map(|r| r.removed_files)
                    .map_err(|e| e.to_string())
            }
            Path_::Parallel => {
                reset(&cache_root);
                populate(&cache_root);
                let root = DirFd::open_root(&cache_root).expect("open the cache");
                let names = root.entries().expect("list the cache");
                swapper
                    .race(&cache_root, || {
                        let mut removed = Removed::default();
                        root.remove_entries_parallel(names, 4, &mut removed)
                            .map(|()| removed.files)
                    })
                    .map_err(|e| e.to_string())
            }
            Path_::TempCache => {
                let parent = DirFd::open_root(&tmp).expect("open tmp");
                let tree = OwnedTree::create_in(parent, ".tmp").expect("a temporary cache");
                let root = tree.path().to_path_buf();
                populate(&root);
                swapper
                    .race(&root, move || tree.close())
                    .map(|r: Removed| r.files)
                    .map_err(|e| e.to_string())
            }
            Path_::LeakedTemp => {
                let root = tmp.join(".tmpleaked");
                reset(&root);
                fs::create_dir(&root).expect("mkdir leaked");
                create_scaffold(&root).expect("scaffold");
                drop(lock_temp_cache(&root).expect("lock it, then leak it"));
                populate(&root);
                swapper
                    .race(&root, || cache::remove_leaked_temp_caches(&tmp))
                    .map(|r| r.iter().map(|(_, rep)| rep.removed_files).sum())
                    .map_err(|e| e.to_string())
            }
            Path_::BinClean | Path_::BinPrune => {
                reset(&cache_root);
                populate(&cache_root);
                let leaked = tmp.join(".tmpleaked");
                if let Path_::BinPrune = which {
                    reset(&leaked);
                    fs::create_dir(&leaked).expect("mkdir leaked");
                    create_scaffold(&leaked).expect("scaffold");
                    drop(lock_temp_cache(&leaked).expect("lock it, then leak it"));
                    populate(&leaked);
                }
                let verb = if let Path_::BinClean = which {
                    "clean"
                } else {
                    "prune"
                };
                let status = swapper.race(&cache_root, || {
                    d.cmd(verb, &[verb, "--cache-dir", &cache_root.to_string_lossy()])
                        .status()
                });
                match status {
                    Ok(s) if s.success() => Ok(0),
                    Ok(s) => Err(format!("{verb}: {s}: {}", d.stderr(verb))),
                    Err(e) => Err(format!("{verb}: {e}")),
                }
            }
        };
        match result {
            Ok(files) => {
                tally.ok += 1;
                tally.removed_files += files;
            }
            Err(e) => tally.errors.push(e),
        }
        let after = snapshot(canary);
        if after != before {
            let (deleted, changed, added) = damage(&before, &after);
            tally.deleted_outside += deleted;
            tally.changed_outside += changed;
            tally.added_outside += added;
            // Restore the canary, so that every round counts its own damage.
            fs::remove_dir_all(canary).expect("reset the canary");
            fs::create_dir(canary).expect("recreate the canary");
            make_canary(canary);
            before = snapshot(canary);
        }
    }
    tally
}

fn race_all(files_lib: u64, rounds_bin: u64) {
    let d = Dirs::new();
    let canary = d.file("outside");
    fs::create_dir(&canary).expect("mkdir canary");
    make_canary(&canary);
    let swapper = Swapper::new(canary.clone());
    let failures = Mutex::new(Vec::new());
    let plan = [
        (Path_::CleanUv, 0, files_lib),
        (Path_::CleanCachelock, 0, files_lib),
        (Path_::Prune, 0, files_lib),
        (Path_::EnvTrash, 0, files_lib),
        (Path_::TempCache, 0, files_lib),
        (Path_::LeakedTemp, 0, files_lib),
        (Path_::Parallel, 0, files_lib),
        (Path_::BinClean, rounds_bin, 0),
        (Path_::BinPrune, rounds_bin, 0),
    ];
    for (which, rounds, min_files) in plan {
        let swaps_before = swapper.swaps.load(Ordering::Relaxed);
        let start = std::time::Instant::now();
        let tally = run_path(which, rounds, min_files, &swapper, &d, &canary);
        let swaps = swapper.swaps.load(Ordering::Relaxed) - swaps_before;
        eprintln!(
            "{which:?} ({:.1?}): {} rounds, {} ok, {} errors, {} files removed in the cache, {swaps} swaps \
             to a link; outside: {} deleted, {} changed, {} added",
            start.elapsed(),
            tally.rounds,
            tally.ok,
            tally.errors.len(),
            tally.removed_files,
            tally.deleted_outside,
            tally.changed_outside,
            tally.added_outside
        );
        if let Some(e) = tally.errors.first() {
            eprintln!("{which:?}: first error: {e}");
        }
        let mut f = failures.lock().expect("not poisoned");
        if tally.deleted_outside + tally.changed_outside + tally.added_outside > 0 {
            f.push(format!(
                "{which:?}: {} outside files deleted, {} changed, {} added",
                tally.deleted_outside, tally.changed_outside, tally.added_outside
            ));
        }
        // The race must not stop the deletions from happening.
        if tally.ok * 10 < tally.rounds * 9 {
            f.push(format!(
                "{which:?}: only {} of {} deletions succeeded (first error: {:?})",
                tally.ok,
                tally.rounds,
                tally.errors.first()
            ));
        }
        let in_process = !matches!(which, Path_::BinClean | Path_::BinPrune);
        if in_process && tally.removed_files == 0 {
            f.push(format!("{which:?}: removed nothing"));
        }
        if swaps == 0 {
            f.push(format!("{which:?}: the swapper never swapped"));
        }
    }
    let f = failures.into_inner().expect("not poisoned");
    assert!(f.is_empty(), "{}", f.join("\n"));
}

/// Every deletion path raced against the swapper: each in-process path until it has
/// removed 3 000 files under the race (one round = one call of the deletion, on a fresh
/// cache of ~50 files in ~12 directories), then 40 rounds each of the `cachelock clean`
/// and `cachelock prune` binaries. The CI size; the long run below is the full one.
#[test]
fn race_against_symlink_swaps() {
    race_all(3_000, 40);
}

/// The full run: 10 000 raced file removals per in-process path, 200 binary rounds each.
#[test]
#[ignore = "long: run with --ignored"]
fn race_against_symlink_swaps_long() {
    race_all(10_000, 200);
}

// ----- deterministic: a link planted at one chosen component -------------------------

fn cache_with_outside() -> (Dirs, PathBuf, PathBuf, Snapshot) {
    let d = Dirs::new();
    let outside = d.file("outside");
    fs::create_dir(&outside).expect("mkdir outside");
    make_canary(&outside);
    let root = d.cache();
    populate(&root);
    let before = snapshot(&outside);
    (d, root, outside, before)
}

/// Replaces the directory `rel` of `root` with a link to `outside` (its content moved
/// aside inside the cache).
fn plant(root: &Path, rel: &str, outside: &Path) {
    let dir = root.join(rel);
    if fs::symlink_metadata(&dir).is_ok() {
        fs::rename(&dir, dir.with_extension("aside")).expect("move aside");
    }
    symlink(outside, &dir).expect("plant the link");
}

#[test]
fn a_link_planted_at_any_component_is_removed_and_never_followed() {
    for rel in SWAPPED {
        for (scaffold, env_locks) in [(true, false), (true, true), (false, true), (false, false)] {
            let (_d, root, outside, before) = cache_with_outside();
            plant(&root, rel, &outside);
            let report = delete_entries(&root, scaffold, env_locks)
                .unwrap_or_else(|e| panic!("{rel} {scaffold} {env_locks}: {e}"));
            assert_eq!(
                snapshot(&outside),
                before,
                "{rel} (scaffold {scaffold}, env locks {env_locks}): the outside changed"
            );
            if scaffold && !env_locks {
                // uv's clean: nothing but `.lock` and `.cleans` is left, the link included.
                let mut left: Vec<_> = fs::read_dir(&root)
                    .expect("list")
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                left.sort();
                assert_eq!(left, [".cleans", ".lock"], "{rel}: {report:?}");
            }
        }
    }
}

#[test]
fn a_lock_file_that_is_a_link_is_neither_followed_nor_created_through() {
    let (_d, root, outside, _) = cache_with_outside();
    let target = outside.join("precious");
    let dangling = outside.join("created-through-a-link");
    fs::remove_file(root.join("environments/web.lock")).expect("rm lock");
    symlink(&target, root.join("environments/web.lock")).expect("link lock");
    symlink(&dangling, root.join("environments/api.lock")).expect("dangling lock");
    let before = snapshot(&outside);
    let report = delete_entries(&root, true, true).expect("clean");
    assert_eq!(snapshot(&outside), before);
    assert!(
        !dangling.exists(),
        "a file was created through a dangling link"
    );
    // Their environments cannot be locked: kept, as in use.
    assert_eq!(report.skipped, ["api", "web"]);
}

#[test]
fn a_directory_swapped_after_it_was_opened_is_still_the_one_removed() {
    // The swap happens at a chosen point: after the walk opened `environments`, before
    // it lists and removes.
    let (_d, root, outside, before) = cache_with_outside();
    let files_inside = snapshot(&root.join("environments"))
        .values()
        .filter(|v| v.starts_with("file"))
        .count() as u64;
    let dir = DirFd::open_root(&root).expect("open root");
    let envs = dir.open_dir("environments").expect("open environments");
    fs::rename(root.join("environments"), root.join("moved")).expect("move");
    symlink(&outside, root.join("environments")).expect("swap in a link");
    let mut removed = Removed::default();
    envs.remove_contents(&mut removed).expect("remove contents");
    assert_eq!(snapshot(&outside), before, "the link was followed");
    assert_eq!(fs::read_dir(root.join("moved")).expect("list").count(), 0);
    assert_eq!(
        removed.files, files_inside,
        "the moved directory's files were removed"
    );
    dir.remove_tree("environments", &mut removed)
        .expect("remove the link");
    assert!(fs::symlink_metadata(root.join("environments")).is_err());
    assert_eq!(snapshot(&outside), before);
}

/// Where the hook swaps: the test's cache root, its outside directory, and whether it
/// swaps the directory just opened (0), its parent (1), or the directory just opened if
/// it is not a top-level one (2).
static HOOKED: Mutex<Option<(PathBuf, PathBuf, usize)>> = Mutex::new(None);
static HOOK_SWAPS: AtomicU64 = AtomicU64::new(0);

/// Swaps the directory just opened (or its parent) for a link to the outside, moving
/// the real one aside under a fresh name in the same parent.
fn swap_at_open(opened: &Path) {
    let Ok(guard) = HOOKED.lock() else { return };
    let Some((root, outside, level)) = guard.as_ref() else {
        return;
    };
    if !opened.starts_with(root) || opened == root {
        return;
    }
    let depth = opened
        .strip_prefix(root)
        .map_or(0, |r| r.components().count());
    if *level == 2 && depth < 2 {
        return;
    }
    let target = if *level != 1 {
        opened
    } else {
        match opened.parent() {
            Some(p) if p != root && p.starts_with(root) => p,
            _ => opened,
        }
    };
    // The attacker works inside the cache: a path that runs through a link swapped in
    // earlier (the walk's descriptors do not, its path names do) is left alone.
    let inside = target
        .ancestors()
        .take_while(|a| *a != root.as_path())
        .all(|a| fs::symlink_metadata(a).is_ok_and(|m| m.is_dir()));
    // Each directory is swapped once: one moved aside already is left alone.
    let moved = target
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("aside-"));
    if !inside || moved {
        return;
    }
    let n = HOOK_SWAPS.fetch_add(1, Ordering::SeqCst);
    let aside = target.with_file_name(format!("aside-{n}"));
    fs::rename(target, &aside).expect("move aside");
    symlink(outside, target).expect("swap in a link");
}

#[test]
fn a_directory_swapped_the_moment_it_is_opened_is_still_the_one_removed() {
    // One test at a time sets the hook; the other tests' paths never match it.
    for level in [0, 1, 2] {
        // `parallel`: the removal of a whole cache by that many threads, as a trash is.
        let cases = [
            (true, false, None),
            (true, true, None),
            (false, true, None),
            (true, false, Some(2)),
            (true, false, Some(4)),
        ];
        for (scaffold, env_locks, parallel) in cases {
            let (_d, root, outside, before) = cache_with_outside();
            let files_inside = snapshot(&root)
                .iter()
                .filter(|(k, v)| {
                    v.starts_with("file")
                        && (k.starts_with("environments") || k.starts_with("builds"))
                })
                .count() as u64;
            let swaps_before = HOOK_SWAPS.load(Ordering::SeqCst);
            *HOOKED.lock().expect("lock") = Some((root.clone(), outside.clone(), level));
            *cachelock::safe_fs::AFTER_OPEN_DIR.write().expect("lock") = Some(swap_at_open);
            let result = match parallel {
                None => delete_entries(&root, scaffold, env_locks),
                Some(threads) => {
                    let dir = DirFd::open_root(&root).expect("open root");
                    let names = dir.entries().expect("list root");
                    let mut removed = Removed::default();
                    dir.remove_entries_parallel(names, threads, &mut removed)
                        .map(|()| cache::DeleteReport {
                            removed_files: removed.files,
                            ..Default::default()
                        })
                }
            };
            *cachelock::safe_fs::AFTER_OPEN_DIR.write().expect("lock") = None;
            *HOOKED.lock().expect("lock") = None;
            let what = format!(
                "level {level}, scaffold {scaffold}, env locks {env_locks}, threads {parallel:?}"
            );
            let report = result.unwrap_or_else(|e| panic!("{what}: {e}"));
            let swaps = HOOK_SWAPS.load(Ordering::SeqCst) - swaps_before;
            assert!(swaps >= 2, "{what}: only {swaps} swaps");
            eprintln!("{what}: {swaps} swaps");
            assert_eq!(snapshot(&outside), before, "{what}: the outside changed");
            assert!(report.removed_files > 0, "{what}: removed nothing");
            if level == 2 {
                // Below the top level, a directory is moved aside only once the walk
                // holds it open: every file of environments and builds goes, from where
                // it was moved to. (A top-level directory moved aside before the walk
                // reaches it is out of this clean's reach: the attacker hid it.)
                assert!(
                    report.removed_files >= files_inside,
                    "{what}: removed {} of {files_inside}",
                    report.removed_files
                );
                let left_files: Vec<_> = snapshot(&root)
                    .into_iter()
                    .filter(|(k, v)| {
                        v.starts_with("file")
                            && (k.starts_with("environments") || k.starts_with("builds"))
                            && !k.to_string_lossy().ends_with(".lock")
                    })
                    .collect();
                assert!(left_files.is_empty(), "{what}: left {left_files:?}");
            }
        }
    }
}

#[test]
fn a_temporary_tree_whose_parent_is_swapped_is_removed_where_it_was_made() {
    let d = Dirs::new();
    let outside = d.file("outside");
    fs::create_dir(&outside).expect("mkdir outside");
    let parent_path = d.file("builds");
    fs::create_dir(&parent_path).expect("mkdir builds");
    let tree = OwnedTree::create_in(DirFd::open_root(&parent_path).expect("open"), "web.build-")
        .expect("create");
    let name = tree.name().to_os_string();
    // The same name outside: a path-based removal through the swapped parent hits it.
    fs::create_dir(outside.join(&name)).expect("mkdir outside twin");
    fs::write(outside.join(&name).join("precious"), "x").expect("write");
    make_canary(&outside);
    fs::write(tree.path().join("inside"), "x").expect("write inside");
    let before = snapshot(&outside);
    fs::rename(&parent_path, d.file("builds-moved")).expect("move");
    symlink(&outside, &parent_path).expect("swap in a link");
    drop(tree);
    assert_eq!(snapshot(&outside), before);
    assert!(
        !d.file("builds-moved").join(&name).exists(),
        "the tree was removed"
    );
}

#[test]
fn a_hard_link_to_an_outside_file_is_unlinked_never_truncated() {
    let (d, root, outside, _) = cache_with_outside();
    let precious = outside.join("precious");
    let content = fs::read(&precious).expect("read");
    fs::hard_link(&precious, root.join("environments/web/lib/hl")).expect("hard link");
    fs::hard_link(&precious, root.join("archive-v0/k1/hl")).expect("hard link");
    fs::hard_link(&precious, root.join("hl-at-root")).expect("hard link");
    assert_eq!(fs::metadata(&precious).expect("stat").nlink(), 4);
    // Through the real binary (cachelock's clean).
    let status = d
        .cmd("clean", &["clean", "--cache-dir", &root.to_string_lossy()])
        .status()
        .expect("run clean");
    assert!(status.success(), "{}", d.stderr("clean"));
    assert_eq!(fs::read(&precious).expect("read"), content);
    assert_eq!(fs::metadata(&precious).expect("stat").nlink(), 1);
    // And uv's clean through the library.
    fs::hard_link(&precious, root.join("hl-again")).expect("hard link");
    delete_entries(&root, true, false).expect("clean");
    assert_eq!(fs::read(&precious).expect("read"), content);
    assert_eq!(fs::metadata(&precious).expect("stat").nlink(), 1);
}

#[test]
fn a_fifo_in_the_cache_is_unlinked_not_opened() {
    let (_d, root, _outside, _) = cache_with_outside();
    let fifo = root.join("environments/web/lib/fifo");
    let c = std::ffi::CString::new(fifo.to_string_lossy().as_bytes()).expect("cstring");
    // SAFETY: mkfifo(3) on a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // A lock file that is a FIFO: opened without blocking, found not to be a regular
    // file, and honoured as no lock (its environment is kept).
    let lock = root.join("environments/api.lock");
    let c = std::ffi::CString::new(lock.to_string_lossy().as_bytes()).expect("cstring");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let report = delete_entries(&root, true, true).expect("clean");
    assert!(fs::symlink_metadata(&fifo).is_err(), "the FIFO was removed");
    assert_eq!(report.skipped, ["api"]);
}

#[test]
fn clean_with_a_planted_cleans_link_creates_nothing_outside() {
    let (d, root, outside, before) = cache_with_outside();
    plant(&root, ".cleans", &outside);
    let status = d
        .cmd("clean", &["clean", "--cache-dir", &root.to_string_lossy()])
        .status()
        .expect("run clean");
    assert_eq!(snapshot(&outside), before, "{}", d.stderr("clean"));
    // The announcement cannot be made: the clean refuses (exit 2) rather than follow.
    assert_eq!(status.code(), Some(2), "{}", d.stderr("clean"));
    assert!(
        d.stderr("clean").contains(".cleans"),
        "{}",
        d.stderr("clean")
    );
}
