//! `_verify.check`'s per-entry pass over a SQLite ledger, for the common case where nothing
//! is wrong. It reports what the Python side needs to build the same report, or that the
//! ledger is not clean, and then Python runs `check` itself to say exactly what is wrong:
//! this code never diagnoses. It may say "not clean" where `check` would find nothing
//! (a value of an unexpected type, say); it must never pass what `check` would not.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

use sha2::{Digest, Sha256};

use crate::sqlite::{self, Library};

pub type Hash = [u8; 32];
/// origin, size, root_hash, time, key_id, signature: `_checkpoint.Checkpoint`'s fields.
pub type CheckpointRow = (String, i64, String, String, String, String);

/// One snapshot of a clean ledger: what `_verify.finish` needs besides the checkpoint
/// checks, which stay in Python.
#[derive(Debug)]
pub struct Clean {
    pub origin: String,
    pub checkpoints: Vec<CheckpointRow>,
    pub size: i64,
    pub root_hash: String,
    /// The Merkle root at every checkpoint size (and each of `extra_sizes`) up to `size`.
    pub roots: Vec<(i64, String)>,
    /// Entries whose payload is gone; Python checks that a tombstone lists each.
    pub missing: Vec<i64>,
    /// Every tombstone entry with its (digest-checked) payload, for `_note_redactions`.
    pub tombstones: Vec<(i64, String)>,
}

const GENESIS: [u8; 64] = [b'0'; 64];

/// Scan the ledger file at `path` in one read transaction: the checkpoints, then every
/// entry with its payload. `Err` says why the fast path does not apply (not clean, or
/// not readable as expected), for tests and debugging only.
pub fn scan(
    library: &Library,
    path: &str,
    kinds: &[String],
    tombstone: &str,
    extra_sizes: &[i64],
) -> Result<Clean, String> {
    let db = library.open(path)?;
    db.execute(c"BEGIN")?;
    let clean = read(&db, kinds, tombstone, extra_sizes)?;
    db.execute(c"COMMIT")?;
    Ok(clean)
}

fn read(
    db: &sqlite::Connection<'_>,
    kinds: &[String],
    tombstone: &str,
    extra_sizes: &[i64],
) -> Result<Clean, String> {
    // The first read fixes the snapshot every later read in this transaction sees.
    let mut meta = db.prepare(c"SELECT value FROM ledger_meta WHERE key = 'origin'")?;
    let origin = match meta.step()? {
        sqlite::ROW => meta.text(0)?.to_owned(),
        _ => String::new(),
    };
    drop(meta);

    let mut checkpoints = Vec::new();
    let mut stored = db.prepare(
        c"SELECT origin, size, root_hash, time, key_id, signature FROM ledger_checkpoints \
          ORDER BY size, key_id",
    )?;
    while stored.step()? == sqlite::ROW {
        checkpoints.push((
            stored.text(0)?.to_owned(),
            stored.integer(1)?,
            stored.text(2)?.to_owned(),
            stored.text(3)?.to_owned(),
            stored.text(4)?.to_owned(),
            stored.text(5)?.to_owned(),
        ));
    }
    drop(stored);

    let mut stops: Vec<i64> = checkpoints
        .iter()
        .map(|c| c.1)
        .chain(extra_sizes.iter().copied())
        .collect();
    stops.retain(|&size| size >= 0);
    stops.sort_unstable();
    stops.dedup();

    // Two threads, one snapshot: this one steps SQLite and copies each entry's fields
    // into batches; the other checks them in order. Either one stops the other by
    // hanging up its channel.
    let (full, full_batches) = mpsc::sync_channel::<Result<Batch, String>>(4);
    let (empty, empty_batches) = mpsc::channel::<Batch>();
    let checked = thread::scope(|scope| {
        let checker = scope.spawn(|| check(full_batches, empty, kinds, tombstone, &stops));
        read_entries(db, full, empty_batches);
        checker
            .join()
            .unwrap_or_else(|_| Err(String::from("the checking thread panicked")))
    })?;
    Ok(Clean {
        origin,
        checkpoints,
        ..checked
    })
}

/// Entries `start..start + len()` as copied out of SQLite: per entry, `FIELDS` text fields
/// back to back in `bytes` (the payload last, empty when there is none).
struct Batch {
    start: i64,
    bytes: Vec<u8>,
    ends: Vec<usize>,
    has_payload: Vec<bool>,
}

const FIELDS: usize = 8;
const BATCH: usize = 1024;

impl Batch {
    fn len(&self) -> usize {
        self.has_payload.len()
    }

