//! Errors of the crate, and their C ABI status codes.

use std::fmt;

/// Why a call was refused. Nothing is written when a call returns an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A required pointer was null (C ABI only).
    Null,
    /// A row length that is not a positive multiple of the type's block (128 or 64 elements).
    Length {
        /// The length given.
        n: i64,
        /// The block it must be a multiple of.
        block: usize,
    },
    /// A rotation width that is not one of the family's (128 or 64).
    BlockWidth {
        /// The width given.
        block: usize,
    },
    /// A buffer smaller than the row needs.
    Buffer {
        /// Bytes (or elements, for float buffers) the row needs.
        need: usize,
        /// What the caller provided.
        have: usize,
    },
    /// A `tbq_type` value that names no type.
    Type(i32),
    /// A block whose norm is NaN or infinite.
    NonFinite {
        /// Index of the first bad block.
        block: usize,
    },
}

impl Error {
    /// The `tbq_status` value of this error (see `ffi/include/tbq.h`).
    pub fn status(&self) -> i32 {
        match self {
            Error::Null => -1,
            Error::Length { .. } | Error::BlockWidth { .. } => -2,
            Error::Buffer { .. } => -3,
            Error::Type(_) => -4,
            Error::NonFinite { .. } => -5,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Null => write!(f, "a required pointer was null"),
            Error::Length { n, block } => write!(
                f,
                "row length {n} is not a positive multiple of {block} elements (this type's block)"
            ),
            Error::BlockWidth { block } => write!(
                f,
                "{block} is not a tbq block width (128, or 64 for the _64 types)"
            ),
            Error::Buffer { need, have } => {
                write!(f, "buffer too short: the row needs {need}, got {have}")
            }
            Error::Type(t) => {
                let names: Vec<String> = crate::TbqType::ALL
                    .iter()
                    .map(|t| format!("{} = {t}", *t as i32))
                    .collect();
                write!(f, "{t} is not a tbq type ({})", names.join(", "))
            }
            Error::NonFinite { block } => write!(f, "block {block} has a non-finite norm"),
        }
    }
}

impl std::error::Error for Error {}
