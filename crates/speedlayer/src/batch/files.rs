//! `batch-export`'s I/O: reading event files line by line with a progress bar, feeding
//! the pure [`Aggregator`], and writing the rows atomically. Kept apart from the
//! arithmetic so that stays testable without files.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::aggregate::{Aggregator, Fed, Skip, Stats};

/// Warnings about single lines shown before the rest are only counted: enough to find a
/// systematic problem, few enough not to bury the summary.
const MAX_WARNINGS: u64 = 10;

/// A progress bar of bytes on stderr: a bar when the total is known, a spinner when not
/// (standard input). Hidden by indicatif when stderr is not a terminal.
pub fn byte_progress(total: Option<u64>, verb: &str) -> ProgressBar {
    match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(&format!(
                "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => {
            let bar = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {verb} {{bytes}} {{bytes_per_sec}} {{msg}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        }
    }
}

/// Whether `path` names standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// What an export did, printed on stderr at the end.
#[derive(Debug)]
pub struct Summary {
    /// The tallies of the lines read.
    pub stats: Stats,
    /// Rows written.
    pub rows: u64,
    /// Where they went.
    pub out: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "batch-export: {} event(s) read, {} counted, {} duplicate(s) (ids already counted on their row)",
            s.read, s.counted, s.duplicates
        )?;
        writeln!(
            f,
            "  skipped {}: {} at/after the boundary, {} without ts, {} unmatched ({} left out by the filter, {} missing or invalid fields), {} malformed",
            s.skipped(),
            s.after_boundary,
            s.no_ts,
            s.filtered + s.unmappable,
            s.filtered,
            s.unmappable,
            s.malformed
        )?;
        write!(f, "  {} row(s) written to {}", self.rows, self.out)
    }
}

/// Reads every event file in order into `aggregator`, then writes its rows to `out`
/// (standard output when `None`).
pub fn export(
    mut aggregator: Aggregator,
    inputs: &[PathBuf],
    out: Option<&Path>,
) -> anyhow::Result<Summary> {
    if inputs.iter().filter(|p| is_stdin(p)).count() > 1 {
        anyhow::bail!("standard input ('-') can be read only once");
    }
    // Create the output first: a bad --out fails before a long read, not after.
    let mut sink = match out {
        Some(path) => Sink::File(Output::create(path)?),
        None => Sink::Stdout,
    };
    let total = inputs.iter().try_fold(0u64, |sum, path| {
        if is_stdin(path) {
            return None;
        }
        let meta = std::fs::metadata(path).ok()?;
        meta.is_file().then(|| sum + meta.len())
    });
    let progress = byte_progress(total, "reading events");
    let mut warnings = 0u64;
    for path in inputs {
        let name = path.display().to_string();
        let reader: Box<dyn Read> = if is_stdin(path) {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(File::open(path).with_context(|| format!("cannot open {name}"))?)
        };
        let mut reader = BufReader::with_capacity(1 << 18, progress.wrap_read(reader));
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading {name}"))?;
            if n == 0 {
                break;
            }
            number += 1;
            if number.is_multiple_of(4096) {
                progress.set_message(format!("{} row(s)", aggregator.row_count()));
            }
            let fed = aggregator
                .feed(&line)
                .with_context(|| format!("{name}:{number}"))?;
            if let Fed::Skipped(Skip::Malformed | Skip::Unmappable, reason) = fed {
                warnings += 1;
                if warnings <= MAX_WARNINGS {
                    progress.suspend(|| eprintln!("warning: {name}:{number}: skipped: {reason}"));
                } else if warnings == MAX_WARNINGS + 1 {
                    progress
                        .suspend(|| eprintln!("warning: further skipped lines are only counted"));
                }
            }
        }
    }
    progress.finish_and_clear();
    let stats = aggregator.stats();
    let (rows, out) = match &mut sink {
        Sink::Stdout => {
            let mut writer = BufWriter::new(std::io::stdout().lock());
            let rows = write_rows(aggregator, &mut writer)
                .context("writing the rows to standard output")?;
            (rows, "standard output".to_string())
        }
        Sink::File(output) => {
            let path = output.path.display().to_string();
            let writer = output
                .writer
                .as_mut()
                .with_context(|| format!("{path} is already closed"))?;
            let rows = write_rows(aggregator, writer).with_context(|| format!("writing {path}"))?;
            (rows, path)
        }
    };
    if let Sink::File(output) = sink {
        output.finish()?;
    }
    Ok(Summary { stats, rows, out })
}

/// Writes the rows as NDJSON; returns how many.
fn write_rows(aggregator: Aggregator, writer: &mut impl Write) -> anyhow::Result<u64> {
    let mut rows = 0u64;
    for row in aggregator.into_rows() {
        serde_json::to_writer(&mut *writer, &row)?;
        writer.write_all(b"\n")?;
        rows += 1;
    }
    writer.flush()?;
    Ok(rows)
}

/// Where the rows go.
enum Sink {
    Stdout,
    File(Output),
}

/// An output file written under a temporary name beside it and renamed when complete,
/// so an interrupted export never leaves a partial batch that could be imported. Created
/// like any file (the umask applies); removed again if the export fails.
struct Output {
    path: PathBuf,
    partial: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl Output {
    fn create(path: &Path) -> anyhow::Result<Output> {
        let name = path
            .file_name()
            .with_context(|| format!("--out {} does not name a file", path.display()))?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(format!(".partial-{}", std::process::id()));
        let partial = path.with_file_name(partial_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(Output {
            path: path.to_path_buf(),
            partial,
            writer: Some(BufWriter::new(file)),
        })
    }

    /// Flushes, syncs and renames the file to its final name.
    fn finish(mut self) -> anyhow::Result<()> {
        let name = self.path.display().to_string();
        if let Some(writer) = self.writer.take() {
            let file = writer
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {name}"))?;
            file.sync_all().with_context(|| format!("syncing {name}"))?;
        }
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("cannot rename the finished output to {name}"))?;
        self.partial.clear();
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.partial.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
