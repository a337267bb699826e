//! The command's [`Observer`]: prints lock waits and a clean's results on stderr, and
//! names the holders of a busy lock (through `cachelock_inspect`, the one reader of `/proc`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cachelock::Mode;
use cachelock::cache::LOCK_FILE;
use cachelock::lockfile::Observer;
use cachelock::settings::ResolvedCache;

use crate::messages;

/// Prints to stderr; shows the time waited on a terminal. Before its first line it says
/// which cache the command acts on, and why that one.
#[derive(Debug, Default)]
pub struct Printer {
    cache: Option<ResolvedCache>,
    /// A clean's or prune's printer: its wait for the cache lock and what a prune left
    /// alone come with advice ([`messages`]).
    clean: bool,
    introduced: AtomicBool,
    ticked: AtomicBool,
}

impl Printer {
    /// A printer for a command on `cache` (`None`: a private temporary cache).
    pub fn new(cache: Option<ResolvedCache>) -> Printer {
        Printer {
            cache,
            ..Printer::default()
        }
    }

    /// The printer of a clean or prune (`clean` true).
    pub fn clean(self, clean: bool) -> Printer {
        Printer { clean, ..self }
    }

    fn introduce(&self) {
        if let Some(cache) = &self.cache
            && !self.introduced.swap(true, Ordering::Relaxed)
        {
            eprintln!("cache: {} (from {})", cache.root.display(), cache.source);
        }
    }
}

impl Observer for Printer {
    fn busy(&self, path: &Path, _mode: Mode, why: &dyn Fn(&[u32]) -> String) {
        self.introduce();
        let pids: Vec<u32> = cachelock_inspect::locks::holders_of(path)
            .into_iter()
            .map(|h| h.pid)
            .collect();
        // The cache's own lock (`<cache>/.lock`): what `--force` would not wait for.
        let advice = if self.clean && path.file_name() == Some(LOCK_FILE.as_ref()) {
            messages::CLEAN_WAITS
        } else {
            ""
        };
        eprintln!("{}{advice}", why(&pids));
    }

    fn tick(&self, waited: Duration) {
        if std::io::stderr().is_terminal() {
            self.ticked.store(true, Ordering::Relaxed);
            eprint!("\r  waiting for {}s", waited.as_secs());
            let _ = std::io::stderr().flush();
        }
    }

    fn wait_ended(&self) {
        if self.ticked.swap(false, Ordering::Relaxed) {
            eprintln!();
        }
    }

    fn holders(&self, path: &Path) -> Vec<String> {
        cachelock_inspect::wait::describe_holders(path)
    }

    fn notice(&self, text: &str) {
        self.introduce();
        eprintln!("{text}");
    }

    fn left_alone(&self, names: &[String]) {
        self.notice(&format!(
            "Left alone (not cachelock's layout, which a prune knows): {}{}",
            names.join(", "),
            messages::LEFT_ALONE
        ));
    }
}
