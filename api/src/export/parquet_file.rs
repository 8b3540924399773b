//! One Parquet file: one table's rows of one UTC day. Written under a temporary name in the same folder and renamed
//! once closed and synced, so the final name only ever holds a whole file. Its footer records the window it holds and
//! whether that day is complete.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader as _, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::Type;

use crate::store::archive::{ArchiveColumn, Cell, ColumnKind};

/// A row group is written when it reaches either bound: what the export holds in memory at once.
const ROW_GROUP_ROWS: usize = 64 * 1024;
const ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;

const KEY_FROM: &str = "flowtrace.window.from";
const KEY_TO: &str = "flowtrace.window.to";
const KEY_COMPLETE: &str = "flowtrace.complete";

/// What a file's footer says about its rows: all of the table's rows in `[from, to)`; `complete` when that is the
/// whole day, the day had ended and nothing in it could still change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub complete: bool,
}

enum Values {
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Float64(Vec<f64>),
    Bool(Vec<bool>),
    Bytes(Vec<ByteArray>),
}

/// One column's values of the row group being built; definition levels (1 = present) for nullable columns.
struct Buffer {
    values: Values,
    defined: Vec<i16>,
    nullable: bool,
}

pub struct DayFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: Option<SerializedFileWriter<BufWriter<File>>>,
    columns: Vec<ArchiveColumn>,
    buffers: Vec<Buffer>,
    buffered_rows: usize,
    buffered_bytes: usize,
    renamed: bool,
    pub rows: u64,
}

