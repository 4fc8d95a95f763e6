//! tbq — TurboQuant-style KV-cache blocks for llama.cpp.
//!
//! A tbq block stores 128 elements of one attention head's K or V vector as a randomized
//! Walsh-Hadamard rotation, one Lloyd-Max code per coordinate and one corrected norm:
//! `tbq4_0` at 4.125 bits per element, `tbq3_0` at 3.125.
//!
//! - [`format`]: the block layout and the table of widths (the format lives there only);
//! - [`codebook`]: Lloyd-Max codebooks, and their derivation;
//! - [`rotation`]: the fixed signs and the fast Walsh-Hadamard transform;
//! - [`packing`]: how codes are laid out for the GPU;
//! - [`reference`]: quantize, dequantize and dot products on the CPU — the definition every
//!   other implementation matches bit for bit;
//! - [`cpu`]: the same operations with SIMD (AVX2) where the machine has it — what the C ABI
//!   runs;
//! - [`ffi`]: the C ABI of `ffi/include/tbq.h`, exported by `libtbq.a`;
//! - [`trellis`]: bitshift trellis codes (the encoder reference for a candidate format);
//! - [`gguf`] and [`plan`]: a GGUF metadata reader and the KV-cache planner (bytes per token,
//!   cache size as llama.cpp allocates it, the largest context for a memory budget).

pub mod codebook;
pub mod cpu;
pub mod error;
pub mod ffi;
pub mod format;
pub mod gguf;
pub mod packing;
pub mod plan;
pub mod reference;
pub mod rotation;
pub mod trellis;

pub use error::Error;
pub use format::{TbqType, TypeSpec, BLOCK_ELEMS, NARROW_BLOCK_ELEMS};

/// The C ABI version `tbq_abi_version()` reports (`TBQ_ABI_VERSION` in `tbq.h`).
pub const ABI_VERSION: u32 = 6;

#[cfg(feature = "cuda")]
pub mod cuda;
