//! Reading and writing the CLI's `.npy` arrays (float16 / float32 / float64, C order). NumPy has
//! no bfloat16 dtype (ml_dtypes stores it as an opaque 2-byte void type), so bf16 arrays have no
//! `.npy` convention to read.

use std::path::Path;

use npyz::WriterBuilder;

/// A float array read from a `.npy` file.
#[derive(Debug)]
pub enum Array {
    F16 {
        shape: Vec<usize>,
        data: Vec<crate::f16>,
    },
    F32 {
        shape: Vec<usize>,
        data: Vec<f32>,
    },
    F64 {
        shape: Vec<usize>,
        data: Vec<f64>,
    },
}

impl Array {
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Array::F16 { .. } => "float16",
            Array::F32 { .. } => "float32",
            Array::F64 { .. } => "float64",
        }
    }
}

/// Reads `path`, accepting only float16/float32/float64 arrays in C order whose data is complete.
pub fn read(path: &Path) -> Result<Array, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if shape_overflows(&bytes) {
        return Err(format!(
            "{shown} is not a valid .npy file: its shape's element count overflows"
        ));
    }
    // Parse the header alone first, so the data section can be measured exactly.
    let mut data_bytes: &[u8] = &bytes;
    let header = npyz::NpyHeader::from_reader(&mut data_bytes)
        .map_err(|e| format!("{shown} is not a valid .npy file: {e}"))?;
    if header.order() == npyz::Order::Fortran {
        return Err(format!(
            "{shown} is stored in Fortran order; save it with np.ascontiguousarray(a)"
        ));
    }
    let shape: Vec<usize> = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("{shown}: dimension {d} is too large")))
        .collect::<Result<_, _>>()?;
    let npyz::DType::Plain(ty) = header.dtype() else {
        return Err(format!(
            "{shown} holds a structured array; expected float16, float32 or float64"
        ));
    };
    // Compare the element count with the bytes present before decoding, so a header that
    // claims a huge shape is an error, not an allocation.
    let item = ty.size_field();
    let need = shape
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| format!("{shown}: shape {shape:?} overflows"))?;
    let have = data_bytes.len() as u64;
    if need > have {
        return Err(format!(
            "{shown} is truncated: shape {shape:?} needs {need} bytes of data, the file has {have}"
        ));
    }
    if need < have {
        return Err(format!(
            "{shown} has {} bytes after its data; it is corrupt",
            have - need
        ));
    }
    let npy = npyz::NpyFile::with_header(header, data_bytes);
    let read_err = |e: std::io::Error| format!("cannot decode {shown}: {e}");
    match (ty.type_char(), item) {
        (npyz::TypeChar::Float, 2) => Ok(Array::F16 {
            data: npy.into_vec().map_err(read_err)?,
            shape,
        }),
        (npyz::TypeChar::Float, 4) => Ok(Array::F32 {
            data: npy.into_vec().map_err(read_err)?,
            shape,
        }),
        (npyz::TypeChar::Float, 8) => Ok(Array::F64 {
            data: npy.into_vec().map_err(read_err)?,
            shape,
        }),
        _ => Err(format!(
            "{shown} has dtype '{ty}'; expected float16, float32 or float64"
        )),
    }
}

/// True when the header's `'shape'` tuple (its non-zero dimensions) multiplies out beyond `u64`. npyz 0.9 computes that
/// product unchecked (a panic in debug builds, a wrapped count otherwise), so such a header
/// must be refused before npyz sees it. Anything this scan cannot read is left to npyz, which
/// reports it as malformed. (Found by the fuzz tests below.)
fn shape_overflows(bytes: &[u8]) -> bool {
    let (start, len): (usize, _) = match bytes.get(6) {
        Some(1) => (
            10,
            bytes
                .get(8..10)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
        ),
        Some(2 | 3) => (
            12,
            bytes
                .get(8..12)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize),
        ),
        _ => return false,
    };
    let Some(header) = len.and_then(|len| bytes.get(start..start.saturating_add(len))) else {
        return false;
    };
    let header = String::from_utf8_lossy(header);
    let Some(tuple) = header
        .split_once("'shape'")
        .and_then(|(_, rest)| rest.split_once('('))
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(tuple, _)| tuple)
    else {
        return false;
    };
    let dims = tuple.split(',').map(str::trim).filter(|d| !d.is_empty());
    let dims: Option<Vec<u64>> = dims.map(|d| d.parse().ok()).collect();
    // npyz also forms partial products (strides) that run past a zero dimension, so the
    // product of the non-zero dimensions is what must fit.
    dims.is_some_and(|dims| {
        let mut nonzero = dims.iter().filter(|&&d| d != 0);
        nonzero.try_fold(1u64, |a, &d| a.checked_mul(d)).is_none()
    })
}

/// Writes a C-order array of `T` (f16, f32 or f64) to `path`.
pub fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[usize],
    data: &[T],
) -> Result<(), String> {
    let shown = path.display();
    let err = |e: std::io::Error| format!("cannot write {shown}: {e}");
    let file = std::fs::File::create(path).map_err(err)?;
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .map_err(err)?;
    writer.extend(data.iter().copied()).map_err(err)?;
    writer.finish().map_err(err)
}

/// The reader fuzzed with a fixed budget (part of the test suite): random bytes, mutated valid
/// files and forged headers must give an array whose length matches its shape, or an error
/// message; never a panic or an allocation the file cannot back.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn valid_file(dir: &Path) -> Vec<u8> {
        let path = dir.join("valid.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        write(&path, &[2, 3, 4], &data).unwrap();
        std::fs::read(path).unwrap()
    }

    fn check(bytes: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("case.npy");
        std::fs::write(&path, bytes).unwrap();
        match read(&path) {
            Ok(Array::F16 { shape, data }) => {
                assert_eq!(data.len(), shape.iter().product::<usize>())
            }
            Ok(Array::F32 { shape, data }) => {
                assert_eq!(data.len(), shape.iter().product::<usize>())
            }
            Ok(Array::F64 { shape, data }) => {
                assert_eq!(data.len(), shape.iter().product::<usize>())
            }
            Err(message) => assert!(message.contains("case.npy"), "{message}"),
        }
    }

    /// A version-1 `.npy` header with the given dict text, padded as NumPy pads it.
    fn with_header(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.to_string();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.bytes());
        b.extend(data);
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            check(&bytes);
        }

        #[test]
        fn mutated_valid_files(edits in prop::collection::vec((0usize..200, any::<u8>()), 1..6), cut in prop::option::of(0usize..220)) {
            let dir = tempfile::tempdir().unwrap();
            let mut b = valid_file(dir.path());
            for (at, byte) in edits {
                let at = at % b.len();
                b[at] = byte;
            }
            if let Some(cut) = cut {
                b.truncate(cut);
            }
            check(&b);
        }

        #[test]
        fn forged_headers(
            descr in prop_oneof![
                prop::sample::select(vec!["<f2", "<f4", "<f8", ">f4", "<i4", "|b1", "<c8"]).prop_map(String::from),
                "[a-z<>|0-9]{0,4}",
            ],
            fortran in any::<bool>(),
            shape in prop::collection::vec(prop_oneof![0u64..5, any::<u64>()], 0..5),
            data in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            let shape = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.join(", ")),
            };
            let dict = format!(
                "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
                if fortran { "True" } else { "False" }
            );
            check(&with_header(&dict, &data));
        }
    }
}
