//! Captured output of supervised services: one JSON-lines file per service
//! under `<data_dir>/logs`, rotated by size, bounded in total, and queried
//! by time and text.
//!
//! Owns the files only; it never publishes or decides what to capture.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use switchboard_proto::supervision::{severity, LogLine, LogQuery, SEVERITIES};

use super::config::LogSettings;
use super::journal::Forwarder;

/// Lines a query returns when it does not say.
pub const DEFAULT_QUERY_LIMIT: usize = 1000;
/// Longest line kept; longer output is cut here (and marked).
pub const MAX_LINE: usize = 16 * 1024;

/// The log files of one service.
pub struct LogBook {
    service: String,
    path: PathBuf,
    file: Option<File>,
    size: u64,
    next_seq: u64,
    settings: LogSettings,
    /// Where lines go besides the files, and whether all of this service's do.
    forwarder: Option<(Arc<Forwarder>, bool)>,
}

impl LogBook {
    /// Opens (or creates) `<dir>/<service>.log`, continuing its numbering.
    pub fn open(dir: &Path, service: &str, settings: LogSettings) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{service}.log"));
        let last_seq = read_lines(&path).last().map_or(0, |l| l.seq);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            service: service.to_owned(),
            path,
            file: Some(file),
            size,
            next_seq: last_seq + 1,
            settings,
            forwarder: None,
        })
    }

    /// A book whose file could not be opened: lines are numbered and
    /// published as usual, and each write tries the file again (and says
    /// why it failed). Never a fallback to a shared temporary directory.
    pub fn unopened(dir: &Path, service: &str, settings: LogSettings) -> Self {
        let path = dir.join(format!("{service}.log"));
        Self {
            service: service.to_owned(),
            path,
            file: None,
            size: 0,
            next_seq: 1,
            settings,
            forwarder: None,
        }
    }

    /// Sends lines on to the journal or syslog too (see `journal.rs`):
    /// every line when `to_journal`, else the severe ones if configured.
    pub fn forward_with(&mut self, forwarder: Arc<Forwarder>, to_journal: bool) {
        self.forwarder = Some((forwarder, to_journal));
    }

    /// Appends one line at `level` (0 emerg … 7 debug; see `SEVERITIES`) and
    /// with an event's `id` (or empty); returns it as stored.
    pub fn append(&mut self, instance: u32, stream: &str, text: &str, level: u8, id: &str) -> LogLine {
        let mut line = text.trim_end_matches(['\n', '\r']).to_owned();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …[cut]");
        }
        let entry = LogLine {
            seq: self.next_seq,
            ts_ms: now_ms(),
            service: self.service.clone(),
            instance,
            stream: stream.to_owned(),
            line,
            level: SEVERITIES[usize::from(level.min(7))].to_owned(),
            id: id.to_owned(),
        };
        self.next_seq += 1;
        if let Err(err) = self.write(&entry) {
            tracing::warn!(service = %self.service, "cannot write log {}: {err}", self.path.display());
        }
        if let Some((forwarder, to_journal)) = &self.forwarder {
            forwarder.send(&entry, *to_journal, None);
        }
        entry
    }

    fn write(&mut self, entry: &LogLine) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
        bytes.push(b'\n');
        if self.size + bytes.len() as u64 > self.settings.max_file_bytes && self.size > 0 {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(OpenOptions::new().create(true).append(true).open(&self.path)?),
        };
        file.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// `x.log` → `x.log.1` → … → `x.log.N`; the oldest beyond N is deleted.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let keep = self.settings.keep_files;
        if keep == 0 {
            fs::remove_file(&self.path)?;
        } else {
            let _ = fs::remove_file(rotated(&self.path, keep));
            for n in (1..keep).rev() {
                let _ = fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
            }
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.size = 0;
        Ok(())
    }

    /// Lines matching `query`, oldest first, at most its limit (the newest).
    pub fn query(&self, query: &LogQuery) -> Vec<LogLine> {
        let limit = if query.limit == 0 { DEFAULT_QUERY_LIMIT } else { query.limit as usize };
        let at_least = severity(&query.level).unwrap_or(7);
        let severe_enough = |line: &LogLine| severity(&line.level).unwrap_or(6) <= at_least;
        let mut files: Vec<PathBuf> =
            (1..=self.settings.keep_files).rev().map(|n| rotated(&self.path, n)).collect();
        files.push(self.path.clone());
        let mut matched: std::collections::VecDeque<LogLine> = Default::default();
        for file in files {
            for line in read_lines(&file) {
                if line.ts_ms >= query.since_ms
                    && (query.grep.is_empty() || line.line.contains(&query.grep))
                    && severe_enough(&line)
                {
                    if matched.len() == limit {
                        matched.pop_front();
                    }
                    matched.push_back(line);
                }
            }
        }
        matched.into()
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Every readable line of a file; a torn last line (a crash mid-write) is skipped.
fn read_lines(path: &Path) -> Vec<LogLine> {
    let Ok(file) = File::open(path) else { return Vec::new() };
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(dir: &Path, max_file_bytes: u64) -> LogBook {
        LogBook::open(dir, "svc", LogSettings { max_file_bytes, keep_files: 2, ..LogSettings::default() })
            .unwrap()
    }

    #[test]
    fn lines_are_numbered_and_numbering_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = book(dir.path(), 1 << 20);
        assert_eq!(log.append(1, "stdout", "one\n", 6, "").seq, 1);
        assert_eq!(log.append(2, "stderr", "two", 6, "").seq, 2);
        drop(log);
        let mut log = book(dir.path(), 1 << 20);
        assert_eq!(log.append(1, "stdout", "three", 6, "").seq, 3);
        let all = log.query(&LogQuery::default());
        let text: Vec<_> = all.iter().map(|l| (l.instance, l.stream.as_str(), l.line.as_str())).collect();
        assert_eq!(text, [(1, "stdout", "one"), (2, "stderr", "two"), (1, "stdout", "three")]);
    }

    #[test]
    fn rotation_bounds_the_files_and_queries_span_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = book(dir.path(), 4096);
        for i in 0..1000 {
            log.append(1, "stdout", &format!("line {i:04} {}", "x".repeat(40)), 6, "");
        }
        let total: u64 =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(total <= 3 * 4096, "{total} bytes kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
        let kept = log.query(&LogQuery::default());
        assert!(kept.len() > 50);
        assert!(kept.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "contiguous, oldest first");
        assert_eq!(kept.last().unwrap().seq, 1000);
    }

    #[test]
    fn queries_filter_by_text_time_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = book(dir.path(), 1 << 20);
        for i in 0..10 {
            log.append(
                1,
                "stdout",
                &format!("{} {i}", if i % 2 == 0 { "even" } else { "odd" }),
                if i % 2 == 0 { 4 } else { 6 },
                "",
            );
        }
        let even = log.query(&LogQuery { grep: "even".into(), ..Default::default() });
        assert_eq!(even.len(), 5);
        let last_two = log.query(&LogQuery { grep: "odd".into(), limit: 2, ..Default::default() });
        assert_eq!(last_two.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["odd 7", "odd 9"]);
        let warnings = log.query(&LogQuery { level: "warn".into(), ..Default::default() });
        assert_eq!(warnings.len(), 5, "the even lines are warnings");
        assert!(warnings.iter().all(|l| l.level == "warning" && l.line.starts_with("even")));
        let future = LogQuery { since_ms: now_ms() + 60_000, ..Default::default() };
        assert!(log.query(&future).is_empty());
    }

    #[test]
    fn an_overlong_line_is_cut_on_a_character_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = book(dir.path(), 1 << 20);
        let line = log.append(1, "stdout", &"é".repeat(MAX_LINE), 6, "");
        assert!(line.line.len() <= MAX_LINE + 10 && line.line.ends_with("[cut]"));
    }
}
