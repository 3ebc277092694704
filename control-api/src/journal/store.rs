//! The state directory on disk: `snapshot` (the whole configuration at some moment), `journal`
//! (every change accepted since), and `lock` (held while a vrouterd uses the directory).
//!
//! Both files carry a generation in their header. Compaction writes `snapshot.tmp`, fsyncs it,
//! renames it over `snapshot` (generation n+1) and fsyncs the directory, then does the same for
//! an empty `journal` of generation n+1. A journal whose generation is older than the
//! snapshot's is what a crash between those two renames leaves: everything in it is already in
//! the snapshot, so it is ignored (never applied twice) and replaced.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::frame::{self, End, Header, MAGIC_JOURNAL, MAGIC_SNAPSHOT};
use super::record::{self, Record};
use crate::error::Error;
use crate::model::Model;

pub const SNAPSHOT: &str = "snapshot";
pub const JOURNAL: &str = "journal";
const LOCK: &str = "lock";
const TMP_SUFFIX: &str = ".tmp";
/// A journal shorter than this is never compacted: a snapshot of a small configuration would
/// be rewritten every few changes.
pub const COMPACT_MIN_RECORDS: u64 = 4096;

/// A record and where it was read, for messages about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    pub offset: u64,
    pub record: Record,
}

/// What the journal file needs before appends can follow its last good record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JournalFile {
    /// Missing, or older than the snapshot: start an empty one.
    Replace,
    /// Good up to `len` bytes (shorter than the file if its last append was torn).
    Keep { len: u64, records: u64 },
}

/// The checked contents of a state directory, locked for this process. Nothing in it has been
/// applied yet: every file was read and verified first.
#[derive(Debug)]
pub struct Loaded {
    dir: PathBuf,
    lock: DirLock,
    generation: u64,
    snapshot_records: u64,
    journal: JournalFile,
    /// Snapshot records first, then the journal's, in the order to replay them.
    pub records: Vec<Located>,
    /// Where a torn last append was cut off (file and offset), if one was.
    pub torn: Option<(PathBuf, u64)>,
}

