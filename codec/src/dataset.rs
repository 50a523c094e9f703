//! Dataset files: NDJSON or Avro OCF, plain, gzip or zstd — chosen by file extension.
//!
//! `x.ndjson`, `x.jsonl`, `x.json` (one envelope per line), each optionally `.gz` or `.zst`;
//! `x.avro` is an Avro object container file with the schema in `schemas/pitgun-envelope/v1.avsc`
//! (its blocks may be deflate- or zstd-compressed by the writer). Records are handed over as
//! they are stored — a JSON line or an Avro datum — so replay feeds each to the engine's decoder
//! for its format, as the processor does with Kafka records.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Range;
use std::path::Path;

use apache_avro::{Codec, Schema, Writer as AvroWriter};
use pitgun_contracts::envelope::Envelope;

use crate::avro::container::ContainerReader;
use crate::avro::{datum_len, envelope_schema, read_envelope};
use crate::json::DecodeError;
use crate::Record;

/// A dataset that cannot be read or written: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DatasetError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl DatasetError {
    fn new(path: &Path, message: impl std::fmt::Display) -> DatasetError {
        DatasetError { path: path.display().to_string(), message: message.to_string() }
    }
}

/// How a dataset file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Newline-delimited JSON.
    Ndjson(Compression),
    /// Avro object container file.
    Avro,
}

/// Stream compression of an NDJSON file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Format {
    /// From a file name.
    pub fn of(path: &Path) -> Result<Format, DatasetError> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (stem, compression) = if let Some(s) = name.strip_suffix(".gz") {
            (s, Compression::Gzip)
        } else if let Some(s) = name.strip_suffix(".zst") {
            (s, Compression::Zstd)
        } else {
            (name, Compression::None)
        };
        if stem.ends_with(".avro") {
            if compression != Compression::None {
                return Err(DatasetError::new(path, "Avro files compress their blocks themselves; drop the .gz/.zst"));
            }
            return Ok(Format::Avro);
        }
        if stem.ends_with(".ndjson") || stem.ends_with(".jsonl") || stem.ends_with(".json") {
            return Ok(Format::Ndjson(compression));
        }
        Err(DatasetError::new(path, "unknown dataset format; use .ndjson, .jsonl, .json (optionally .gz or .zst) or .avro"))
    }
}

/// Calls `f(record_number, record)` for every record of a dataset, as one JSON envelope per
/// record: `Ok(text)`, an NDJSON line as it is (a broken one too, so the consumer refuses it
/// with its line number) or an Avro record converted; `Err` for a line that is not UTF-8 or an
/// Avro record that is not an envelope, saying why, and the records after it are read as well.
/// `progress` receives compressed bytes read.
pub fn for_each_record<E: From<DatasetError>>(
    path: &Path,
    progress: &dyn Fn(u64),
    mut f: impl FnMut(u64, Result<&str, &DecodeError>) -> Result<bool, E>,
) -> Result<(), E> {
    let mut text = String::new();
    for_each_chunk(path, 0, progress, |chunk| {
        let mut keep_going = true;
        let mut result = Ok(());
        chunk.for_each(|number, record| {
            if !keep_going {
                return;
            }
            let refused;
            let record = match record {
                Record::Json(line) => match crate::text::utf8(line) {
                    Ok(line) => Ok(line),
                    Err(e) => {
                        refused = DecodeError { pointer: String::new(), message: format!("not UTF-8: {e}") };
                        Err(&refused)
                    }
                },
                Record::Avro(datum) => match read_envelope(datum) {
                    Ok(env) => {
                        text = serde_json::to_string(&env).expect("an envelope serialises");
                        Ok(text.as_str())
                    }
                    Err(e) => {
                        refused = e;
                        Err(&refused)
                    }
                },
            };
            match f(number, record) {
                Ok(k) => keep_going = k,
                Err(e) => {
                    result = Err(e);
                    keep_going = false;
                }
            }
        });
        result.map(|()| keep_going)
    })
}

/// How a chunk's bytes divide into records.
enum Layout {
    /// Whole NDJSON lines, each ending in `\n`.
    Lines,
    /// Avro datums back to back, at these ranges.
    Datums(Vec<Range<u32>>),
}

