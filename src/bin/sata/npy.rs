//! Reading and writing the CLI's `.npy` arrays (float32 / float64, C order).

use std::path::Path;

use npyz::WriterBuilder;

/// A float array read from a `.npy` file.
#[derive(Debug)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    F64 { shape: Vec<usize>, data: Vec<f64> },
}

impl Array {
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Array::F32 { .. } => "float32",
            Array::F64 { .. } => "float64",
        }
    }
}

/// Reads `path`, accepting only float32/float64 arrays in C order whose data is complete.
pub fn read(path: &Path) -> Result<Array, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
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
            "{shown} holds a structured array; expected float32 or float64"
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
        (npyz::TypeChar::Float, 4) => Ok(Array::F32 {
            data: npy.into_vec().map_err(read_err)?,
            shape,
        }),
        (npyz::TypeChar::Float, 8) => Ok(Array::F64 {
            data: npy.into_vec().map_err(read_err)?,
            shape,
        }),
        _ => Err(format!(
            "{shown} has dtype '{ty}'; expected float32 or float64"
        )),
    }
}

/// Writes a C-order array of `T` (f32 or f64) to `path`.
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