    fn fields(&self, entry: usize) -> [&[u8]; FIELDS] {
        let ends = &self.ends[entry * FIELDS..(entry + 1) * FIELDS];
        let mut at = if entry == 0 {
            0
        } else {
            self.ends[entry * FIELDS - 1]
        };
        std::array::from_fn(|field| {
            let slice = &self.bytes[at..ends[field]];
            at = ends[field];
            slice
        })
    }
}

/// Step through the entries and their payloads (merged by sequence: `_backend.rows_query`'s
/// LEFT JOIN as two ordered scans instead of a lookup per entry) and send them on in
/// batches; an anomaly is sent as the last item. Returns when done or hung up on.
fn read_entries(
    db: &sqlite::Connection<'_>,
    full: mpsc::SyncSender<Result<Batch, String>>,
    empty: mpsc::Receiver<Batch>,
) {
    let outcome = (|| -> Result<(), String> {
        let mut entries = db.prepare(
            c"SELECT sequence, run_uid, time, kind, actor, payload_digest, prev_hash, \
              entry_hash FROM ledger_entries WHERE sequence >= 0 ORDER BY sequence",
        )?;
        let mut payloads =
            db.prepare(c"SELECT sequence, payload FROM ledger_payloads ORDER BY sequence")?;
        let mut payload_at: Option<i64> = None;
        let mut payloads_done = false;
        let mut expected: i64 = 0;
        let mut batch: Option<Batch> = None;
        while entries.step()? == sqlite::ROW {
            let sequence = entries.integer(0)?;
            if sequence != expected {
                return Err(format!("entry {sequence} where {expected} was expected"));
            }
            let current = batch.get_or_insert_with(|| {
                let mut batch = empty.try_recv().unwrap_or_else(|_| Batch {
                    start: 0,
                    bytes: Vec::with_capacity(BATCH * 1024),
                    ends: Vec::with_capacity(BATCH * FIELDS),
                    has_payload: Vec::with_capacity(BATCH),
                });
                batch.start = sequence;
                batch.bytes.clear();
                batch.ends.clear();
                batch.has_payload.clear();
                batch
            });
            for column in 1..FIELDS as i32 {
                current.bytes.extend_from_slice(entries.text_bytes(column)?);
                current.ends.push(current.bytes.len());
            }
            while !payloads_done && payload_at.is_none_or(|at| at < sequence) {
                if payloads.step()? != sqlite::ROW {
                    payloads_done = true;
                    break;
                }
                let at = payloads.integer(0)?;
                if payload_at.is_some_and(|before| at <= before) {
                    return Err(format!("payload {at} is out of order or duplicated"));
                }
                payload_at = Some(at);
            }
            let present =
                !payloads_done && payload_at == Some(sequence) && payloads.kind(1) != sqlite::NULL;
            if present {
                current.bytes.extend_from_slice(payloads.text_bytes(1)?);
            }
            current.ends.push(current.bytes.len());
            current.has_payload.push(present);
            expected += 1;
            if current.len() == BATCH && full.send(Ok(batch.take().expect("a batch"))).is_err() {
                return Ok(()); // the checker stopped: it has its reason
            }
        }
        if let Some(batch) = batch {
            let _ = full.send(Ok(batch));
        }
        Ok(())
    })();
    if let Err(why) = outcome {
        let _ = full.send(Err(why));
    }
}