/// A run of whole records from one file.
pub struct Chunk {
    /// Index of the file among the inputs.
    pub file: u32,
    /// Number (1-based) of the first record: the line number in NDJSON, the record number in
    /// Avro.
    pub first: u64,
    bytes: Vec<u8>,
    layout: Layout,
}

impl Chunk {
    /// Calls `f(number, record)` for every record (NDJSON: every non-blank line).
    pub fn for_each(&self, mut f: impl FnMut(u64, Record<'_>)) {
        match &self.layout {
            Layout::Lines => {
                let mut start = 0;
                for (number, end) in (self.first..).zip(memchr::memchr_iter(b'\n', &self.bytes)) {
                    let mut line = &self.bytes[start..end];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        f(number, Record::Json(line));
                    }
                    start = end + 1;
                }
            }
            Layout::Datums(ranges) => {
                for (i, r) in ranges.iter().enumerate() {
                    f(self.first + i as u64, Record::Avro(&self.bytes[r.start as usize..r.end as usize]));
                }
            }
        }
    }
}

/// Whether `text` opens a JSON array of objects (or an empty one): `[`, then `{` or `]`, after
/// whitespace. No envelope starts so; a first line such as `[INFO] …` is left to be refused
/// as the one bad line it is.
pub fn is_json_array(text: &[u8]) -> bool {
    let mut bytes = text.iter().filter(|b| !b.is_ascii_whitespace());
    bytes.next() == Some(&b'[') && matches!(bytes.next(), Some(b'{' | b']'))
}

/// Why a dataset holding a JSON array is refused, and what to do.
const JSON_ARRAY: &str = "holds a JSON array; a dataset holds one envelope per line (NDJSON): convert it with `jq -c '.[]'`";

/// UTF-8's byte order mark, skipped where it opens an NDJSON file.
const BYTE_ORDER_MARK: &[u8] = b"\xef\xbb\xbf";

/// Target size of a chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Reads a dataset as chunks of whole records, so the caller can hand them to workers without
/// touching each record. `progress` receives compressed bytes read.
pub fn for_each_chunk<E: From<DatasetError>>(
    path: &Path,
    file: u32,
    progress: &dyn Fn(u64),
    mut f: impl FnMut(Chunk) -> Result<bool, E>,
) -> Result<(), E> {
    let handle = File::open(path).map_err(|e| DatasetError::new(path, format!("cannot open: {e}")))?;
    let counted = |inner| CountingReader { inner, progress, pending: 0 };
    match Format::of(path)? {
        Format::Ndjson(c) => {
            // A plain file is read straight from the `File`, which fills a buffer's spare room
            // without zeroing it first (behind a wrapper of ours, every 1 MiB chunk was zeroed:
            // 4 % of a replay's instructions); its progress is then each chunk's size.
            let direct = c == Compression::None;
            let mut reader: Box<dyn Read> = match direct {
                true => Box::new(handle),
                false => decompressed(counted(handle), c).map_err(|e| DatasetError::new(path, e))?,
            };
            let mut carry: Vec<u8> = Vec::new();
            let mut first = 1u64;
            loop {
                let mut bytes = std::mem::take(&mut carry);
                bytes.reserve(CHUNK_BYTES + 4096);
                let before = bytes.len();
                // On an error, `bytes` holds what was read before it: its whole lines were good.
                let n = (&mut reader).take(CHUNK_BYTES as u64).read_to_end(&mut bytes).map_err(|e| {
                    let last = first - 1 + memchr::memchr_iter(b'\n', &bytes).count() as u64;
                    DatasetError::new(path, format!("read error after line {last}: {e}"))
                })?;
                if direct && n > 0 {
                    progress(n as u64);
                }
                // A byte order mark opens many text files written on Windows; it is not JSON.
                if first == 1 && before == 0 && bytes.starts_with(BYTE_ORDER_MARK) {
                    bytes.drain(..BYTE_ORDER_MARK.len());
                }
                // No envelope starts with `[`: the file is one JSON array (the gateway's batch
                // form), which line by line would be refused piece by piece.
                if first == 1 && is_json_array(&bytes) {
                    return Err(DatasetError::new(path, JSON_ARRAY).into());
                }
                if n == 0 {
                    if bytes.is_empty() {
                        break;
                    }
                    bytes.push(b'\n');
                } else if let Some(last) = memchr::memrchr(b'\n', &bytes[before..]) {
                    carry = bytes.split_off(before + last + 1);
                } else {
                    carry = bytes;
                    continue;
                }
                let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
                let chunk = Chunk { file, first, bytes, layout: Layout::Lines };
                first += lines;
                if !f(chunk)? {
                    break;
                }
            }
        }
        Format::Avro => {
            let mut container = ContainerReader::new(BufReader::with_capacity(1 << 20, counted(handle))).map_err(|e| DatasetError::new(path, e))?;
            let mut first = 1u64;
            let mut bytes = Vec::with_capacity(CHUNK_BYTES + 4096);
            let mut ranges = Vec::new();
            loop {
                let start = bytes.len();
                let count = container
                    .next_block(&mut bytes)
                    .map_err(|e| DatasetError::new(path, format!("after record {}: {e}", first - 1 + ranges.len() as u64)))?;
                let Some(count) = count else { break };
                // Split the block into datums; the engine checks each one it is fed.
                let mut at = start;
                for _ in 0..count {
                    let number = first + ranges.len() as u64;
                    let len = datum_len(&bytes[at..]).map_err(|e| DatasetError::new(path, format!("record {number} cannot be read: {e}")))?;
                    ranges.push(at as u32..(at + len) as u32);
                    at += len;
                }
                if at != bytes.len() {
                    return Err(DatasetError::new(path, format!("{} bytes after the last record of a block", bytes.len() - at)).into());
                }
                if bytes.len() >= CHUNK_BYTES {
                    let n = ranges.len() as u64;
                    let chunk = Chunk {
                        file,
                        first,
                        bytes: std::mem::replace(&mut bytes, Vec::with_capacity(CHUNK_BYTES + 4096)),
                        layout: Layout::Datums(std::mem::take(&mut ranges)),
                    };
                    first += n;
                    if !f(chunk)? {
                        return Ok(());
                    }
                }
            }
            if !ranges.is_empty() {
                f(Chunk { file, first, bytes, layout: Layout::Datums(ranges) })?;
            }
        }
    }
    Ok(())
}

