//! A small reader of GGUF metadata: the header and the key/value section, nothing else.
//!
//! Enough to size a KV cache without loading a model: [`Metadata::read`] parses a GGUF file's
//! key/value pairs (versions 2 and 3) and stops before the tensor descriptions, so reading a
//! 70 GB model costs a few kilobytes of I/O. Arrays of strings (the tokenizer's vocabulary) are
//! skipped rather than kept, unless asked for.
//!
//! ```no_run
//! let meta = tbq::gguf::Metadata::open("model.gguf")?;
//! println!("{} layers", meta.get_u64("gemma3.block_count").unwrap_or(0));
//! # Ok::<(), tbq::gguf::GgufError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Arrays longer than this are not kept in memory (their length is; see [`Value::SkippedArray`]):
/// tokenizer vocabularies hold hundreds of thousands of strings that a planner never needs.
pub const MAX_KEPT_ARRAY: u64 = 65_536;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type (u8, u16, u32, u64).
    U(u64),
    /// Any signed integer type (i8, i16, i32, i64).
    I(i64),
    /// f32 or f64.
    F(f64),
    /// bool.
    Bool(bool),
    /// A UTF-8 string (invalid UTF-8 is replaced, not refused).
    Str(String),
    /// An array of values.
    Array(Vec<Value>),
    /// An array that was too long to keep ([`MAX_KEPT_ARRAY`]): its element type id and length.
    SkippedArray {
        /// The GGUF type id of the elements.
        elem_type: u32,
        /// Number of elements.
        len: u64,
    },
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer or a bool.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U(v) => Some(v),
            Value::I(v) if v >= 0 => Some(v as u64),
            Value::Bool(b) => Some(b as u64),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as f64, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::U(v) => Some(v as f64),
            Value::I(v) => Some(v as f64),
            Value::F(v) => Some(v),
            _ => None,
        }
    }
}

/// Why a GGUF file could not be read.
#[derive(Debug)]
pub enum GgufError {
    /// The file could not be opened or read.
    Io(io::Error),
    /// The file does not start with `GGUF`.
    NotGguf {
        /// The first four bytes found.
        magic: [u8; 4],
    },
    /// A GGUF version this reader does not know (it reads 2 and 3).
    Version(u32),
    /// A value type id outside the GGUF specification.
    BadType {
        /// The key being read.
        key: String,
        /// The type id found.
        type_id: u32,
    },
    /// A length that cannot be right (a string or array larger than the file could hold).
    Corrupt(String),
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(
                    f,
                    "the file ends inside the GGUF header (truncated download?)"
                )
            }
            GgufError::Io(e) => write!(f, "{e}"),
            GgufError::NotGguf { magic } => {
                write!(
                    f,
                    "not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"
                )
            }
            GgufError::Version(v) => write!(f, "GGUF version {v} is not supported (2 and 3 are)"),
            GgufError::BadType { key, type_id } => {
                write!(f, "key {key:?} has unknown value type {type_id}")
            }
            GgufError::Corrupt(what) => write!(f, "corrupt GGUF header: {what}"),
        }
    }
}

impl std::error::Error for GgufError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GgufError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for GgufError {
    fn from(e: io::Error) -> Self {
        GgufError::Io(e)
    }
}

/// The metadata of one GGUF file.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// The GGUF version (2 or 3).
    pub version: u32,
    /// Number of tensors the file declares.
    pub n_tensors: u64,
    /// Every key/value pair, sorted by key.
    pub kv: BTreeMap<String, Value>,
}

// GGUF value type ids (gguf.h).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// No real key, string or header is this long; a larger length means a corrupt file.
const MAX_STRING: u64 = 1 << 30;

impl Metadata {
    /// Reads the metadata of the GGUF file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Metadata, GgufError> {
        let f = File::open(path.as_ref())?;
        Metadata::read(&mut BufReader::with_capacity(1 << 16, f))
    }

    /// Reads the metadata from `r`, positioned at the start of a GGUF file. Reads nothing past
    /// the key/value section.
    pub fn read(r: &mut impl Read) -> Result<Metadata, GgufError> {
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(GgufError::NotGguf { magic });
        }
        let version = read_u32(r)?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let n_tensors = read_u64(r)?;
        let n_kv = read_u64(r)?;
        if n_kv > 1 << 24 {
            return Err(GgufError::Corrupt(format!("{n_kv} metadata keys")));
        }
        let mut kv = BTreeMap::new();
        for _ in 0..n_kv {
            let key = read_string(r)?;
            let type_id = read_u32(r)?;
            let value = read_value(r, &key, type_id)?;
            kv.insert(key, value);
        }
        Ok(Metadata {
            version,
            n_tensors,
            kv,
        })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.get(key)
    }

    /// The value of `key` as an unsigned integer.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// The value of `key` as a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    /// `general.architecture` (`"llama"`, `"gemma3"`, …).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }
}