impl Loaded {
    /// Opens (creating it, mode 0700, if missing) and locks `dir`, then reads and verifies its
    /// snapshot and journal. A damaged file is an error naming it and the byte offset; a torn
    /// last journal record is dropped with a warning.
    pub fn open(dir: &Path) -> Result<Loaded, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fs_err("create state directory", dir, e))?;
        let lock = lock_dir(dir)?;
        for name in [SNAPSHOT, JOURNAL] {
            let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
            // A compaction that crashed before its rename: never part of the state.
            if tmp.exists() {
                std::fs::remove_file(&tmp).map_err(|e| fs_err("remove", &tmp, e))?;
            }
        }
        let mut records = Vec::new();
        let (generation, snapshot_records) = read_snapshot(dir, &mut records)?;
        let (journal, torn) = read_journal(dir, generation, &mut records)?;
        Ok(Loaded {
            dir: dir.to_path_buf(),
            lock,
            generation,
            snapshot_records,
            journal,
            records,
            torn,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Held while a vrouterd uses the directory (released with the descriptor, also on SIGKILL).
type DirLock = nix::fcntl::Flock<File>;

/// Takes the directory's lock: two vrouterds writing one journal would corrupt it.
fn lock_dir(dir: &Path) -> Result<DirLock, Error> {
    let path = dir.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| fs_err("open", &path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| {
            fs_err(
                "lock (is another vrouterd using this --state-dir?)",
                &path,
                io::Error::from(errno),
            )
        },
    )
}

fn read_snapshot(dir: &Path, out: &mut Vec<Located>) -> Result<(u64, u64), Error> {
    let path = dir.join(SNAPSHOT);
    let Some(buf) = read_if_exists(&path)? else {
        return Ok((0, 0));
    };
    let header = Header::decode(&buf, MAGIC_SNAPSHOT, &path)?;
    let (frames, end) = frame::frames(&buf, &path)?;
    if let End::Torn { offset } = end {
        // Snapshots are renamed into place only once complete: a short one is damage.
        return Err(frame::corrupt(
            &path,
            offset,
            "the snapshot ends inside a record".into(),
        ));
    }
    if frames.len() as u64 != header.records {
        return Err(frame::corrupt(
            &path,
            buf.len() as u64,
            format!(
                "the snapshot holds {} records; its header says {}",
                frames.len(),
                header.records
            ),
        ));
    }
    decode_all(&path, &frames, out)?;
    Ok((header.generation, header.records))
}

fn read_journal(
    dir: &Path,
    generation: u64,
    out: &mut Vec<Located>,
) -> Result<(JournalFile, Option<(PathBuf, u64)>), Error> {
    let path = dir.join(JOURNAL);
    let Some(buf) = read_if_exists(&path)? else {
        return Ok((JournalFile::Replace, None));
    };
    let header = Header::decode(&buf, MAGIC_JOURNAL, &path)?;
    if header.generation < generation {
        info!(
            journal = %path.display(),
            "journal generation {} predates the snapshot's {generation}: already in the snapshot, ignored",
            header.generation
        );
        return Ok((JournalFile::Replace, None));
    }
    if header.generation > generation {
        return Err(frame::corrupt(
            &path,
            12,
            format!(
                "journal generation {} follows a snapshot of generation {generation} that is \
                 missing or older: the changes before it are lost",
                header.generation
            ),
        ));
    }
    let (frames, end) = frame::frames(&buf, &path)?;
    decode_all(&path, &frames, out)?;
    let (len, torn) = match end {
        End::Clean => (buf.len() as u64, None),
        End::Torn { offset } => {
            warn!(
                journal = %path.display(),
                offset,
                "the last journal record, at byte offset {offset}, was cut short (a crash while \
                 it was written, before the change was acknowledged): dropped"
            );
            (offset, Some((path.clone(), offset)))
        }
    };
    Ok((
        JournalFile::Keep {
            len,
            records: frames.len() as u64,
        },
        torn,
    ))
}

fn decode_all(
    path: &Path,
    frames: &[frame::Frame<'_>],
    out: &mut Vec<Located>,
) -> Result<(), Error> {
    for f in frames {
        let record = Record::from_json(f.payload)
            .map_err(|e| frame::corrupt(path, f.offset, format!("undecodable record: {e}")))?;
        out.push(Located {
            file: path.to_path_buf(),
            offset: f.offset,
            record,
        });
    }
    Ok(())
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fs_err("read", path, e)),
    }
}

fn fs_err(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Filesystem {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The writer: appends each accepted change and fsyncs it, and now and then replaces snapshot
/// and journal with a fresh snapshot. Owned by the controller, used under its change lock.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    _lock: DirLock,
    file: File,
    generation: u64,
    /// Bytes of good records in `file`.
    len: u64,
    records: u64,
    snapshot_records: u64,
    /// An append or compaction failed: the files may lack a change the model has, so the next
    /// save writes a whole snapshot instead of a record.
    broken: bool,
    fixed: BTreeSet<String>,
}

impl Journal {
    /// Takes over a loaded directory after its records were replayed: cuts a torn tail off the
    /// journal, or starts a new journal where it was missing or stale. `fixed` names vifs the
    /// command line adds at every start, whose existence is never journaled.
    pub fn attach(loaded: Loaded, fixed: BTreeSet<String>) -> Result<Journal, Error> {
        let Loaded {
            dir,
            lock,
            generation,
            snapshot_records,
            journal,
            ..
        } = loaded;
        let path = dir.join(JOURNAL);
        let (file, len, records) = match journal {
            JournalFile::Replace => {
                let (file, len) = new_journal(&dir, generation)?;
                (file, len, 0)
            }
            JournalFile::Keep { len, records } => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| fs_err("open", &path, e))?;
                if file.metadata().map(|m| m.len()).ok() != Some(len) {
                    file.set_len(len)
                        .and_then(|()| file.sync_all())
                        .map_err(|e| fs_err("cut the torn record off", &path, e))?;
                }
                (file, len, records)
            }
        };
        Ok(Journal {
            dir,
            _lock: lock,
            file,
            generation,
            len,
            records,
            snapshot_records,
            broken: false,
            fixed,
        })
    }

    /// Whether `record` belongs in the files (the command line's vifs come and go with it).
    pub fn keeps(&self, record: &Record) -> bool {
        record.vif_changed().is_none_or(|v| !self.fixed.contains(v))
    }

    pub fn fixed(&self) -> &BTreeSet<String> {
        &self.fixed
    }

    /// Whether the next save should be a whole snapshot: after a failure, or once the journal
    /// holds as many records as the snapshot (so a change costs O(1) amortised, however large
    /// the configuration).
    pub fn wants_snapshot(&self) -> bool {
        self.broken || self.records >= COMPACT_MIN_RECORDS.max(self.snapshot_records)
    }

    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Appends one record and waits until it is on disk. On failure the journal is cut back to
    /// its last good record where possible, and marked broken.
    pub fn append(&mut self, record: &Record) -> Result<(), Error> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Appends `records` in one write and waits once until they are on disk (a batch of
    /// changes). A crash meanwhile keeps a leading part of them at most, each whole.
    pub fn append_all(&mut self, records: &[Record]) -> Result<(), Error> {
        let path = self.dir.join(JOURNAL);
        let mut bytes = Vec::new();
        for record in records {
            bytes.extend(encode(record)?);
        }
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.broken = true;
            if let Err(cut) = self.file.set_len(self.len) {
                warn!(journal = %path.display(), "could not cut a failed append off: {cut}");
            }
            return Err(fs_err(
                "the change took effect but was not saved (it will be with the next change); writing",
                &path,
                e,
            ));
        }
        self.len += bytes.len() as u64;
        self.records += records.len() as u64;
        Ok(())
    }

    /// Replaces snapshot and journal by a snapshot of `model` (next generation) and an empty
    /// journal. Crash-safe at every step; see the module notes.
    pub fn compact(&mut self, model: &Model) -> Result<(), Error> {
        self.broken = true;
        let generation = self.generation + 1;
        let count = self.write_snapshot(model, generation)?;
        self.generation = generation;
        self.snapshot_records = count;
        let (file, len) = new_journal(&self.dir, generation)?;
        self.file = file;
        self.len = len;
        self.records = 0;
        self.broken = false;
        info!(dir = %self.dir.display(), generation, records = count, "state snapshot written");
        Ok(())
    }

    fn write_snapshot(&self, model: &Model, generation: u64) -> Result<u64, Error> {
        let path = self.dir.join(SNAPSHOT);
        let tmp = self.dir.join(format!("{SNAPSHOT}{TMP_SUFFIX}"));
        let err = |e: io::Error| fs_err("write snapshot", &tmp, e);
        let file = create_private(&tmp).map_err(err)?;
        let mut w = io::BufWriter::new(file);
        let mut header = Header {
            magic: MAGIC_SNAPSHOT,
            generation,
            records: 0,
        };
        w.write_all(&header.encode()).map_err(err)?;
        for record in record::snapshot(model, &self.fixed) {
            w.write_all(&encode(&record)?).map_err(err)?;
            header.records += 1;
        }
        let mut file = w.into_inner().map_err(|e| err(e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header.encode()))
            .and_then(|()| file.sync_all())
            .map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(|e| fs_err("rename into place", &tmp, e))?;
        sync_dir(&self.dir)?;
        Ok(header.records)
    }
}

