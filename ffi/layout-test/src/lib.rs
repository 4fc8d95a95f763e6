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
    use tbq::format::{BlockTbq3_0, BlockTbq4_0};
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
        assert_eq!(c::TBQ_BLOCK_ELEMS as usize, tbq::BLOCK_ELEMS);
    }

    #[test]
    fn constants_and_enums_agree() {
        assert_eq!(c::TBQ_ABI_VERSION, tbq::ABI_VERSION);
        // bindgen types the macros as i64: reinterpret the bits, then widen.
        let signs = (c::TBQ_SIGNS_HI as u64 as u128) << 64 | c::TBQ_SIGNS_LO as u64 as u128;
        assert_eq!(signs, tbq::rotation::SIGNS);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ4_0 as i32, TbqType::Tbq4_0 as i32);
        assert_eq!(c::tbq_type_TBQ_TYPE_TBQ3_0 as i32, TbqType::Tbq3_0 as i32);
        assert_eq!(c::tbq_status_TBQ_OK, 0);
        assert_eq!(c::tbq_status_TBQ_ERR_NULL, Error::Null.status());
        assert_eq!(
            c::tbq_status_TBQ_ERR_LENGTH,
            Error::Length { n: 0 }.status()
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
        agree!(tbq_rotate_f32, _, _, _);
        agree!(tbq_unrotate_f32, _, _, _);
        agree!(tbq_vec_dot_rotated, _, _, _, _, _, _);
        agree!(tbq_vec_dot_f32, _, _, _, _, _, _);
        agree!(tbq_validate, _, _, _);
        // And the C declarations resolve to the exported symbols.
        assert_eq!(unsafe { c::tbq_abi_version() }, tbq::ABI_VERSION);
        assert_eq!(unsafe { c::tbq_type_size(1) }, 50);
    }
}