/// One tensor's description (the section after the key/value pairs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// `blk.3.attn_q.weight`, `token_embd.weight`, …
    pub name: String,
    /// Dimensions, innermost first.
    pub dims: Vec<u64>,
    /// The ggml type id.
    pub ggml_type: u32,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Bytes of the data, up to the next tensor (so including the alignment padding: what a
    /// loader that pads to the same alignment allocates).
    pub bytes: u64,
}

/// A `Read` that counts the bytes it has read: where the data section starts.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

impl Metadata {
    /// Reads the metadata and the tensor descriptions of the GGUF file at `path` (still no
    /// tensor data). Each tensor's size is the distance to the next one's offset (the last one's
    /// to the end of the file), so no table of ggml type sizes is needed and the sizes include
    /// the file's alignment padding.
    pub fn open_with_tensors(
        path: impl AsRef<Path>,
    ) -> Result<(Metadata, Vec<TensorInfo>), GgufError> {
        let f = File::open(path.as_ref())?;
        let file_len = f.metadata()?.len();
        let mut r = Counting {
            inner: BufReader::with_capacity(1 << 16, f),
            n: 0,
        };
        let meta = Metadata::read(&mut r)?;
        if meta.n_tensors > 1 << 24 {
            return Err(GgufError::Corrupt(format!("{} tensors", meta.n_tensors)));
        }
        let mut tensors = Vec::with_capacity(meta.n_tensors as usize);
        for _ in 0..meta.n_tensors {
            let name = read_string(&mut r)?;
            let n_dims = read_u32(&mut r)?;
            if n_dims > 8 {
                return Err(GgufError::Corrupt(format!(
                    "tensor {name:?}: {n_dims} dimensions"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| read_u64(&mut r))
                .collect::<io::Result<Vec<_>>>()?;
            let ggml_type = read_u32(&mut r)?;
            let offset = read_u64(&mut r)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                bytes: 0,
            });
        }
        let align = meta.get_u64("general.alignment").unwrap_or(32).max(1);
        let data_start = r.n.div_ceil(align) * align;
        let data_len = file_len.saturating_sub(data_start);
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in 0..order.len() {
            let end = order.get(w + 1).map_or(data_len, |&j| tensors[j].offset);
            let t = &mut tensors[order[w]];
            t.bytes = end.checked_sub(t.offset).ok_or_else(|| {
                GgufError::Corrupt(format!("tensor {:?} lies past the end of the file", t.name))
            })?;
        }
        Ok((meta, tensors))
    }
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> Result<String, GgufError> {
    let len = read_u64(r)?;
    if len > MAX_STRING {
        return Err(GgufError::Corrupt(format!("string of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(n), &mut io::sink())?;
    if got == n {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

/// Byte size of a scalar type, or None for strings and arrays.
fn scalar_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 => 8,
        _ => return None,
    })
}

fn read_value(r: &mut impl Read, key: &str, type_id: u32) -> Result<Value, GgufError> {
    let mut b = [0u8; 8];
    Ok(match type_id {
        T_U8 => {
            r.read_exact(&mut b[..1])?;
            Value::U(b[0] as u64)
        }
        T_I8 => {
            r.read_exact(&mut b[..1])?;
            Value::I(b[0] as i8 as i64)
        }
        T_U16 => {
            r.read_exact(&mut b[..2])?;
            Value::U(u16::from_le_bytes([b[0], b[1]]) as u64)
        }
        T_I16 => {
            r.read_exact(&mut b[..2])?;
            Value::I(i16::from_le_bytes([b[0], b[1]]) as i64)
        }
        T_U32 => Value::U(read_u32(r)? as u64),
        T_I32 => Value::I(read_u32(r)? as i32 as i64),
        T_F32 => Value::F(f32::from_bits(read_u32(r)?) as f64),
        T_BOOL => {
            r.read_exact(&mut b[..1])?;
            Value::Bool(b[0] != 0)
        }
        T_STRING => Value::Str(read_string(r)?),
        T_U64 => Value::U(read_u64(r)?),
        T_I64 => Value::I(read_u64(r)? as i64),
        T_F64 => Value::F(f64::from_bits(read_u64(r)?)),
        T_ARRAY => {
            let elem_type = read_u32(r)?;
            let len = read_u64(r)?;
            if elem_type == T_ARRAY {
                return Err(GgufError::Corrupt(format!("key {key:?}: nested arrays")));
            }
            if len > MAX_KEPT_ARRAY {
                match scalar_size(elem_type) {
                    Some(size) => skip(
                        r,
                        len.checked_mul(size).ok_or_else(|| {
                            GgufError::Corrupt(format!("key {key:?}: array of {len} elements"))
                        })?,
                    )?,
                    None if elem_type == T_STRING => {
                        for _ in 0..len {
                            let n = read_u64(r)?;
                            if n > MAX_STRING {
                                return Err(GgufError::Corrupt(format!(
                                    "key {key:?}: string of {n} bytes"
                                )));
                            }
                            skip(r, n)?;
                        }
                    }
                    None => {
                        return Err(GgufError::BadType {
                            key: key.into(),
                            type_id: elem_type,
                        })
                    }
                }
                Value::SkippedArray { elem_type, len }
            } else {
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_value(r, key, elem_type)?);
                }
                Value::Array(items)
            }
        }
        _ => {
            return Err(GgufError::BadType {
                key: key.into(),
                type_id,
            })
        }
    })
}

/// Writes GGUF files holding only metadata (no tensors): for tests, and for anyone who needs a
/// synthetic model header.
pub mod write {
    use super::*;
    use std::io::Write;

    /// A value to write. Integers are written as u32/i32 unless they need 64 bits.
    #[derive(Clone, Debug)]
    pub enum WValue {
        /// Written as GGUF u32.
        U32(u32),
        /// Written as GGUF i32.
        I32(i32),
        /// Written as GGUF u64.
        U64(u64),
        /// Written as GGUF f32.
        F32(f32),
        /// Written as GGUF bool.
        Bool(bool),
        /// Written as GGUF string.
        Str(String),
        /// Written as GGUF array of u32.
        ArrU32(Vec<u32>),
        /// Written as GGUF array of i32.
        ArrI32(Vec<i32>),
        /// Written as GGUF array of bool.
        ArrBool(Vec<bool>),
        /// Written as GGUF array of strings.
        ArrStr(Vec<String>),
    }

    fn put_str(w: &mut impl Write, s: &str) -> io::Result<()> {
        w.write_all(&(s.len() as u64).to_le_bytes())?;
        w.write_all(s.as_bytes())
    }

    /// Writes a GGUF v3 header with the given key/value pairs and zero tensors.
    pub fn metadata_only(w: &mut impl Write, kv: &[(&str, WValue)]) -> io::Result<()> {
        w.write_all(&MAGIC)?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&0u64.to_le_bytes())?;
        w.write_all(&(kv.len() as u64).to_le_bytes())?;
        for (key, v) in kv {
            put_str(w, key)?;
            let arr = |w: &mut dyn Write, t: u32, n: usize| -> io::Result<()> {
                w.write_all(&T_ARRAY.to_le_bytes())?;
                w.write_all(&t.to_le_bytes())?;
                w.write_all(&(n as u64).to_le_bytes())
            };
            match v {
                WValue::U32(x) => {
                    w.write_all(&T_U32.to_le_bytes())?;
                    w.write_all(&x.to_le_bytes())?
                }
                WValue::I32(x) => {
                    w.write_all(&T_I32.to_le_bytes())?;
                    w.write_all(&x.to_le_bytes())?
                }
                WValue::U64(x) => {
                    w.write_all(&T_U64.to_le_bytes())?;
                    w.write_all(&x.to_le_bytes())?
                }
                WValue::F32(x) => {
                    w.write_all(&T_F32.to_le_bytes())?;
                    w.write_all(&x.to_le_bytes())?
                }
                WValue::Bool(x) => {
                    w.write_all(&T_BOOL.to_le_bytes())?;
                    w.write_all(&[*x as u8])?
                }
                WValue::Str(s) => {
                    w.write_all(&T_STRING.to_le_bytes())?;
                    put_str(w, s)?
                }
                WValue::ArrU32(xs) => {
                    arr(w, T_U32, xs.len())?;
                    for x in xs {
                        w.write_all(&x.to_le_bytes())?;
                    }
                }
                WValue::ArrI32(xs) => {
                    arr(w, T_I32, xs.len())?;
                    for x in xs {
                        w.write_all(&x.to_le_bytes())?;
                    }
                }
                WValue::ArrBool(xs) => {
                    arr(w, T_BOOL, xs.len())?;
                    for x in xs {
                        w.write_all(&[*x as u8])?;
                    }
                }
                WValue::ArrStr(xs) => {
                    arr(w, T_STRING, xs.len())?;
                    for x in xs {
                        put_str(w, x)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::write::{metadata_only, WValue};
    use super::*;

    #[test]
    fn tensor_sizes_come_from_the_offsets_and_the_file_end() {
        let mut buf = Vec::new();
        metadata_only(
            &mut buf,
            &[("general.architecture", WValue::Str("llama".into()))],
        )
        .unwrap();
        buf[8..16].copy_from_slice(&2u64.to_le_bytes());
        let info = |buf: &mut Vec<u8>, name: &str, dims: &[u64], offset: u64| {
            buf.extend((name.len() as u64).to_le_bytes());
            buf.extend(name.as_bytes());
            buf.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                buf.extend(d.to_le_bytes());
            }
            buf.extend(0u32.to_le_bytes());
            buf.extend(offset.to_le_bytes());
        };
        // Listed out of offset order: sizes must not depend on the listing order.
        info(&mut buf, "blk.0.b", &[4], 64);
        info(&mut buf, "token_embd.weight", &[8, 2], 0);
        let start = buf.len().div_ceil(32) * 32;
        buf.resize(start + 64 + 16, 0);
        let dir = std::env::temp_dir().join(format!("tbq-gguf-{}.gguf", std::process::id()));
        std::fs::write(&dir, &buf).unwrap();
        let (m, t) = Metadata::open_with_tensors(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(m.n_tensors, 2);
        assert_eq!((t[0].name.as_str(), t[0].bytes), ("blk.0.b", 16));
        assert_eq!(
            (t[1].name.as_str(), t[1].bytes, t[1].dims.clone()),
            ("token_embd.weight", 64, vec![8, 2])
        );
    }

    #[test]
    fn round_trip_of_every_written_type() {
        let mut buf = Vec::new();
        metadata_only(
            &mut buf,
            &[
                ("general.architecture", WValue::Str("llama".into())),
                ("a.u32", WValue::U32(7)),
                ("a.i32", WValue::I32(-3)),
                ("a.u64", WValue::U64(1 << 40)),
                ("a.f32", WValue::F32(0.5)),
                ("a.bool", WValue::Bool(true)),
                ("a.arr", WValue::ArrU32(vec![1, 2, 3])),
                ("a.arrb", WValue::ArrBool(vec![true, false])),
                ("a.strs", WValue::ArrStr(vec!["x".into(), "yz".into()])),
            ],
        )
        .unwrap();
        let m = Metadata::read(&mut &buf[..]).unwrap();
        assert_eq!(m.version, 3);
        assert_eq!(m.architecture(), Some("llama"));
        assert_eq!(m.get_u64("a.u32"), Some(7));
        assert_eq!(m.get("a.i32"), Some(&Value::I(-3)));
        assert_eq!(m.get_u64("a.u64"), Some(1 << 40));
        assert_eq!(m.get("a.f32").and_then(Value::as_f64), Some(0.5));
        assert_eq!(m.get_u64("a.bool"), Some(1));
        assert_eq!(
            m.get("a.arr"),
            Some(&Value::Array(vec![Value::U(1), Value::U(2), Value::U(3)]))
        );
        assert_eq!(
            m.get("a.strs"),
            Some(&Value::Array(vec![
                Value::Str("x".into()),
                Value::Str("yz".into())
            ]))
        );
    }

    #[test]
    fn long_arrays_are_skipped_but_counted() {
        let mut buf = Vec::new();
        let vocab: Vec<String> = (0..70_000).map(|i| format!("t{i}")).collect();
        metadata_only(
            &mut buf,
            &[("tok", WValue::ArrStr(vocab)), ("after", WValue::U32(42))],
        )
        .unwrap();
        let m = Metadata::read(&mut &buf[..]).unwrap();
        assert_eq!(
            m.get("tok"),
            Some(&Value::SkippedArray {
                elem_type: T_STRING,
                len: 70_000
            })
        );
        assert_eq!(m.get_u64("after"), Some(42));
    }

    #[test]
    fn refuses_what_is_not_gguf() {
        let e = Metadata::read(&mut &b"PK\x03\x04aaaaaaaaaaaaaaaaaaaa"[..]).unwrap_err();
        assert!(matches!(e, GgufError::NotGguf { .. }), "{e}");
        let e = Metadata::read(&mut &b"GGUF\x01\0\0\0"[..]).unwrap_err();
        assert!(matches!(e, GgufError::Version(1)), "{e}");
        let mut buf = Vec::new();
        metadata_only(&mut buf, &[("k", WValue::Str("abcdef".into()))]).unwrap();
        buf.truncate(buf.len() - 2);
        let e = Metadata::read(&mut &buf[..]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
