//! The command's [`Observer`]: prints lock waits and a clean's results on stderr, and
//! names the holders of a busy lock from `/proc` (through `procinfo`, the one reader).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cachelock::Mode;
use cachelock::lockfile::Observer;

use crate::procinfo;

/// Prints to stderr; shows the time waited on a terminal.
#[derive(Debug, Default)]
pub struct Printer {
    ticked: AtomicBool,
}

impl Observer for Printer {
    fn busy(&self, path: &Path, _mode: Mode, why: &dyn Fn(&[u32]) -> String) {
        let pids: Vec<u32> = procinfo::holders_of(path)
            .into_iter()
            .map(|h| h.pid)
            .collect();
        eprintln!("{}", why(&pids));
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
        procinfo::describe_holders(path)
    }

    fn notice(&self, text: &str) {
        eprintln!("{text}");
    }
}