fn schema(table: &str, columns: &[ArchiveColumn]) -> parquet::errors::Result<Type> {
    let fields = columns
        .iter()
        .map(|c| {
            let (physical, logical) = match c.kind {
                ColumnKind::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
                ColumnKind::Json => (PhysicalType::BYTE_ARRAY, Some(LogicalType::Json)),
                ColumnKind::Timestamp => (PhysicalType::INT64, Some(LogicalType::timestamp(true, TimeUnit::MICROS))),
                ColumnKind::Int64 => (PhysicalType::INT64, None),
                ColumnKind::Int32 => (PhysicalType::INT32, None),
                ColumnKind::Float64 => (PhysicalType::DOUBLE, None),
                ColumnKind::Bool => (PhysicalType::BOOLEAN, None),
            };
            let repetition = if c.nullable { Repetition::OPTIONAL } else { Repetition::REQUIRED };
            Type::primitive_type_builder(&c.name, physical)
                .with_repetition(repetition)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<parquet::errors::Result<Vec<_>>>()?;
    Type::group_type_builder(table).with_fields(fields).build()
}

impl DayFile {
    /// Starts `path` (under a temporary name until `finish`).
    pub fn create(path: &Path, table: &str, columns: &[ArchiveColumn]) -> anyhow::Result<DayFile> {
        let name = path.file_name().and_then(|n| n.to_str()).context("file name")?;
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("flowtrace {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer =
            SerializedFileWriter::new(BufWriter::new(file), Arc::new(schema(table, columns)?), Arc::new(props))?;
        let buffers = columns.iter().map(|c| Buffer::new(c.kind, c.nullable)).collect();
        Ok(DayFile {
            path: path.to_owned(),
            tmp,
            writer: Some(writer),
            columns: columns.to_vec(),
            buffers,
            buffered_rows: 0,
            buffered_bytes: 0,
            renamed: false,
            rows: 0,
        })
    }

    pub fn push(&mut self, row: Vec<Cell>) -> anyhow::Result<()> {
        if row.len() != self.buffers.len() {
            bail!("a row of {} values for {} columns", row.len(), self.buffers.len());
        }
        for ((cell, buffer), column) in row.into_iter().zip(&mut self.buffers).zip(&self.columns) {
            self.buffered_bytes += buffer.push(cell).with_context(|| format!("column {}", column.name))?;
        }
        self.buffered_rows += 1;
        self.rows += 1;
        if self.buffered_rows >= ROW_GROUP_ROWS || self.buffered_bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let writer = self.writer.as_mut().context("file already finished")?;
        let mut group = writer.next_row_group()?;
        for buffer in &mut self.buffers {
            let mut column = group.next_column()?.context("fewer Parquet columns than table columns")?;
            let defined = buffer.nullable.then_some(buffer.defined.as_slice());
            match &buffer.values {
                Values::Int64(v) => column.typed::<Int64Type>().write_batch(v, defined, None)?,
                Values::Int32(v) => column.typed::<Int32Type>().write_batch(v, defined, None)?,
                Values::Float64(v) => column.typed::<DoubleType>().write_batch(v, defined, None)?,
                Values::Bool(v) => column.typed::<BoolType>().write_batch(v, defined, None)?,
                Values::Bytes(v) => column.typed::<ByteArrayType>().write_batch(v, defined, None)?,
            };
            column.close()?;
            buffer.clear();
        }
        group.close()?;
        self.buffered_rows = 0;
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer, syncs, and renames the file to its final name.
    pub fn finish(mut self, info: FileInfo) -> anyhow::Result<u64> {
        self.flush()?;
        let mut writer = self.writer.take().context("file already finished")?;
        for (key, value) in [
            (KEY_FROM, info.from.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            (KEY_TO, info.to.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            (KEY_COMPLETE, info.complete.to_string()),
        ] {
            writer.append_key_value_metadata(KeyValue::new(key.to_owned(), value));
        }
        let file = writer.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming {} to {}", self.tmp.display(), self.path.display()))?;
        self.renamed = true;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(self.rows)
    }
}

impl Drop for DayFile {
    /// An unfinished file (an error on the way) leaves nothing behind.
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Buffer {
    fn new(kind: ColumnKind, nullable: bool) -> Buffer {
        let values = match kind {
            ColumnKind::Text | ColumnKind::Json => Values::Bytes(Vec::new()),
            ColumnKind::Timestamp | ColumnKind::Int64 => Values::Int64(Vec::new()),
            ColumnKind::Int32 => Values::Int32(Vec::new()),
            ColumnKind::Float64 => Values::Float64(Vec::new()),
            ColumnKind::Bool => Values::Bool(Vec::new()),
        };
        Buffer { values, defined: Vec::new(), nullable }
    }

    /// Adds one value; returns about how many bytes it holds.
    fn push(&mut self, cell: Cell) -> anyhow::Result<usize> {
        let size = match (&mut self.values, cell) {
            (_, Cell::Null) if self.nullable => {
                self.defined.push(0);
                return Ok(2);
            }
            (_, Cell::Null) => bail!("NULL in a column that is NOT NULL"),
            (Values::Int64(v), Cell::Int64(x) | Cell::Micros(x)) => {
                v.push(x);
                8
            }
            (Values::Int32(v), Cell::Int32(x)) => {
                v.push(x);
                4
            }
            (Values::Float64(v), Cell::Float64(x)) => {
                v.push(x);
                8
            }
            (Values::Bool(v), Cell::Bool(x)) => {
                v.push(x);
                1
            }
            (Values::Bytes(v), Cell::Text(s)) => {
                let len = s.len();
                v.push(ByteArray::from(s.into_bytes()));
                len + 16
            }
            (_, cell) => bail!("value {cell:?} does not fit the column's type"),
        };
        self.defined.push(1);
        Ok(size)
    }

    fn clear(&mut self) {
        self.defined.clear();
        match &mut self.values {
            Values::Int64(v) => v.clear(),
            Values::Int32(v) => v.clear(),
            Values::Float64(v) => v.clear(),
            Values::Bool(v) => v.clear(),
            Values::Bytes(v) => *v = Vec::new(),
        }
    }
}

/// The footer of the file at `path`; `None` when there is no file.
pub fn read_info(path: &Path) -> anyhow::Result<Option<FileInfo>> {
    if !path.exists() {
        return Ok(None);
    }
    let reader = open(path)?;
    let metadata = reader.metadata().file_metadata().key_value_metadata();
    let value = |key: &str| {
        metadata
            .and_then(|kv| kv.iter().find(|k| k.key == key))
            .and_then(|k| k.value.clone())
            .with_context(|| format!("{}: no {key} in its footer; not written by flowtrace export", path.display()))
    };
    let time = |key: &str| -> anyhow::Result<DateTime<Utc>> {
        Ok(DateTime::parse_from_rfc3339(&value(key)?)?.with_timezone(&Utc))
    };
    Ok(Some(FileInfo { from: time(KEY_FROM)?, to: time(KEY_TO)?, complete: value(KEY_COMPLETE)? == "true" }))
}

fn open(path: &Path) -> anyhow::Result<SerializedFileReader<File>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    SerializedFileReader::new(file).with_context(|| format!("reading {}", path.display()))
}

/// Streams the rows of an earlier file, as cells of `columns` (which must be the file's columns, in order).
pub fn read_rows(
    path: &Path,
    columns: &[ArchiveColumn],
    mut each: impl FnMut(Vec<Cell>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let reader = open(path)?;
    let names: Vec<&str> =
        reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name()).collect();
    if names != columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>() {
        bail!("{} has other columns than the table has now; move it away to export that day again", path.display());
    }
    for row in reader.get_row_iter(None)? {
        let cells = row?
            .into_columns()
            .into_iter()
            .map(|(_, field)| match field {
                Field::Null => Ok(Cell::Null),
                Field::Str(s) => Ok(Cell::Text(s)),
                Field::TimestampMicros(x) => Ok(Cell::Micros(x)),
                Field::Long(x) => Ok(Cell::Int64(x)),
                Field::Int(x) => Ok(Cell::Int32(x)),
                Field::Double(x) => Ok(Cell::Float64(x)),
                Field::Bool(x) => Ok(Cell::Bool(x)),
                other => bail!("{}: unexpected value {other:?}", path.display()),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        each(cells)?;
    }
    Ok(())
}