/// The decompressing reader for an NDJSON file.
fn decompressed<'r>(raw: impl Read + 'r, c: Compression) -> std::io::Result<Box<dyn Read + 'r>> {
    Ok(match c {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
    })
}

struct CountingReader<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
    pending: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pending += n as u64;
        if self.pending >= 1 << 20 || n == 0 {
            (self.progress)(self.pending);
            self.pending = 0;
        }
        Ok(n)
    }
}

/// The sync marker of every Avro dataset Pitgun writes. The library's default is random per
/// file, so the same records made different files (`simulate --seed` promises the same bytes;
/// the header's metadata order is fixed by [`crate::avro::container::header`]).
/// Readers find blocks by it whatever its value; a fixed one is as unlikely to occur in the data
/// (the first 16 bytes of SHA-256 of "pitgun dataset: Avro sync marker").
const AVRO_SYNC_MARKER: [u8; 16] = [123, 182, 201, 78, 45, 93, 186, 7, 234, 139, 78, 183, 79, 98, 104, 124];

/// Writes envelopes (or raw lines) to a dataset file in the format its name says.
pub struct DatasetWriter {
    path: String,
    out: Out,
}

enum Out {
    Lines(Lines),
    Avro(Box<AvroWriter<'static, BufWriter<File>>>),
}

/// Where lines go: the compressions are kept by type, so that [`Lines::finish`] writes their
/// ends (a zstd frame's epilogue, gzip's trailer) and an error there fails the writer, not a drop.
enum Lines {
    Plain(Box<dyn Write>),
    Gzip(flate2::write::GzEncoder<Box<dyn Write>>),
    Zstd(zstd::stream::write::Encoder<'static, Box<dyn Write>>),
}

impl Lines {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Lines::Plain(w) => w,
            Lines::Gzip(w) => w,
            Lines::Zstd(w) => w,
        }
    }

    /// Writes what is buffered and the compression's end.
    fn finish(self) -> std::io::Result<()> {
        match self {
            Lines::Plain(mut w) => w.flush(),
            Lines::Gzip(w) => w.finish().and_then(|mut w| w.flush()),
            Lines::Zstd(w) => w.finish().and_then(|mut w| w.flush()),
        }
    }
}

