//! `ffi/include/tbq.h` as bindgen reads it. The tests prove that the header and the tbq crate
//! agree on every struct layout, constant, enum value and function signature.

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]
pub mod c {
    include!(concat!(env!("OUT_DIR"), "/tbq_h.rs"));
}

#[cfg(test)]
mod tests {
    use super::c;
    use std::mem::{align_of, offset_of, size_of};
    use tbq::format::{BlockTbq3_0, BlockTbq4_0, BlockTbqCompact, BlockTbqSub, BlockTbqWide};
    use tbq::{Error, TbqType};

    #[test]
    fn block_layouts_agree() {
        assert_eq!(size_of::<c::tbq4_0_block>(), size_of::<BlockTbq4_0>());
        assert_eq!(size_of::<c::tbq3_0_block>(), size_of::<BlockTbq3_0>());
        assert_eq!(align_of::<c::tbq4_0_block>(), align_of::<BlockTbq4_0>());
        assert_eq!(align_of::<c::tbq3_0_block>(), align_of::<BlockTbq3_0>());
        assert_eq!(offset_of!(c::tbq4_0_block, d), offset_of!(BlockTbq4_0, d));
        assert_eq!(offset_of!(c::tbq4_0_block, qs), offset_of!(BlockTbq4_0, qs));
        assert_eq!(offset_of!(c::tbq3_0_block, d), offset_of!(BlockTbq3_0, d));
        assert_eq!(offset_of!(c::tbq3_0_block, qs), offset_of!(BlockTbq3_0, qs));
        assert_eq!(
            c::TBQ4_0_BLOCK_BYTES as usize,
            TbqType::Tbq4_0.block_bytes()
        );
        assert_eq!(
            c::TBQ3_0_BLOCK_BYTES as usize,
            TbqType::Tbq3_0.block_bytes()
        );
        // the wider and sub-scaled blocks: C struct = Rust struct = the format table
        macro_rules! same {
            ($c:ident, $r:ty, $bytes:ident, $t:expr) => {
                assert_eq!(size_of::<c::$c>(), size_of::<$r>());
                assert_eq!(align_of::<c::$c>(), align_of::<$r>());
                assert_eq!(offset_of!(c::$c, qs), offset_of!($r, qs));
                assert_eq!(c::$bytes as usize, $t.block_bytes());
                assert_eq!(size_of::<$r>(), $t.block_bytes());
            };
        }
        same!(
            tbq5_0_block,
            BlockTbqWide<80>,
            TBQ5_0_BLOCK_BYTES,
            TbqType::Tbq5_0
        );
        same!(
            tbq6_0_block,
            BlockTbqWide<96>,
            TBQ6_0_BLOCK_BYTES,
            TbqType::Tbq6_0
        );
        same!(
            tbq3_1_block,
            BlockTbqSub<48>,
            TBQ3_1_BLOCK_BYTES,
            TbqType::Tbq3_1
        );
        same!(
            tbq4_1_block,
            BlockTbqSub<64>,
            TBQ4_1_BLOCK_BYTES,
            TbqType::Tbq4_1
        );
        same!(
            tbq5_1_block,
            BlockTbqSub<80>,
            TBQ5_1_BLOCK_BYTES,
            TbqType::Tbq5_1
        );
        assert_eq!(
            offset_of!(c::tbq5_1_block, g),
            offset_of!(BlockTbqSub<80>, g)
        );
        same!(
            tbq4_0_64_block,
            BlockTbqWide<32>,
            TBQ4_0_64_BLOCK_BYTES,
            TbqType::Tbq4_0_64
        );
        same!(
            tbq3_0_64_block,
            BlockTbqWide<24>,
            TBQ3_0_64_BLOCK_BYTES,
            TbqType::Tbq3_0_64
        );
        same!(
            tbq5_0_64_block,
            BlockTbqWide<40>,
            TBQ5_0_64_BLOCK_BYTES,
            TbqType::Tbq5_0_64
        );
        same!(
            tbq6_0_64_block,
            BlockTbqWide<48>,
            TBQ6_0_64_BLOCK_BYTES,
            TbqType::Tbq6_0_64
        );
        same!(
            tbq3_1_64_block,
            BlockTbqSub<24>,
            TBQ3_1_64_BLOCK_BYTES,
            TbqType::Tbq3_1_64
        );
        same!(
            tbq4_1_64_block,
            BlockTbqSub<32>,
            TBQ4_1_64_BLOCK_BYTES,
            TbqType::Tbq4_1_64
        );
        same!(
            tbq5_1_64_block,
            BlockTbqSub<40>,
            TBQ5_1_64_BLOCK_BYTES,
            TbqType::Tbq5_1_64
        );
        same!(
            tbq3_1_64c_block,
            BlockTbqCompact<24>,
            TBQ3_1_64C_BLOCK_BYTES,
            TbqType::Tbq3_1_64c
        );
        same!(
            tbq4_1_64c_block,
            BlockTbqCompact<32>,
            TBQ4_1_64C_BLOCK_BYTES,
            TbqType::Tbq4_1_64c
        );
        same!(
            tbq5_1_64c_block,
            BlockTbqCompact<40>,
            TBQ5_1_64C_BLOCK_BYTES,
            TbqType::Tbq5_1_64c
        );
        assert_eq!(c::TBQ_BLOCK_ELEMS as usize, tbq::BLOCK_ELEMS);
        assert_eq!(c::TBQ_NARROW_BLOCK_ELEMS as usize, tbq::NARROW_BLOCK_ELEMS);
    }

