//! Log output: lines to stderr, text or JSON. Worker threads gather their lines
//! and write them together, once per turn of their event loop, instead of one
//! write(2) per line: at tens of thousands of access-log lines a second the
//! per-line syscall was the log's main cost on the proxy's core.

use std::cell::RefCell;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, LogFormat};

/// A worker writes out what it gathered once this much is waiting...
const FLUSH_AT: usize = 16 * 1024;
/// ...or the oldest line waiting is this old (see also [`flush`]).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

pub fn init(cli: &Cli) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(cli.log_level.as_str())?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Lines a worker thread gathered and has not written yet; `None` on threads that
/// write each line as it comes (the main thread, resolver threads).
struct Batch(Option<(Vec<u8>, Instant)>);

impl Drop for Batch {
    // A worker that ends (or unwinds) writes what it still holds.
    fn drop(&mut self) {
        if let Some((lines, _)) = &mut self.0 {
            write_out(lines);
        }
    }
}

thread_local! {
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch(None)) };
}

/// Makes this thread gather its lines; they go out on [`flush`], when
/// [`FLUSH_AT`] bytes wait, or on a line written [`FLUSH_EVERY`] after the oldest.
pub fn batch_this_thread() {
    BATCH.with_borrow_mut(|b| b.0 = Some((Vec::with_capacity(FLUSH_AT), Instant::now())));
}

/// Writes out this thread's gathered lines. Workers call it just before their
/// event loop sleeps, and every [`FLUSH_EVERY`] from a timer for a loop that
/// never sleeps, so no line waits longer than that.
pub fn flush() {
    // try_: a line logged while the batch is being written goes out with the next.
    let _ = BATCH.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            if let Some((lines, _)) = &mut b.0 {
                write_out(lines);
            }
        }
    });
}

fn write_out(lines: &mut Vec<u8>) {
    if !lines.is_empty() {
        // Nowhere to report a failed log write; the lines are dropped.
        let _ = io::stderr().write_all(lines);
        lines.clear();
    }
}

/// The subscriber's writer: one `Line` per event, holding its formatted text.
struct Stderr;

impl MakeWriter<'_> for Stderr {
    type Writer = Line;

    fn make_writer(&self) -> Line {
        Line
    }
}

struct Line;

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let gathered = BATCH
            .try_with(|b| {
                let Ok(mut b) = b.try_borrow_mut() else {
                    return false;
                };
                let Some((lines, oldest)) = &mut b.0 else {
                    return false;
                };
                if lines.is_empty() {
                    *oldest = Instant::now();
                }
                lines.extend_from_slice(data);
                if lines.len() >= FLUSH_AT || oldest.elapsed() >= FLUSH_EVERY {
                    write_out(lines);
                }
                true
            })
            .unwrap_or(false);
        match gathered {
            true => Ok(data.len()),
            false => io::stderr().write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