impl DatasetWriter {
    /// Creates `path`.
    pub fn create(path: &Path) -> Result<DatasetWriter, DatasetError> {
        let format = Format::of(path)?;
        let file = File::create(path).map_err(|e| DatasetError::new(path, format!("cannot create: {e}")))?;
        let out = match format {
            Format::Ndjson(c) => return DatasetWriter::lines(path, c, Box::new(BufWriter::with_capacity(1 << 20, file))),
            Format::Avro => {
                let schema: &'static Schema = Box::leak(Box::new(envelope_schema()));
                let codec = Codec::Deflate(Default::default());
                let mut file = BufWriter::new(file);
                file.write_all(&crate::avro::container::header(schema, codec.into(), AVRO_SYNC_MARKER))
                    .map_err(|e| DatasetError::new(path, format!("cannot write: {e}")))?;
                let writer = AvroWriter::builder().schema(schema).writer(file).codec(codec).marker(AVRO_SYNC_MARKER).has_header(true);
                Out::Avro(Box::new(writer.build()))
            }
        };
        Ok(DatasetWriter { path: path.display().to_string(), out })
    }

    /// Lines (NDJSON) compressed as `compression` says, into `sink`.
    fn lines(path: &Path, compression: Compression, sink: Box<dyn Write>) -> Result<DatasetWriter, DatasetError> {
        let lines = match compression {
            Compression::None => Lines::Plain(sink),
            Compression::Gzip => Lines::Gzip(flate2::write::GzEncoder::new(sink, flate2::Compression::fast())),
            Compression::Zstd => Lines::Zstd(zstd::stream::write::Encoder::new(sink, 3).map_err(|e| DatasetError::new(path, e))?),
        };
        Ok(DatasetWriter { path: path.display().to_string(), out: Out::Lines(lines) })
    }

    fn fail(&self, e: impl std::fmt::Display) -> DatasetError {
        DatasetError { path: self.path.clone(), message: e.to_string() }
    }

    /// Appends an envelope.
    pub fn envelope(&mut self, env: &Envelope) -> Result<(), DatasetError> {
        let written = match &mut self.out {
            Out::Lines(lines) => {
                let w = lines.writer();
                serde_json::to_writer(&mut *w, env).map_err(|e| e.to_string()).and_then(|()| w.write_all(b"\n").map_err(|e| e.to_string()))
            }
            Out::Avro(w) => w.append_ser(env).map(drop).map_err(|e| format!("envelope does not fit the Avro schema: {e}")),
        };
        written.map_err(|e| self.fail(e))
    }

    /// Appends a raw line; false for Avro (malformed records only exist in NDJSON).
    pub fn raw_line(&mut self, line: &str) -> Result<bool, DatasetError> {
        let Out::Lines(lines) = &mut self.out else { return Ok(false) };
        let w = lines.writer();
        let written = w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\n"));
        written.map_err(|e| self.fail(e))?;
        Ok(true)
    }