/// One record, framed; never one a reader would refuse as too long.
fn encode(record: &Record) -> Result<Vec<u8>, Error> {
    let payload = serde_json::to_vec(record)
        .map_err(|e| Error::Internal(format!("encoding a state record: {e}")))?;
    if payload.len() > frame::PAYLOAD_MAX {
        return Err(Error::Internal(format!(
            "a state record of {} bytes is over the {}-byte limit",
            payload.len(),
            frame::PAYLOAD_MAX
        )));
    }
    Ok(frame::encode_frame(&payload))
}

/// Writes an empty journal of `generation` into place (temporary file, fsync, rename, fsync
/// the directory) and opens it for appending.
fn new_journal(dir: &Path, generation: u64) -> Result<(File, u64), Error> {
    let path = dir.join(JOURNAL);
    let tmp = dir.join(format!("{JOURNAL}{TMP_SUFFIX}"));
    let header = Header {
        magic: MAGIC_JOURNAL,
        generation,
        records: 0,
    }
    .encode();
    create_private(&tmp)
        .and_then(|mut f| f.write_all(&header).and_then(|()| f.sync_all()))
        .map_err(|e| fs_err("write journal", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fs_err("rename into place", &tmp, e))?;
    sync_dir(dir)?;
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| fs_err("open", &path, e))?;
    Ok((file, header.len() as u64))
}

fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fs_err("sync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IpPrefix, Nexthop, Route};
    use crate::dataplane::TableChange;

    fn route(prefix: &str, nexthop: u32) -> Route {
        Route {
            prefix: prefix.parse::<IpPrefix>().unwrap(),
            nexthop,
            label: None,
        }
    }

    /// VRF 1, a discard nexthop, and `n` routes to it.
    fn changes(n: u32) -> Vec<Record> {
        let mut out = vec![
            Record::Table(TableChange::VrfAdd { vrf: 1 }),
            Record::Table(TableChange::NexthopSet {
                id: 1,
                nexthop: Nexthop::Discard,
            }),
        ];
        out.extend((0..n).map(|i| {
            Record::Table(TableChange::RouteSet {
                vrf: 1,
                route: route(&format!("10.0.{}.0/24", i), 1),
            })
        }));
        out
    }

    /// Applies what these tests record to a bare model.
    fn apply(model: &mut Model, r: &Record) {
        match r {
            Record::Table(change) => model.commit_table(change),
            other => panic!("not used here: {other:?}"),
        }
    }

    fn records(loaded: &Loaded) -> Vec<Record> {
        loaded.records.iter().map(|l| l.record.clone()).collect()
    }

    /// What a model holds, comparably.
    fn contents(model: &Model) -> Vec<Record> {
        record::snapshot(model, &BTreeSet::new()).collect()
    }

    fn journal_with(dir: &Path, rs: &[Record]) -> Journal {
        let mut j = Journal::attach(Loaded::open(dir).unwrap(), BTreeSet::new()).unwrap();
        for r in rs {
            j.append(r).unwrap();
        }
        j
    }

    #[test]
    fn records_round_trip_in_order_with_offsets() {
        let d = tempfile::tempdir().unwrap();
        let fresh = Loaded::open(d.path()).unwrap();
        assert!(fresh.records.is_empty() && fresh.torn.is_none());
        drop(fresh);
        let rs = changes(3);
        drop(journal_with(d.path(), &rs));
        let back = Loaded::open(d.path()).unwrap();
        assert_eq!(records(&back), rs);
        assert_eq!(back.records[0].offset, frame::HEADER_LEN as u64);
        assert!(back.records.windows(2).all(|w| w[0].offset < w[1].offset));
        assert_eq!(back.records[0].file, d.path().join(JOURNAL));
    }

    #[test]
    fn the_directory_is_locked_while_in_use() {
        let d = tempfile::tempdir().unwrap();
        let first = Loaded::open(d.path()).unwrap();
        let e = Loaded::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("another vrouterd"), "{e}");
        drop(first);
        Loaded::open(d.path()).unwrap();
    }

    #[test]
    fn a_torn_last_record_is_dropped_cut_off_and_appending_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let rs = changes(3);
        drop(journal_with(d.path(), &rs));
        let path = d.path().join(JOURNAL);
        let full = std::fs::metadata(&path).unwrap().len();
        let last = Loaded::open(d.path()).unwrap().records[4].offset;
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap();
        drop(f);

        let loaded = Loaded::open(d.path()).unwrap();
        assert_eq!(records(&loaded), rs[..4]);
        assert_eq!(loaded.torn, Some((path.clone(), last)));
        let mut j = Journal::attach(loaded, BTreeSet::new()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last);
        let extra = Record::Table(TableChange::RouteDel {
            vrf: 1,
            prefix: "10.0.0.0/24".parse().unwrap(),
        });
        j.append(&extra).unwrap();
        drop(j);
        let again = Loaded::open(d.path()).unwrap();
        assert_eq!(again.torn, None);
        let mut want = rs[..4].to_vec();
        want.push(extra);
        assert_eq!(records(&again), want);
    }

    #[test]
    fn a_flipped_byte_mid_journal_is_an_error_naming_file_and_offset() {
        let d = tempfile::tempdir().unwrap();
        drop(journal_with(d.path(), &changes(3)));
        let path = d.path().join(JOURNAL);
        let second = Loaded::open(d.path()).unwrap().records[1].offset;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second as usize + frame::FRAME_HEADER_LEN + 3] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = Loaded::open(d.path()).unwrap_err();
        assert!(matches!(e, Error::StateCorrupt { offset, .. } if offset == second));
        let msg = e.to_string();
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(&format!("offset {second}")),
            "{msg}"
        );
        // The file is left as it was, for whoever investigates.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_well_framed_record_that_does_not_decode_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        drop(journal_with(d.path(), &changes(0)));
        let path = d.path().join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        let at = f.metadata().unwrap().len();
        f.write_all(&frame::encode_frame(br#"{"op":"teleport","vrf":1}"#))
            .unwrap();
        drop(f);
        let e = Loaded::open(d.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("offset {at}")) && e.contains("undecodable"),
            "{e}"
        );
    }

    #[test]
    fn compaction_keeps_the_same_state_and_a_corrupt_snapshot_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let rs = changes(50);
        let mut model = Model::new();
        let mut j = journal_with(d.path(), &rs);
        rs.iter().for_each(|r| apply(&mut model, r));
        j.compact(&model).unwrap();
        let tail = Record::Table(TableChange::RouteDel {
            vrf: 1,
            prefix: "10.0.7.0/24".parse().unwrap(),
        });
        j.append(&tail).unwrap();
        apply(&mut model, &tail);
        drop(j);

        let loaded = Loaded::open(d.path()).unwrap();
        assert_eq!(
            loaded.records.len(),
            53,
            "52 in the snapshot, 1 in the journal"
        );
        let mut rebuilt = Model::new();
        loaded
            .records
            .iter()
            .for_each(|l| apply(&mut rebuilt, &l.record));
        assert_eq!(contents(&rebuilt), contents(&model));
        drop(loaded);

        let path = d.path().join(SNAPSHOT);
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let at = good.len() / 2;
        bad[at] ^= 0x20;
        std::fs::write(&path, &bad).unwrap();
        let e = Loaded::open(d.path()).unwrap_err();
        let Error::StateCorrupt {
            path: p, offset, ..
        } = &e
        else {
            panic!("{e}");
        };
        assert_eq!(p, &path);
        assert!(*offset <= at as u64 && at as u64 - offset < 64, "{e}");
        // Cut short (never renamed into place that way): damage too, not a torn tail.
        std::fs::write(&path, &good[..good.len() - 3]).unwrap();
        let e = Loaded::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("snapshot ends inside a record"), "{e}");
    }

    #[test]
    fn a_crash_between_snapshot_and_journal_renames_applies_nothing_twice() {
        let d = tempfile::tempdir().unwrap();
        let rs = changes(5);
        let mut model = Model::new();
        let j = journal_with(d.path(), &rs);
        rs.iter().for_each(|r| apply(&mut model, r));
        // Compaction's first half only: the snapshot is in place, the journal is the old one.
        j.write_snapshot(&model, 1).unwrap();
        drop(j);
        let loaded = Loaded::open(d.path()).unwrap();
        assert_eq!(records(&loaded), contents(&model), "the snapshot alone");
        // The stale journal is replaced when attached; later appends count.
        let mut j = Journal::attach(loaded, BTreeSet::new()).unwrap();
        let tail = Record::Table(TableChange::VrfAdd { vrf: 2 });
        j.append(&tail).unwrap();
        drop(j);
        let mut want = contents(&model);
        want.push(tail);
        assert_eq!(records(&Loaded::open(d.path()).unwrap()), want);
    }

    #[test]
    fn a_crash_before_the_snapshot_rename_leaves_the_journal_in_charge() {
        let d = tempfile::tempdir().unwrap();
        let rs = changes(5);
        drop(journal_with(d.path(), &rs));
        let tmp = d.path().join(format!("{SNAPSHOT}{TMP_SUFFIX}"));
        std::fs::write(&tmp, b"half a snapshot").unwrap();
        let loaded = Loaded::open(d.path()).unwrap();
        assert_eq!(records(&loaded), rs);
        assert!(!tmp.exists(), "the unfinished snapshot is removed");
    }

    #[test]
    fn a_journal_newer_than_its_snapshot_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let mut j = journal_with(d.path(), &changes(1));
        j.compact(&Model::new()).unwrap();
        drop(j);
        std::fs::remove_file(d.path().join(SNAPSHOT)).unwrap();
        let e = Loaded::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("journal generation 1"), "{e}");
    }

    #[test]
    fn the_journal_asks_for_a_snapshot_once_it_outgrows_the_last_one() {
        let d = tempfile::tempdir().unwrap();
        let mut j = journal_with(d.path(), &[]);
        j.records = COMPACT_MIN_RECORDS - 1;
        assert!(!j.wants_snapshot());
        j.records = COMPACT_MIN_RECORDS;
        assert!(j.wants_snapshot());
        j.snapshot_records = 3 * COMPACT_MIN_RECORDS;
        assert!(
            !j.wants_snapshot(),
            "a large snapshot is amortised over as many changes"
        );
        j.mark_broken();
        assert!(j.wants_snapshot());
    }
}