    #[test]
    fn constants_and_enums_agree() {
        assert_eq!(c::TBQ_ABI_VERSION, tbq::ABI_VERSION);
        // bindgen types the macros as i64: reinterpret the bits, then widen.
        let signs = (c::TBQ_SIGNS_HI as u64 as u128) << 64 | c::TBQ_SIGNS_LO as u64 as u128;
        assert_eq!(signs, tbq::rotation::SIGNS);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ4_0 as i32, TbqType::Tbq4_0 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ3_0 as i32, TbqType::Tbq3_0 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ5_0 as i32, TbqType::Tbq5_0 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ6_0 as i32, TbqType::Tbq6_0 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ3_1 as i32, TbqType::Tbq3_1 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ4_1 as i32, TbqType::Tbq4_1 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ5_1 as i32, TbqType::Tbq5_1 as i32);
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ4_0_64 as i32,
            TbqType::Tbq4_0_64 as i32
        );
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ3_0_64 as i32,
            TbqType::Tbq3_0_64 as i32
        );
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ5_0_64 as i32,
            TbqType::Tbq5_0_64 as i32
        );
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ6_0_64 as i32,
            TbqType::Tbq6_0_64 as i32
        );
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ3_1_64 as i32,
            TbqType::Tbq3_1_64 as i32
        );
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ4_1_64 as i32,
            TbqType::Tbq4_1_64 as i32
        );
        assert_eq!(
            c::tbq_type_TBQ_TYPE_TBQ5_1_64 as i32,
            TbqType::Tbq5_1_64 as i32
        );
        for (c_value, t) in [
            (c::tbq_type_TBQ_TYPE_TBQ3_1_64C, TbqType::Tbq3_1_64c),
            (c::tbq_type_TBQ_TYPE_TBQ4_1_64C, TbqType::Tbq4_1_64c),
            (c::tbq_type_TBQ_TYPE_TBQ5_1_64C, TbqType::Tbq5_1_64c),
        ] {
            assert_eq!(c_value as i32, t as i32);
        }
        assert_eq!(c::tbq_status_TBQ_OK, 0);
        assert_eq!(c::tbq_status_TBQ_ERR_NULL, Error::Null.status());
        assert_eq!(
            c::tbq_status_TBQ_ERR_LENGTH,
            Error::Length { n: 0, block: 128 }.status()
        );
        assert_eq!(
            c::tbq_status_TBQ_ERR_BUFFER,
            Error::Buffer { need: 0, have: 0 }.status()
        );
        assert_eq!(c::tbq_status_TBQ_ERR_TYPE, Error::Type(0).status());
        assert_eq!(
            c::tbq_status_TBQ_ERR_NONFINITE,
            Error::NonFinite { block: 0 }.status()
        );
    }

    #[test]
    fn cuda_layouts_agree() {
        use tbq::ffi::{TbqCudaTensor, TbqFattnArgs};
        assert_eq!(size_of::<c::tbq_cuda_tensor>(), size_of::<TbqCudaTensor>());
        assert_eq!(
            align_of::<c::tbq_cuda_tensor>(),
            align_of::<TbqCudaTensor>()
        );
        assert_eq!(
            offset_of!(c::tbq_cuda_tensor, data),
            offset_of!(TbqCudaTensor, data)
        );
        assert_eq!(
            offset_of!(c::tbq_cuda_tensor, type_),
            offset_of!(TbqCudaTensor, type_)
        );
        assert_eq!(
            offset_of!(c::tbq_cuda_tensor, ne),
            offset_of!(TbqCudaTensor, ne)
        );
        assert_eq!(
            offset_of!(c::tbq_cuda_tensor, nb),
            offset_of!(TbqCudaTensor, nb)
        );
        assert_eq!(size_of::<c::tbq_fattn_args>(), size_of::<TbqFattnArgs>());
        assert_eq!(align_of::<c::tbq_fattn_args>(), align_of::<TbqFattnArgs>());
        macro_rules! field {
            ($f:ident) => {
                assert_eq!(
                    offset_of!(c::tbq_fattn_args, $f),
                    offset_of!(TbqFattnArgs, $f)
                )
            };
        }
        field!(q);
        field!(k);
        field!(v);
        field!(mask);
        field!(sinks);
        field!(dst);
        field!(exact_k);
        field!(scale);
        field!(max_bias);
        field!(logit_softcap);
        field!(reserved);
        assert_eq!(c::tbq_status_TBQ_ERR_CUDA, -6);
        assert_eq!(c::tbq_status_TBQ_ERR_UNSUPPORTED, -7);
        assert_eq!(c::tbq_status_TBQ_ERR_NO_DEVICE, -8);
        assert_eq!(c::tbq_dtype_TBQ_DTYPE_F32, 100);
        assert_eq!(c::tbq_dtype_TBQ_DTYPE_F16, 101);
        assert_eq!(c::tbq_dtype_TBQ_DTYPE_Q8_0, 102);
        assert_eq!(c::tbq_dtype_TBQ_DTYPE_I32, 103);
        assert_eq!(c::tbq_dtype_TBQ_DTYPE_I64, 104);
        // Without the cuda feature (this test's build) every CUDA entry point declines.
        assert_eq!(unsafe { c::tbq_cuda_available() }, 0);
        let st = unsafe {
            c::tbq_cuda_flash_attn_ext(
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(st, c::tbq_status_TBQ_ERR_UNSUPPORTED);
    }

    /// Each declaration in the header has the type of the Rust export: `same` only compiles
    /// when both function pointers have one type.
    #[test]
    fn signatures_agree() {
        fn same<T>(_: T, _: T) {}
        macro_rules! agree {
            ($name:ident, $($arg:tt),*) => {
                same(
                    c::$name as unsafe extern "C" fn($($arg),*) -> _,
                    tbq::ffi::$name as unsafe extern "C" fn($($arg),*) -> _,
                )
            };
        }
        same(
            c::tbq_abi_version as unsafe extern "C" fn() -> _,
            tbq::ffi::tbq_abi_version,
        );
        agree!(tbq_status_str, _);
        agree!(tbq_type_size, _);
        agree!(tbq_type_name, _);
        agree!(tbq_row_size, _, _, _);
        agree!(tbq_quantize_f32, _, _, _, _, _);
        agree!(tbq_quantize_f16, _, _, _, _, _);
        agree!(tbq_dequantize_f32, _, _, _, _, _);
        agree!(tbq_dequantize_f16, _, _, _, _, _);
        agree!(tbq_type_block_elems, _);
        agree!(tbq_rotate_f32, _, _, _, _);
        agree!(tbq_unrotate_f32, _, _, _, _);
        agree!(tbq_vec_dot_rotated, _, _, _, _, _, _);
        agree!(tbq_vec_dot_f32, _, _, _, _, _, _);
        agree!(tbq_mad_rotated, _, _, _, _, _, _);
        agree!(tbq_validate, _, _, _);
        // CUDA section: scalar-only signatures compare directly...
        same(
            c::tbq_cuda_available as unsafe extern "C" fn() -> _,
            tbq::ffi::tbq_cuda_available,
        );
        same(
            c::tbq_cuda_last_error as unsafe extern "C" fn() -> _,
            tbq::ffi::tbq_cuda_last_error,
        );
        agree!(tbq_cuda_set_sparse_v, _);
        agree!(tbq_cuda_unified_memory, _, _);
        agree!(tbq_cuda_force_unified, _);
        agree!(tbq_cuda_pool_release, _);
        // ...and those taking the structs are spelled out, once with bindgen's struct and once
        // with the crate's (whose layouts `cuda_layouts_agree` proves identical).
        macro_rules! agree_structs {
            ($name:ident, ($($c:ty),*), ($($r:ty),*)) => {{
                let _: unsafe extern "C" fn($($c),*) -> i32 = c::$name;
                let _: unsafe extern "C" fn($($r),*) -> i32 = tbq::ffi::$name;
            }};
        }
        use std::ffi::{c_char, c_void};
        use tbq::ffi::{TbqCudaTensor as T, TbqFattnArgs as A};
        type CT = c::tbq_cuda_tensor;
        type CA = c::tbq_fattn_args;
        agree_structs!(
            tbq_cuda_set_rows,
            (*const CT, *const CT, *const CT, *mut c_void),
            (*const T, *const T, *const T, *mut c_void)
        );
        agree_structs!(
            tbq_cuda_get_rows,
            (*const CT, *const CT, *const CT, *mut c_void),
            (*const T, *const T, *const T, *mut c_void)
        );
        agree_structs!(
            tbq_cuda_fattn_supported,
            (*const CA, *mut *const c_char),
            (*const A, *mut *const c_char)
        );
        agree_structs!(
            tbq_cuda_fattn_scratch_bytes,
            (*const CA, *mut usize),
            (*const A, *mut usize)
        );
        agree_structs!(
            tbq_cuda_flash_attn_ext,
            (*const CA, *mut c_void, usize, *mut c_void),
            (*const A, *mut c_void, usize, *mut c_void)
        );
        // And the C declarations resolve to the exported symbols.
        assert_eq!(unsafe { c::tbq_abi_version() }, tbq::ABI_VERSION);
        assert_eq!(unsafe { c::tbq_type_size(1) }, 50);
    }
}