/// `check`'s per-entry pass over the batches, in order.
fn check(
    batches: mpsc::Receiver<Result<Batch, String>>,
    empty: mpsc::Sender<Batch>,
    kinds: &[String],
    tombstone: &str,
    stops: &[i64],
) -> Result<Clean, String> {
    let kinds: HashSet<&[u8]> = kinds.iter().map(|kind| kind.as_bytes()).collect();
    let mut tree = Tree::default();
    let mut roots = Vec::new();
    let mut next_stop = stops.iter().copied().peekable();
    let mut missing = Vec::new();
    let mut tombstones = Vec::new();
    let mut previous = GENESIS;
    let mut header: Vec<u8> = Vec::with_capacity(512);
    let mut size: i64 = 0;
    let mut take_roots = |size: i64, tree: &Tree, roots: &mut Vec<(i64, String)>| {
        while next_stop.peek() == Some(&size) {
            roots.push((size, hex_string(&tree.root())));
            next_stop.next();
        }
    };
    take_roots(0, &tree, &mut roots);
    for batch in batches {
        let batch = batch?;
        // Valid as a whole and cut at character boundaries: every field is UTF-8.
        let text = std::str::from_utf8(&batch.bytes).map_err(|_| "a field is not UTF-8")?;
        if !batch.ends.iter().all(|&end| text.is_char_boundary(end)) {
            return Err(String::from("a field is not UTF-8"));
        }
        for entry in 0..batch.len() {
            let sequence = batch.start + entry as i64;
            let [run_uid, time, kind, actor, digest, prev_hash, entry_hash, payload] =
                batch.fields(entry);
            // Exactly the bytes `check` hashes: the fields spliced in unescaped.
            header.clear();
            header.extend_from_slice(b"\x00{\"actor\":\"");
            header.extend_from_slice(actor);
            header.extend_from_slice(b"\",\"kind\":\"");
            header.extend_from_slice(kind);
            header.extend_from_slice(b"\",\"payload_digest\":\"");
            header.extend_from_slice(digest);
            header.extend_from_slice(b"\",\"prev_hash\":\"");
            header.extend_from_slice(prev_hash);
            header.extend_from_slice(b"\",\"run_uid\":\"");
            header.extend_from_slice(run_uid);
            header.extend_from_slice(b"\",\"sequence\":");
            push_decimal(&mut header, sequence);
            header.extend_from_slice(b",\"time\":\"");
            header.extend_from_slice(time);
            header.extend_from_slice(b"\",\"v\":1}");
            let leaf: Hash = Sha256::digest(&header).into();
            let leaf_hex = hex(&leaf);
            if entry_hash != leaf_hex {
                return Err(format!(
                    "entry {sequence}: its fields do not hash to its entry_hash"
                ));
            }
            if prev_hash != previous {
                return Err(format!(
                    "entry {sequence}: it does not link to the entry before it"
                ));
            }
            if !kinds.contains(kind) {
                return Err(format!("entry {sequence}: unknown kind"));
            }
            if !batch.has_payload[entry] {
                missing.push(sequence);
            } else if digest != hex(&Sha256::digest(payload).into()) {
                return Err(format!(
                    "entry {sequence}: its payload does not match its digest"
                ));
            } else if kind == tombstone.as_bytes() {
                let payload = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8")?;
                tombstones.push((sequence, payload.to_owned()));
            }
            tree.push(leaf);
            previous = leaf_hex;
            size = sequence + 1;
            take_roots(size, &tree, &mut roots);
        }
        let _ = empty.send(batch); // the reader may be done already
    }
    Ok(Clean {
        origin: String::new(),
        checkpoints: Vec::new(),
        size,
        root_hash: hex_string(&tree.root()),
        roots,
        missing,
        tombstones,
    })
}

/// The RFC 6962 Merkle frontier (`_merkle.Frontier`): one subtree root per set bit of the
/// size, largest first.
#[derive(Default)]
pub struct Tree {
    size: u64,
    roots: Vec<Hash>,
}

