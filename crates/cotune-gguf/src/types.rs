//! The tensor types of ggml (`enum ggml_type` in `ggml.h`, `GGMLQuantizationType` in gguf-py)
//! with their block sizes, as far as a reader needs them to find a tensor's bytes.

use std::fmt;

/// QK_K: the number of values in one block of the K-quants.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($($(#[$doc:meta])* $variant:ident = $id:literal, $name:literal, $block:expr, $size:expr;)*) => {
        /// A tensor's element type, by its number in the file (`ggml_type`).
        ///
        /// Every type llama.cpp defines is listed, so that a reader can find the bytes of any
        /// tensor; [`crate::quant::dequantize`] converts the common ones to `f32`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        #[non_exhaustive]
        pub enum GgmlType {
            $($(#[$doc])* $variant = $id,)*
        }

        impl GgmlType {
            /// Every known type, in the order of their numbers.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// The type numbered `id` in a file, `None` for a number ggml does not define.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $($id => Some(GgmlType::$variant),)*
                    _ => None,
                }
            }

            /// The type's name as llama.cpp writes it (`Q4_K`, `F16`).
            pub fn name(self) -> &'static str {
                match self {
                    $(GgmlType::$variant => $name,)*
                }
            }

            /// The number of values in one block.
            pub fn block_size(self) -> usize {
                match self {
                    $(GgmlType::$variant => $block,)*
                }
            }

            /// The number of bytes of one block.
            pub fn type_size(self) -> usize {
                match self {
                    $(GgmlType::$variant => $size,)*
                }
            }
        }
    };
}

ggml_types! {
    /// 32-bit float.
    F32 = 0, "F32", 1, 4;
    /// IEEE half float.
    F16 = 1, "F16", 1, 2;
    /// Blocks of 32: f16 scale, 32 4-bit values offset by 8.
    Q4_0 = 2, "Q4_0", 32, 2 + 16;
    /// Blocks of 32: f16 scale and minimum, 32 4-bit values.
    Q4_1 = 3, "Q4_1", 32, 2 + 2 + 16;
    /// Blocks of 32: f16 scale, 32 5-bit values offset by 16.
    Q5_0 = 6, "Q5_0", 32, 2 + 4 + 16;
    /// Blocks of 32: f16 scale and minimum, 32 5-bit values.
    Q5_1 = 7, "Q5_1", 32, 2 + 2 + 4 + 16;
    /// Blocks of 32: f16 scale, 32 signed bytes.
    Q8_0 = 8, "Q8_0", 32, 2 + 32;
    /// Blocks of 32: f16 scale and sum, 32 signed bytes (activations only).
    Q8_1 = 9, "Q8_1", 32, 4 + 32;
    /// K-quant, 2 bits.
    Q2_K = 10, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4;
    /// K-quant, 3 bits.
    Q3_K = 11, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12;
    /// K-quant, 4 bits.
    Q4_K = 12, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12;
    /// K-quant, 5 bits.
    Q5_K = 13, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12;
    /// K-quant, 6 bits.
    Q6_K = 14, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16;
    /// K-quant, 8 bits (f32 scale, 256 signed bytes, 16 block sums).
    Q8_K = 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 8;
    /// Importance quant (not dequantised here).
    IQ2_XXS = 16, "IQ2_XXS", QK_K, 2 + QK_K / 4;
    /// Importance quant (not dequantised here).
    IQ2_XS = 17, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32;
    /// Importance quant (not dequantised here).
    IQ3_XXS = 18, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8;
    /// Importance quant (not dequantised here).
    IQ1_S = 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16;
    /// Non-linear 4-bit quant (not dequantised here).
    IQ4_NL = 20, "IQ4_NL", 32, 2 + 16;
    /// Importance quant (not dequantised here).
    IQ3_S = 21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4;
    /// Importance quant (not dequantised here).
    IQ2_S = 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16;
    /// Non-linear 4-bit quant (not dequantised here).
    IQ4_XS = 23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64;
    /// 8-bit integer.
    I8 = 24, "I8", 1, 1;
    /// 16-bit integer.
    I16 = 25, "I16", 1, 2;
    /// 32-bit integer.
    I32 = 26, "I32", 1, 4;
    /// 64-bit integer.
    I64 = 27, "I64", 1, 8;
    /// 64-bit float.
    F64 = 28, "F64", 1, 8;
    /// Importance quant (not dequantised here).
    IQ1_M = 29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    /// bfloat16: the upper half of an f32.
    BF16 = 30, "BF16", 1, 2;
    /// Ternary quant (not dequantised here).
    TQ1_0 = 34, "TQ1_0", QK_K, 2 + 4 * 13;
    /// Ternary quant (not dequantised here).
    TQ2_0 = 35, "TQ2_0", QK_K, 2 + 64;
    /// Microscaling FP4 (not dequantised here).
    MXFP4 = 39, "MXFP4", 32, 1 + 16;
}

impl GgmlType {
    /// The type's number in a file.
    pub fn id(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