    /// Writes what is buffered and the compression's end; an error means the file is not whole.
    pub fn finish(self) -> Result<(), DatasetError> {
        let flushed = match self.out {
            Out::Lines(lines) => lines.finish(),
            Out::Avro(w) => w.into_inner().map_err(std::io::Error::other).and_then(|mut w| w.flush()),
        };
        flushed.map_err(|e| DatasetError { path: self.path, message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use pitgun_contracts::envelope::{ChannelValue, EventKind, Source, SourceKind};

    use super::*;

    /// Takes `limit` bytes, then fails as a full disk does; counts what it took.
    struct Disk {
        taken: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        limit: usize,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            use std::sync::atomic::Ordering::Relaxed;
            if self.taken.load(Relaxed) + buf.len() > self.limit {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            self.taken.fetch_add(buf.len(), Relaxed);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A compressed file's end (zstd's epilogue, gzip's trailer) was written when the writer
    /// was dropped, its error lost: a disk full at that point left a truncated file reported
    /// as written.
    #[test]
    fn a_compressed_file_whose_end_cannot_be_written_fails() {
        for compression in [Compression::Zstd, Compression::Gzip] {
            let write = |limit: usize| {
                let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let disk = Box::new(Disk { taken: taken.clone(), limit });
                let mut w = DatasetWriter::lines(Path::new("d.ndjson.x"), compression, disk).unwrap();
                for i in 0..200 {
                    assert!(w.raw_line(&format!("{{\"line\": {i}}}")).unwrap());
                }
                (w.finish(), taken.load(std::sync::atomic::Ordering::Relaxed))
            };
            let (whole, size) = write(usize::MAX);
            assert!(whole.is_ok() && size > 0, "{compression:?}");
            let (short, _) = write(size - 1);
            assert!(short.is_err(), "{compression:?}: one byte short of its {size} bytes, and reported written");
        }
    }

    /// A JSON array of envelopes is told apart from lines, which never start so; a first line
    /// that only starts with `[` is one bad line, not an array.
    #[test]
    fn a_json_array_is_told_from_a_line_that_starts_with_a_bracket() {
        for array in ["[{\"a\":1}]", "[\n  {\n", " \r\n[ ]", "[]"] {
            assert!(is_json_array(array.as_bytes()), "{array:?}");
        }
        for not in ["[INFO] started", "{\"a\":[1]}", "[1,2]", "", "["] {
            assert!(!is_json_array(not.as_bytes()), "{not:?}");
        }
    }

    fn envelope(i: u64) -> Envelope {
        Envelope {
            schema: pitgun_contracts::envelope::ENVELOPE_SCHEMA_V1.into(),
            event_id: format!("e{i}"),
            source: Source { kind: SourceKind::Device, id: "pitgun-sim".into(), version: "1.0.0".into() },
            session_id: format!("s{}", i % 7),
            seq: i,
            time_us: 1_700_000_000_000_000 + i as i64,
            kind: EventKind::Sample,
            channels: [("speed".to_string(), ChannelValue::Number(i as f64 * 0.5)), ("abs".to_string(), ChannelValue::Bool(i.is_multiple_of(2)))]
                .into_iter()
                .collect(),
            dims: [("track".to_string(), "monza".to_string())].into_iter().collect(),
        }
    }

    fn records(path: &Path) -> Result<Vec<(u64, Envelope)>, DatasetError> {
        let mut got = Vec::new();
        for_each_chunk(path, 0, &|_| {}, |chunk| {
            chunk.for_each(|n, record| {
                let Record::Avro(datum) = record else { panic!("an Avro file gives datums") };
                got.push((n, read_envelope(datum).unwrap()));
            });
            Ok::<_, DatasetError>(true)
        })?;
        Ok(got)
    }

    /// Enough records for several container blocks and several chunks: every datum comes back
    /// whole, numbered, in order.
    #[test]
    fn an_avro_file_is_read_as_its_datums_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.avro");
        let mut w = DatasetWriter::create(&path).unwrap();
        let n = 30_000;
        for i in 0..n {
            w.envelope(&envelope(i)).unwrap();
        }
        w.finish().unwrap();
        let got = records(&path).unwrap();
        assert_eq!(got.len(), n as usize);
        for (i, (number, env)) in got.iter().enumerate() {
            assert_eq!(*number, i as u64 + 1);
            assert_eq!(*env, envelope(i as u64));
        }
        // The header written by hand reads with `apache-avro`'s own reader, as other tools read it.
        let official = apache_avro::Reader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(official.writer_schema(), &envelope_schema());
        let official: Vec<Envelope> = official.map(|v| apache_avro::from_value(&v.unwrap()).unwrap()).collect();
        assert_eq!(official.len(), n as usize);
        assert_eq!(official[n as usize - 1], envelope(n - 1));
        let mut texts = Vec::new();
        for_each_record(&path, &|_| {}, |n, text| {
            texts.push((n, text.unwrap().to_string()));
            Ok::<_, DatasetError>(n < 3)
        })
        .unwrap();
        assert_eq!(texts.len(), 3, "the callback stops the read");
        assert_eq!(serde_json::from_str::<Envelope>(&texts[1].1).unwrap(), envelope(1));
    }

    /// Files other writers make: blocks of every codec the reader takes, each read back whole.
    #[test]
    fn avro_files_with_null_deflate_or_zstandard_blocks_give_the_same_datums() {
        let dir = tempfile::tempdir().unwrap();
        let schema = envelope_schema();
        let n = 5_000;
        for (name, codec) in
            [("null", Codec::Null), ("deflate", Codec::Deflate(Default::default())), ("zstandard", Codec::Zstandard(Default::default()))]
        {
            let path = dir.path().join(format!("{name}.avro"));
            // Small blocks: several per file.
            let mut w = apache_avro::Writer::builder().schema(&schema).writer(File::create(&path).unwrap()).codec(codec).block_size(16 << 10).build();
            for i in 0..n {
                w.append_ser(envelope(i)).unwrap();
            }
            w.flush().unwrap();
            drop(w);
            let header = std::fs::read(&path).unwrap();
            let named = header.windows(name.len()).any(|w| w == name.as_bytes());
            assert!(named || name == "null", "{name}: the header names the codec");
            let got = records(&path).unwrap();
            assert_eq!(got.len(), n as usize, "{name}");
            for (i, (number, env)) in got.iter().enumerate() {
                assert_eq!((*number, env), (i as u64 + 1, &envelope(i as u64)), "{name}");
            }
        }
    }

    #[test]
    fn progress_adds_up_to_the_bytes_on_disk_plain_or_compressed() {
        let dir = tempfile::tempdir().unwrap();
        // More than two chunks, so a plain file reports progress more than once.
        let line = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(1000));
        let text = line.repeat(2 * CHUNK_BYTES / line.len() + 7);
        for name in ["d.ndjson", "d.ndjson.gz"] {
            let path = dir.path().join(name);
            let raw = if name.ends_with(".gz") {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(text.as_bytes()).unwrap();
                gz.finish().unwrap()
            } else {
                text.clone().into_bytes()
            };
            std::fs::write(&path, &raw).unwrap();
            let (total, calls) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u32));
            let progress = |n: u64| {
                total.set(total.get() + n);
                calls.set(calls.get() + 1);
            };
            let mut lines = 0u64;
            for_each_record(&path, &progress, |_, _| {
                lines += 1;
                Ok::<_, DatasetError>(true)
            })
            .unwrap();
            assert_eq!(lines as usize, text.lines().count(), "{name}");
            assert_eq!(total.get(), raw.len() as u64, "{name}: progress counts the bytes on disk");
            assert!(name.ends_with(".gz") || calls.get() >= 3, "{name}: reported per chunk, {} calls", calls.get());
        }
    }

    /// A compressed file cut short is an error naming the last whole line read before the cut:
    /// it named the first line of the chunk being read ("after line 1" for a file cut at its
    /// 9,000th line), which sent the reader to the wrong place.
    #[test]
    fn a_compressed_file_cut_short_names_the_last_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (1..=30_000).map(|n| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(80))).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let whole = gz.finish().unwrap();
        for cut in [whole.len() / 10, whole.len() * 7 / 10] {
            let path = dir.path().join("cut.ndjson.gz");
            std::fs::write(&path, &whole[..cut]).unwrap();
            // What the cut leaves readable, decompressed at once.
            let mut readable = Vec::new();
            assert!(flate2::read::MultiGzDecoder::new(&whole[..cut]).read_to_end(&mut readable).is_err());
            let last = memchr::memchr_iter(b'\n', &readable).count();
            assert!(last > 1000, "{last}");
            let err = for_each_record(&path, &|_| {}, |_, _| Ok::<_, DatasetError>(true)).unwrap_err().to_string();
            assert!(err.contains(&format!("read error after line {last}:")), "cut at byte {cut}, {last} whole lines: {err}");
        }
    }

    /// A line that is not UTF-8 is handed on as that record's error, and the records after it
    /// are read: `validate` stopped at the first one, naming no later bad record, while replay
    /// refused that line alone and went on.
    #[test]
    fn a_line_that_is_not_utf8_is_that_records_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ndjson");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":\"\xff\"}\n{\"c\":3}\n").unwrap();
        let mut seen = Vec::new();
        for_each_record(&path, &|_| {}, |n, text| {
            seen.push((n, text.map(str::to_string).map_err(|e| e.to_string())));
            Ok::<_, DatasetError>(true)
        })
        .unwrap();
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], (1, Ok("{\"a\":1}".to_string())));
        assert!(seen[1].0 == 2 && seen[1].1.as_ref().is_err_and(|e| e.contains("not UTF-8") && e.contains("index 6")), "{seen:?}");
        assert_eq!(seen[2], (3, Ok("{\"c\":3}".to_string())));
    }

    /// Editors and shells on Windows start a UTF-8 text file with a byte order mark; the first
    /// line was refused as "expected value at line 1 column 1". Only at the start is it one.
    #[test]
    fn a_byte_order_mark_opening_a_file_is_not_part_of_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"\xef\xbb\xbf{\"a\":1}\n\xef\xbb\xbf{\"b\":2}\n";
        let plain = dir.path().join("d.ndjson");
        std::fs::write(&plain, text).unwrap();
        let zst = dir.path().join("d.ndjson.zst");
        std::fs::write(&zst, zstd::encode_all(&text[..], 3).unwrap()).unwrap();
        for path in [plain, zst] {
            let mut seen = Vec::new();
            for_each_record(&path, &|_| {}, |n, text| {
                seen.push((n, text.unwrap().to_string()));
                Ok::<_, DatasetError>(true)
            })
            .unwrap();
            assert_eq!(seen, [(1, "{\"a\":1}".to_string()), (2, "\u{feff}{\"b\":2}".to_string())], "{}", path.display());
        }
    }

    /// An Avro record the owned reader refuses reaches the consumer as its error, not as a JSON
    /// stand-in whose own refusal hid why (`validate` and `publish` said the record had no
    /// `schema`); the records around it are read as usual.
    #[test]
    fn an_avro_record_that_cannot_be_read_is_handed_on_as_its_error() {
        let good = crate::avro::tests::reference_encode(&envelope(1));
        let text = r#"{"schema":"pitgun-envelope/v1","event_id":"e","source":{"kind":"game","id":"pitgun-web","version":"1.4.2"},"session_id":"s","seq":1,"time_us":5,"kind":"sample","channels":{"speed_kmh":1,"speed_kmh":3}}"#;
        let mut twice = Vec::new();
        crate::avro::AvroWriter::new().write(&crate::json::decode(text).unwrap(), &[], &mut twice);
        // A container of null blocks, written by hand: no Avro writer writes a map key twice.
        let mut file = AvroWriter::with_codec(&envelope_schema(), Vec::new(), Codec::Null).into_inner().unwrap();
        let sync = file[file.len() - 16..].to_vec();
        let zigzag = crate::avro::tests::zigzag;
        let datums = [&good[10..], &twice[10..], &good[10..]];
        zigzag(datums.len(), &mut file);
        zigzag(datums.iter().map(|d| d.len()).sum(), &mut file);
        datums.iter().for_each(|d| file.extend_from_slice(d));
        file.extend_from_slice(&sync);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.avro");
        std::fs::write(&path, &file).unwrap();
        let mut seen = Vec::new();
        for_each_record(&path, &|_| {}, |n, record| {
            seen.push((n, record.map(|t| serde_json::from_str::<Envelope>(t).unwrap().event_id).map_err(|e| e.to_string())));
            Ok::<_, DatasetError>(true)
        })
        .unwrap();
        let refused = "at /channels/speed_kmh: channel \"speed_kmh\" appears more than once in this envelope".to_string();
        assert_eq!(seen, [(1, Ok("e1".to_string())), (2, Err(refused)), (3, Ok("e1".to_string()))]);
    }

    #[test]
    fn a_damaged_or_foreign_avro_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.avro");
        let mut w = DatasetWriter::create(&path).unwrap();
        for i in 0..100 {
            w.envelope(&envelope(i)).unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.avro");
        std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
        let err = records(&cut).unwrap_err().to_string();
        assert!(err.contains("cut.avro") && err.contains("ends"), "{err}");
        let other = dir.path().join("other.avro");
        let schema = Schema::parse_str(r#"{"type":"record","name":"x","fields":[{"name":"a","type":"long"}]}"#).unwrap();
        let mut w = AvroWriter::new(&schema, File::create(&other).unwrap());
        w.append(apache_avro::types::Value::Record(vec![("a".into(), apache_avro::types::Value::Long(1))])).unwrap();
        w.flush().unwrap();
        drop(w);
        let err = records(&other).unwrap_err().to_string();
        assert!(err.contains("another schema"), "{err}");
        let text = dir.path().join("t.avro");
        std::fs::write(&text, "{\"not\": \"avro\"}\n").unwrap();
        assert!(records(&text).unwrap_err().to_string().contains("not an Avro object container file"));
    }
}