impl Tree {
    pub fn push(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut carry = self.size;
        while carry & 1 == 1 {
            let left = self.roots.pop().expect("a root per set bit");
            node = node_hash(&left, &node);
            carry >>= 1;
        }
        self.roots.push(node);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        match self.roots.split_last() {
            None => Sha256::digest(b"").into(),
            Some((last, rest)) => rest
                .iter()
                .rev()
                .fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

fn hex(hash: &Hash) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, byte) in hash.iter().enumerate() {
        out[2 * i] = DIGITS[(byte >> 4) as usize];
        out[2 * i + 1] = DIGITS[(byte & 15) as usize];
    }
    out
}

pub fn hex_string(hash: &Hash) -> String {
    hex(hash).iter().map(|&b| b as char).collect()
}

fn push_decimal(out: &mut Vec<u8>, value: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = value.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    use super::*;

    fn leaf(i: u64) -> Hash {
        Sha256::digest(i.to_be_bytes()).into()
    }

    /// RFC 6962 section 2.1's MTH, by its recursive definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest(b"").into(),
            1 => leaves[0],
            n => {
                let k = 1 << (usize::BITS - (n - 1).leading_zeros() - 1);
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_frontier_gives_the_rfc_6962_root_at_every_size() {
        let leaves: Vec<Hash> = (0..70).map(leaf).collect();
        let mut tree = Tree::default();
        for size in 0..=leaves.len() {
            assert_eq!(tree.root(), mth(&leaves[..size]), "size {size}");
            if size < leaves.len() {
                tree.push(leaves[size]);
            }
        }
    }

    #[test]
    fn decimals_are_plain() {
        for value in [0, 7, 10, 1_000_000, i64::MAX, -1, i64::MIN] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    const KINDS: [&str; 2] = ["tool.call", "tombstone"];

    /// A ledger of `n` entries written the way the Python side writes them (one payload
    /// redacted by a tombstone at the end), then `tamper` run on it.
    fn ledger(dir: &std::path::Path, n: i64, tamper: &str) -> String {
        let path = dir.join(format!("ledger-{n}-{}.db", tamper.len()));
        let _ = std::fs::remove_file(&path);
        let library = Library::bind(Some("libsqlite3.so.0"), true).expect("system SQLite");
        let url = path.to_str().unwrap().to_owned();
        std::fs::File::create(&path).unwrap();
        let db = library.open(&url).unwrap();
        let run = |sql: String| db.execute(&CString::new(sql).unwrap()).unwrap();
        run(
            "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL); \
             CREATE TABLE ledger_entries (sequence INTEGER PRIMARY KEY, run_uid TEXT, \
             time TEXT, kind TEXT, actor TEXT, payload_digest TEXT, prev_hash TEXT, \
             entry_hash TEXT); \
             CREATE TABLE ledger_payloads (sequence INTEGER PRIMARY KEY, payload TEXT); \
             CREATE TABLE ledger_checkpoints (size INTEGER, origin TEXT, root_hash TEXT, \
             time TEXT, key_id TEXT, signature TEXT, frontier TEXT); \
             INSERT INTO ledger_meta VALUES ('origin', 'urn:test'); BEGIN"
                .into(),
        );
        let mut previous = String::from_utf8(GENESIS.to_vec()).unwrap();
        for i in 0..n {
            let (kind, payload) = if i == n - 1 {
                ("tombstone", String::from("{\"redacted\":[3]}"))
            } else {
                ("tool.call", format!("{{\"i\":{i}}}"))
            };
            let digest = hex_string(&Sha256::digest(payload.as_bytes()).into());
            let header = format!(
                "\x00{{\"actor\":\"gw\",\"kind\":\"{kind}\",\"payload_digest\":\"{digest}\",\
                 \"prev_hash\":\"{previous}\",\"run_uid\":\"run-{r}\",\"sequence\":{i},\
                 \"time\":\"t\",\"v\":1}}",
                r = i % 3
            );
            let hash = hex_string(&Sha256::digest(header.as_bytes()).into());
            run(format!(
                "INSERT INTO ledger_entries VALUES ({i}, 'run-{}', 't', '{kind}', 'gw', \
                 '{digest}', '{previous}', '{hash}'); \
                 INSERT INTO ledger_payloads VALUES ({i}, '{payload}')",
                i % 3
            ));
            previous = hash;
        }
        run(format!(
            "DELETE FROM ledger_payloads WHERE sequence = 3; COMMIT; {tamper}"
        ));
        url
    }

    fn scan_of(path: &str, extra: &[i64]) -> Result<Clean, String> {
        let library = Library::bind(Some("libsqlite3.so.0"), true).unwrap();
        let kinds: Vec<String> = KINDS.iter().map(|k| k.to_string()).collect();
        scan(&library, path, &kinds, "tombstone", extra)
    }

    #[test]
    fn a_clean_ledger_across_batches_gives_its_roots() {
        let dir = std::env::temp_dir().join(format!("co-native-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 2 * BATCH as i64 + 5;
        let clean = scan_of(&ledger(&dir, n, ""), &[0, 1, 1025, n, n + 1]).unwrap();
        assert_eq!((clean.origin.as_str(), clean.size), ("urn:test", n));
        assert_eq!(clean.missing, vec![3]);
        assert_eq!(
            clean.tombstones,
            vec![(n - 1, String::from("{\"redacted\":[3]}"))]
        );
        let sizes: Vec<i64> = clean.roots.iter().map(|(size, _)| *size).collect();
        assert_eq!(sizes, vec![0, 1, 1025, n]);
        assert_eq!(clean.roots[3].1, clean.root_hash);
        assert_eq!(clean.roots[0].1, hex_string(&Sha256::digest(b"").into()));

        for (tamper, why) in [
            (
                "UPDATE ledger_entries SET actor = 'root' WHERE sequence = 1500",
                "1500: its fields",
            ),
            (
                "UPDATE ledger_payloads SET payload = '{}' WHERE sequence = 1024",
                "1024: its payload",
            ),
            (
                "DELETE FROM ledger_entries WHERE sequence = 1023",
                "entry 1024 where 1023",
            ),
            (
                "UPDATE ledger_entries SET actor = x'6777' WHERE sequence = 9",
                "is not text",
            ),
            (
                "UPDATE ledger_payloads SET payload = CAST(x'ff' AS TEXT) WHERE sequence = 9",
                "not UTF-8",
            ),
        ] {
            let error = scan_of(&ledger(&dir, n, tamper), &[]).unwrap_err();
            assert!(error.contains(why), "{tamper}: {error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
